"""``pyarchive config``, ``signup``, ``login``, ``logout``, ``whoami`` and ``usage``."""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from client.cli.app import (
    Context,
    cli,
    emit_json,
    example,
    human_size,
    pass_context,
)
from client.cli.failures import AUTH, USAGE, CliError, fail
from client.cli.settings import KEYS
from client.errors import ApiError

# -- settings and the account


@cli.group(epilog=example("config"))
def config() -> None:
    """Settings kept between runs (the server's address)."""


@config.command("set", epilog=example("config"))
@click.argument("key", type=click.Choice(KEYS))
@click.argument("value")
@pass_context
def config_set(context: Context, key: str, value: str) -> None:
    """Set KEY (server) to VALUE."""
    if key == "server" and not re.match(r"^https?://[^/\s]+", value):
        fail("server must look like http://HOST:PORT or https://HOST", USAGE)
    context.settings.set(key, value.rstrip("/"))
    click.echo(f"{key} = {value.rstrip('/')}")


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_context
def config_show(context: Context, as_json: bool) -> None:
    """What is set (never the token)."""
    shown = {**context.settings.all(), "logged_in": context.settings.token is not None}
    if as_json:
        emit_json(shown)
        return
    for key, value in shown.items():
        click.echo(f"{key} = {value}")


def read_password(password_stdin: bool, confirm: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("no password on standard input", USAGE)
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=confirm))


@cli.command(epilog=example("signup"))
@click.argument("username")
@click.option("--email", help="An email address for the account.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_context
def signup(context: Context, username: str, email: str | None, password_stdin: bool) -> None:
    """Create an account on the server and log in to it."""
    password = read_password(password_stdin, confirm=True)
    with context.client(login=False) as client:
        client.register(username, password, email)
        context.settings.keep_token(client.login(username, password))
    click.echo(f"Signed up and logged in as {username}.")


@cli.command(epilog=example("login"))
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_context
def login(context: Context, username: str, password_stdin: bool) -> None:
    """Log in; the token is kept (mode 0600) for later commands."""
    password = read_password(password_stdin, confirm=False)
    with context.client(login=False) as client:
        try:
            token = client.login(username, password)
        except ApiError as error:
            if error.status in (400, 401):
                raise CliError(f"login refused: {error.detail}", AUTH) from error
            raise
    context.settings.keep_token(token)
    click.echo(f"Logged in as {username}.")


@cli.command(epilog=example("logout"))
@pass_context
def logout(context: Context) -> None:
    """Forget the kept token."""
    forgot = context.settings.forget_token()
    click.echo("Logged out." if forgot else "Not logged in.")


def account(context: Context) -> dict[str, Any]:
    with context.client() as client:
        return client.me()


@cli.command(epilog=example("whoami"))
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_context
def whoami(context: Context, as_json: bool) -> None:
    """Who the kept token belongs to, on which server."""
    me = account(context)
    if as_json:
        emit_json({**me, "server": context.server})
        return
    staff = " (staff)" if me.get("is_staff") else ""
    click.echo(f"{me['username']}{staff} on {context.server}")


@cli.command(epilog=example("usage"))
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_context
def usage(context: Context, as_json: bool) -> None:
    """Storage used (every version counts) and the quota."""
    me = account(context)
    if as_json:
        emit_json({"used": me["used"], "quota": me["quota"]})
        return
    quota = me.get("quota")
    share = f" ({100 * me['used'] / quota:.0f} %)" if quota else ""
    click.echo(f"used {human_size(me['used'])} of {human_size(quota)}{share}")
