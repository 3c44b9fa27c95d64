"""``pyarchive-proxy``: run the proxy, or administer its database.

The top-level group, ``serve``, ``create-admin`` and ``print-config-sample`` are here; the
command groups are in ``proxy.commands`` and are put under ``main`` below.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

import click

from common.config import ConfigError, sample_file
from common.db import DatabaseUrlError
from common.running import begin_logging, keep_files_private, serve_forever
from proxy.commands.nodes import nodes
from proxy.commands.s3 import s3_group
from proxy.commands.secrets import rotate_secret
from proxy.commands.shared import config_of, with_database
from proxy.commands.snapshots import restore, snapshots
from proxy.config import ProxyConfig


@click.group(invoke_without_command=True)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="INI file.")
@click.option("--data-dir", help="Staging area, stored files and secret (default ./var/proxy).")
@click.option("--listen", help="Twisted endpoint string (default tcp:8000:interface=127.0.0.1).")
@click.option("--database", help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB.")
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """The PyArchive proxy. Without a command it serves the HTTP API until stopped."""
    keep_files_private()  # every command: serve, but also those that create the database
    ctx.obj = options
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve the HTTP API (the default command); stops cleanly on SIGINT/SIGTERM."""
    from twisted.internet import reactor

    from proxy.service import build_proxy

    config = config_of(ctx)
    begin_logging()
    try:
        proxy = build_proxy(config, reactor)
    except (ConfigError, DatabaseUrlError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    serve_forever(
        reactor, proxy, "pyarchive-proxy",
        lambda address: f"pyarchive-proxy serving on {address.host}:{address.port}",
    )  # fmt: skip


@main.command("create-admin")
@click.argument("username")
@click.pass_context
def create_admin(ctx: click.Context, username: str) -> None:
    """Create USERNAME as staff, or make it staff with a new password.

    The password comes from $PYARCHIVE_ADMIN_PASSWORD, or is asked for.
    """

    from common.errors import ApiError
    from common.passwords import check_password_strength
    from proxy.catalog.accounts import Accounts, validate_username
    from proxy.keys import load_secret

    config = config_of(ctx)
    password = os.environ.get("PYARCHIVE_ADMIN_PASSWORD") or getpass.getpass(
        f"Password for {username}: "
    )
    try:
        validate_username(username)
        check_password_strength(password, username)
    except ApiError as exc:
        raise click.ClickException(exc.detail) from None

    async def run(db: Any, reactor: Any) -> None:
        accounts = Accounts(
            db=db, clock=reactor, secret=load_secret(config), token_lifetime=config.token_lifetime
        )
        user, created = await accounts.set_staff(username, password)
        print(f"{'created' if created else 'updated'} staff user {user.username}")

    with_database(config, run)


@main.command("print-config-sample")
def print_config_sample() -> None:
    """Print every setting with its default and meaning (the source of etc/proxy.conf-sample)."""
    click.echo(config_sample(), nl=False)


def config_sample() -> str:
    preamble = [
        "# PyArchive proxy settings. Every setting can also be given as an environment",
        "# variable PYARCHIVE_<NAME> (e.g. PYARCHIVE_MAX_CHUNK_SIZE=32MiB) or on the command",
        "# line where a flag exists (--data-dir, --listen, --database); the command line wins,",
        "# then the environment, then this file. Sizes take KiB/MiB/GiB, durations s/m/h/d.",
    ]
    return sample_file(ProxyConfig, "proxy", preamble)


main.add_command(nodes)
main.add_command(restore)
main.add_command(snapshots)
main.add_command(s3_group)
main.add_command(rotate_secret)
