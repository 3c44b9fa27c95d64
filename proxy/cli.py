"""``pyarchive-proxy``: run the proxy, or administer its database."""

from __future__ import annotations

import getpass
import os
from typing import Any

import click
from twisted.internet.defer import ensureDeferred

from common.config import ConfigError, load, sample_file
from common.db import DatabaseUrlError
from common.running import begin_logging, serve_forever
from proxy.config import ProxyConfig
from proxy.nodes import NodeAdmin


def _config(ctx: click.Context) -> ProxyConfig:
    options = ctx.obj
    try:
        return load(
            ProxyConfig,
            "proxy",
            config_file=options.pop("config_file"),
            overrides=options,
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(invoke_without_command=True)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="INI file.")
@click.option("--data-dir", help="Staging area, stored files and secret (default ./var/proxy).")
@click.option("--listen", help="Twisted endpoint string (default tcp:8000:interface=127.0.0.1).")
@click.option("--database", help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB.")
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """The PyArchive proxy. Without a command it serves the HTTP API until stopped."""
    ctx.obj = options
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve the HTTP API (the default command); stops cleanly on SIGINT/SIGTERM."""
    from twisted.internet import reactor

    from proxy.service import build_proxy

    config = _config(ctx)
    begin_logging()
    try:
        proxy = build_proxy(config, reactor)
    except (DatabaseUrlError, OSError) as exc:
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
    from proxy.accounts import Accounts, validate_username
    from proxy.service import load_secret

    config = _config(ctx)
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

    _with_database(config, run)


def _with_database(config: Any, work: Any) -> None:
    """Run ``await work(db, reactor)`` against the migrated database, then exit; an ApiError
    becomes one clear line and exit status 1."""
    from twisted.internet import task

    from common.errors import ApiError
    from proxy.migrations import migrate
    from proxy.service import open_database

    os.makedirs(config.data_dir, exist_ok=True)
    failure: list[str] = []

    async def run(reactor: Any) -> None:
        db = open_database(config)
        try:
            await db.run(migrate)
            await work(db, reactor)
        except ApiError as exc:
            failure.append(exc.detail)
        finally:
            db.close()

    try:
        task.react(lambda reactor: ensureDeferred(run(reactor)))
    except SystemExit as exit_:
        if exit_.code or failure:
            raise click.ClickException(failure[0] if failure else "failed (see above)") from None


@main.group()
def nodes() -> None:
    """Register, list, drain and remove storage nodes (the same as /api/nodes/)."""


@nodes.command("add")
@click.argument("name")
@click.argument("url")
@click.argument("rsync_url")
@click.option("--zone", default="default", help="The node's zone (replicas spread over zones).")
@click.pass_context
def nodes_add(ctx: click.Context, name: str, url: str, rsync_url: str, zone: str) -> None:
    """Register node NAME at URL (http://HOST:PORT) with its RSYNC_URL (rsync://...)."""

    async def run(db: Any, reactor: Any) -> None:
        node = await NodeAdmin(db=db, clock=reactor).add(
            {"name": name, "url": url, "rsync_url": rsync_url, "zone": zone}
        )
        print(f"added node {node['name']} ({node['url']}, zone {node['zone']})")

    _with_database(_config(ctx), run)


@nodes.command("update")
@click.argument("name")
@click.option("--url", help="New http://HOST:PORT of the node's API.")
@click.option("--rsync-url", help="New rsync://pyarchive@HOST:PORT/incoming.")
@click.option("--zone", help="New zone.")
@click.option("--active", is_flag=True, help="Undo a drain: place new replicas here again.")
@click.pass_context
def nodes_update(
    ctx: click.Context, name: str, url: str | None, rsync_url: str | None, zone: str | None,
    active: bool,
) -> None:  # fmt: skip
    """Change NAME's addresses or zone, or make a drained node active again."""
    changes = {"url": url, "rsync_url": rsync_url, "zone": zone}
    data: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
    if active:
        data["state"] = "active"

    async def run(db: Any, reactor: Any) -> None:
        node = await NodeAdmin(db=db, clock=reactor).update(name, data)
        print(f"node {node['name']}: {node['url']}, {node['rsync_url']}, zone {node['zone']}, "
              f"{node['state']}")  # fmt: skip

    _with_database(_config(ctx), run)


@nodes.command("list")
@click.pass_context
def nodes_list(ctx: click.Context) -> None:
    """Show every node with what the monitor last saw."""

    async def run(db: Any, reactor: Any) -> None:
        for node in await NodeAdmin(db=db, clock=reactor).list_nodes():
            free = node["free_bytes"]
            shown = "?" if free is None else f"{free / 2**30:.1f} GiB free"
            print(f"{node['name']}\t{node['status']}\t{node['zone']}\t{shown}\t"
                  f"{node['replicas']} replicas\t{node['url']}")  # fmt: skip

    _with_database(_config(ctx), run)


@nodes.command("drain")
@click.argument("name")
@click.pass_context
def nodes_drain(ctx: click.Context, name: str) -> None:
    """Stop placing new replicas on NAME."""

    async def run(db: Any, reactor: Any) -> None:
        await NodeAdmin(db=db, clock=reactor).update(name, {"state": "draining"})
        print(f"node {name} is draining")

    _with_database(_config(ctx), run)


@nodes.command("remove")
@click.argument("name")
@click.pass_context
def nodes_remove(ctx: click.Context, name: str) -> None:
    """Forget NAME (refused while it holds the only copy of anything)."""

    async def run(db: Any, reactor: Any) -> None:
        await NodeAdmin(db=db, clock=reactor).remove(name)
        print(f"node {name} removed")

    _with_database(_config(ctx), run)


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
