"""``pyarchive-proxy``: run the proxy, or administer its database."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from typing import Any

import click
from twisted.internet.defer import ensureDeferred

from common.config import ConfigError, load, sample_file
from common.db import DatabaseUrlError
from common.running import begin_logging, serve_forever
from proxy.cluster.admin import NodeAdmin
from proxy.config import ProxyConfig


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
    from proxy.catalog.accounts import Accounts, validate_username
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


def _s3_options(command: Any) -> Any:
    """The bucket options of ``restore`` and ``snapshots``; the secret key is never a flag
    (flags show in ``ps``): it comes from $PYARCHIVE_S3_SECRET_KEY or a hidden prompt."""
    options = [
        click.option("--bucket", required=True, help="The bucket the snapshots are in."),
        click.option("--region", required=True, help="The bucket's region (e.g. eu-west-1)."),
        click.option("--endpoint-url", default="", help="S3-compatible endpoint; empty: AWS."),
        click.option("--prefix", default="pyarchive", show_default=True, help="Key prefix."),
        click.option("--access-key", required=True, help="Access key id."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _s3_settings(s3: dict[str, str], name: str = "") -> Any:
    from common.s3 import S3Settings, valid_bucket, valid_prefix

    if not valid_bucket(s3["bucket"]):
        raise click.BadParameter("not a valid bucket name", param_hint="--bucket")
    if not valid_prefix(s3["prefix"]):
        raise click.BadParameter("not a valid key prefix", param_hint="--prefix")
    secret = _secret_key(ask=True)
    if not secret:
        raise click.ClickException("no S3 secret key: set PYARCHIVE_S3_SECRET_KEY or type it")
    return S3Settings(secret_key=secret, name=name, **s3)


@main.command()
@click.option("--from-s3", "from_s3", is_flag=True, help="Restore from the bucket (required).")
@click.option("--snapshot", help="Snapshot name (default: the newest).")
@click.option(
    "--connection-name",
    default="restored",
    show_default=True,
    help="Name of the S3 connection, unless the snapshot has one for this bucket.",
)
@_s3_options
@click.pass_context
def restore(
    ctx: click.Context, /, from_s3: bool, snapshot: str | None, connection_name: str, **s3: str
) -> None:
    """Rebuild an empty database from a metadata snapshot in an S3 bucket.

    For disaster recovery: users, files and versions come back, files whose content is in
    the bucket become 'remote' (cache them back), nodes must be added again. The bucket's
    secret key comes from $PYARCHIVE_S3_SECRET_KEY, or is asked for.
    """
    from proxy.remote.connections import connection_box
    from proxy.remote.restore import RestoreError, restore_from_s3
    from proxy.service import database_url, load_secret

    if not from_s3:
        raise click.UsageError("say where to restore from: --from-s3 (the only source so far)")
    config = _config(ctx)
    settings = _s3_settings(s3, connection_name)
    os.makedirs(config.data_dir, exist_ok=True)
    try:
        done = restore_from_s3(
            database_url(config), settings, snapshot,
            box=connection_box(config.encryption_key or load_secret(config)),
            say=click.echo, workdir=config.data_dir,
        )  # fmt: skip
    except RestoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"restored {done['snapshot']}: {done['users']} users, {done['files']} files, "
        f"{done['blobs_remote']} blobs remote, {done['blobs_lost']} blobs lost"
        + (f" ({done['files_lost']} files have lost content)" if done["files_lost"] else "")
    )
    click.echo("next: start the proxy, add storage nodes, then cache files back as needed")


@main.group()
def snapshots() -> None:
    """Metadata snapshots in an S3 bucket (written by the metadata-backup job)."""


@snapshots.command("list")
@_s3_options
def snapshots_list(**s3: str) -> None:
    """List the snapshots in a bucket, newest first."""
    from botocore.exceptions import BotoCoreError, ClientError

    from common.s3 import make_client
    from proxy.remote.backup import list_snapshots_in

    settings = _s3_settings(s3)
    try:
        found = list_snapshots_in(make_client(settings, max_pool_connections=1), settings)
    except (BotoCoreError, ClientError) as exc:
        raise click.ClickException(f"S3 error: {exc}") from None
    for snapshot in found:
        shown = snapshot.public()
        click.echo(f"{shown['name']}\t{shown['size']}\t{shown['taken_at']}")


@main.group("s3")
def s3_group() -> None:
    """S3 connections (the same as /api/s3-connections/). A secret key is never a flag
    (flags show in ``ps``): it comes from $PYARCHIVE_S3_SECRET_KEY, or is asked for."""


def _s3_connections(config: Any, db: Any, reactor: Any, pool: Any) -> Any:
    from proxy.ops.systemlog import SystemLog
    from proxy.remote.connections import S3Connections, connection_box
    from proxy.service import load_secret

    box = connection_box(config.encryption_key or load_secret(config))
    return S3Connections(db, reactor, box, reactor, pool, SystemLog(db, reactor))


def _with_s3_connections(ctx: click.Context, work: Any) -> None:
    """Run ``await work(connections)`` on the migrated database, with a small thread pool
    for the requests ``validate`` makes."""
    from twisted.python.threadpool import ThreadPool

    config = _config(ctx)

    async def run(db: Any, reactor: Any) -> None:
        pool = ThreadPool(minthreads=0, maxthreads=2, name="pyarchive-cli")
        pool.start()
        try:
            await work(_s3_connections(config, db, reactor, pool))
        finally:
            pool.stop()

    _with_database(config, run)


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


def _secret_key(ask: bool) -> str | None:
    secret = os.environ.get("PYARCHIVE_S3_SECRET_KEY")
    if secret or not ask:
        return secret or None
    return getpass.getpass("S3 secret key: ")


@s3_group.command("add")
@click.argument("name")
@_s3_connection_options(required=True)
@click.pass_context
def s3_add(ctx: click.Context, /, name: str, activate: bool, **fields: str | None) -> None:
    """Add connection NAME (the secret key from $PYARCHIVE_S3_SECRET_KEY or a prompt)."""
    data: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    data.update(name=name, secret_key=_secret_key(ask=True))

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
    secret = _secret_key(ask=new_secret)
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
