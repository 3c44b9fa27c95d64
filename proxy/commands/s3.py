"""``pyarchive-proxy s3 ...``: staff's S3 connections from the command line, through the same
``S3Connections`` as ``/api/s3-connections/``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from proxy.commands.shared import config_of, secret_key, with_database


@click.group("s3")
def s3_group() -> None:
    """S3 connections (the same as /api/s3-connections/). A secret key is never a flag
    (flags show in ``ps``): it comes from $PYARCHIVE_S3_SECRET_KEY, or is asked for."""


def _s3_connections(config: Any, db: Any, reactor: Any, pool: Any) -> Any:
    from proxy.keys import load_connection_box
    from proxy.ops.systemlog import SystemLog
    from proxy.remote.connections import S3Connections

    box = load_connection_box(config)
    return S3Connections(db, reactor, box, reactor, pool, SystemLog(db, reactor))


def _with_s3_connections(ctx: click.Context, work: Any) -> None:
    """Run ``await work(connections)`` on the migrated database, with a small thread pool
    for the requests ``validate`` makes."""
    from twisted.python.threadpool import ThreadPool

    config = config_of(ctx)

    async def run(db: Any, reactor: Any) -> None:
        pool = ThreadPool(minthreads=0, maxthreads=2, name="pyarchive-cli")
        pool.start()
        try:
            await work(_s3_connections(config, db, reactor, pool))
        finally:
            pool.stop()

    with_database(config, run)


def _show_connection(shown: dict[str, Any]) -> None:
    state = "active" if shown["active"] else "inactive"
    checked = {True: "valid", False: "INVALID", None: "not validated"}[shown["validation_ok"]]
    hint = shown["secret_key_hint"]
    secret = "secret UNREADABLE" if shown["secret_unreadable"] else f"secret {hint}"
    click.echo(
        f"{shown['name']}\t{state}\t{shown['endpoint_url'] or 'AWS'}\t{shown['region']}\t"
        f"{shown['bucket']}/{shown['prefix']}\t{shown['access_key']}\t{secret}\t{checked}"
    )


def _s3_connection_options(
    required: bool,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        options = [
            click.option("--endpoint-url", help="S3-compatible endpoint URL; empty: AWS."),
            click.option("--region", required=required, help="The bucket's region."),
            click.option("--bucket", required=required, help="The bucket."),
            click.option("--prefix", help="Key prefix (default pyarchive)."),
            click.option("--access-key", required=required, help="Access key id."),
            click.option("--activate", is_flag=True, help="Make it the active connection."),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@s3_group.command("add")
@click.argument("name")
@_s3_connection_options(required=True)
@click.pass_context
def s3_add(ctx: click.Context, /, name: str, activate: bool, **fields: str | None) -> None:
    """Add connection NAME (the secret key from $PYARCHIVE_S3_SECRET_KEY or a prompt)."""
    data: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    data.update(name=name, secret_key=secret_key(ask=True))

    async def run(connections: Any) -> None:
        shown = await connections.create(data)
        if activate:
            shown = await connections.activate(name)
        _show_connection(shown)

    _with_s3_connections(ctx, run)


@s3_group.command("update")
@click.argument("name")
@_s3_connection_options(required=False)
@click.option("--new-secret", is_flag=True, help="Ask for a new secret key.")
@click.pass_context
def s3_update(
    ctx: click.Context, /, name: str, activate: bool, new_secret: bool, **fields: str | None
) -> None:
    """Change connection NAME; a secret key in $PYARCHIVE_S3_SECRET_KEY replaces the stored one."""
    data: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    secret = secret_key(ask=new_secret)
    if secret:
        data["secret_key"] = secret

    async def run(connections: Any) -> None:
        shown = await connections.update(name, data) if data else await connections.get(name)
        if activate:
            shown = await connections.activate(name)
        _show_connection(shown)

    _with_s3_connections(ctx, run)


@s3_group.command("list")
@click.pass_context
def s3_list(ctx: click.Context) -> None:
    """Show every connection (never a secret key: only its last 4 characters)."""

    async def run(connections: Any) -> None:
        for shown in await connections.list():
            _show_connection(shown)

    _with_s3_connections(ctx, run)


@s3_group.command("activate")
@click.argument("name")
@click.pass_context
def s3_activate(ctx: click.Context, name: str) -> None:
    """Make NAME the one active connection."""

    async def run(connections: Any) -> None:
        _show_connection(await connections.activate(name))

    _with_s3_connections(ctx, run)


@s3_group.command("validate")
@click.argument("name")
@click.pass_context
def s3_validate(ctx: click.Context, name: str) -> None:
    """Try NAME now (HeadBucket, then write and delete a small object); exit 1 if it fails."""
    outcome: list[dict[str, Any]] = []

    async def run(connections: Any) -> None:
        shown = await connections.validate(name)
        outcome.append(shown)
        _show_connection(shown)
        click.echo(shown["validation_detail"])

    _with_s3_connections(ctx, run)
    if not outcome or not outcome[0]["validation_ok"]:
        raise click.ClickException(f"S3 connection {name} does not work")
