"""``pyarchive ls``, ``info``, ``versions``, ``rollback``, ``rm``, ``cache`` and ``uncache``:
each a call or two to the server, printed for a person or, with ``--json``, for a script."""

from __future__ import annotations

import json
import sys

import click

from client.cli.app import (
    Context,
    cli,
    emit_json,
    example,
    human_size,
    pass_context,
    resolve,
)
from client.cli.failures import AUTH, explain, fail
from client.cli.watch import NOTABLE, Cursor, Watch, describe
from client.errors import ApiError

# -- files


def state_word(remote_state: str | None, verified: bool | None) -> str:
    """Where a file's current version stands, in one word for ``ls``.

    >>> state_word("local", False), state_word("mirroring", False)
    ('local', 'backing-up')
    >>> state_word("mirrored", False), state_word("mirrored", True)
    ('backing-up', 'backed-up')
    >>> state_word("remote", True), state_word(None, None)
    ('remote', '')
    """
    if remote_state == "mirrored":
        return "backed-up" if verified else "backing-up"
    if remote_state == "mirroring":
        return "backing-up"
    return remote_state or ""


@cli.command("ls", epilog=example("ls"))
@click.argument("prefix", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="As JSON lines, one file each.")
@pass_context
def list_files(context: Context, prefix: str, as_json: bool) -> None:
    """Your files (under PREFIX), a page at a time from the server."""
    with context.client() as client:
        query: dict[str, str | int] = {"prefix": prefix} if prefix else {}
        for found in client.walk_files(page_size=1000, **query):
            for item in found.get("results") or []:
                if as_json:
                    click.echo(json.dumps(item, sort_keys=True))
                else:
                    versions = len(item.get("versions") or [])
                    name = item.get("path") or item["filename"]
                    state = state_word(item.get("remote_state"), item.get("remote_verified"))
                    click.echo(f"{human_size(item['size']):>10}  v{versions:<3} {state:<10} {name}")


@cli.command(epilog=example("info"))
@click.argument("ref", metavar="ID|PATH")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_context
def info(context: Context, ref: str, as_json: bool) -> None:
    """A file: checksums, versions, replicas and its S3 parts."""
    with context.client() as client:
        found = client.file_info(resolve(client, ref))
    if as_json:
        emit_json(found)
        return
    click.echo(f"{found.get('path') or found['filename']}  ({found['id']})")
    click.echo(f"  size     {human_size(found['size'])} ({found['size']} bytes)")
    click.echo(f"  md5      {found['md5']}")
    click.echo(f"  sha256   {found['sha256']}")
    click.echo(f"  version  {found.get('version')} of {len(found.get('versions') or [])}")
    click.echo(f"  S3       {found.get('remote_state', '')}")
    replicas = found.get("replicas") or []
    confirmed = [r for r in replicas if r.get("state") == "confirmed"]
    click.echo(f"  replicas {len(confirmed)} confirmed")
    for part in found.get("parts") or []:
        click.echo(
            f"  part {part['index']:>3}  {human_size(part['size']):>10}  {part['remote_state']}"
        )


@cli.command(epilog=example("versions"))
@click.argument("ref", metavar="ID|PATH")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_context
def versions(context: Context, ref: str, as_json: bool) -> None:
    """A file's versions, newest first."""
    with context.client() as client:
        found = client.file_info(resolve(client, ref))
    listed = found.get("versions") or []
    if as_json:
        emit_json(listed)
        return
    for version in listed:
        mark = "*" if version.get("number") == found.get("version") else " "
        click.echo(
            f"{mark} v{version['number']:<4} {human_size(version['size']):>10}  "
            f"{version.get('created_at', '')}  {version.get('sha256', '')[:16]}"
        )


@cli.command(epilog=example("rollback"))
@click.argument("ref", metavar="ID|PATH")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_context
def rollback(context: Context, ref: str, version: int, as_json: bool) -> None:
    """Make VERSION current again (kept as a new version: nothing is lost)."""
    with context.client() as client:
        found = client.rollback(resolve(client, ref), version)
    if as_json:
        emit_json(found)
        return
    click.echo(f"{found['filename']}: version {version} is current again (v{found.get('version')})")


@cli.command(epilog=example("rm"))
@click.argument("ref", metavar="ID|PATH")
@pass_context
def rm(context: Context, ref: str) -> None:
    """Delete a file and all its versions."""
    with context.client() as client:
        file_id = resolve(client, ref)
        client.delete_file(file_id)
    click.echo(f"Deleted {ref}.")


@cli.command(epilog=example("cache"))
@click.argument("ref", metavar="ID|PATH")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_context
def cache(context: Context, ref: str, as_json: bool) -> None:
    """Bring a remote-only file back onto the storage nodes from S3."""
    with context.client() as client:
        done = client.cache(resolve(client, ref))
    emit_json(done) if as_json else click.echo(done.get("detail", "Restoring."))


@cli.command(epilog=example("uncache"))
@click.argument("ref", metavar="ID|PATH")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_context
def uncache(context: Context, ref: str, as_json: bool) -> None:
    """Release a backed-up file's local copies (it stays in S3)."""
    with context.client() as client:
        done = client.uncache(resolve(client, ref))
    emit_json(done) if as_json else click.echo(done.get("detail", "Released."))


@cli.command(epilog=example("watch"))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option(
    "--all", "everything", is_flag=True, help="Progress, parts and each upload's end too."
)
@pass_context
def watch(context: Context, as_json: bool, everything: bool) -> None:
    """Print what happens to your files as it happens (live; Ctrl-C stops).

    Goes on from the last event it printed, after a reconnect or the next time it runs, so
    nothing is missed while the server keeps its events (7 days by default).
    """
    token = context.settings.token
    if token is None:
        fail("login needed: run `pyarchive login USER`", AUTH)
    stream = Watch(context.server, token, Cursor(context.settings.directory, context.server))
    try:
        for event in stream.events():
            if event.type == "reset":
                click.echo("pyarchive: some events were too old to keep; going on", err=True)
                continue
            if not everything and event.type not in NOTABLE:
                continue
            if as_json:
                click.echo(json.dumps({"id": event.id, "type": event.type, "data": event.data}))
            else:
                click.echo(describe(event))
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
    except ApiError as error:
        raise explain(error, context.server) from error
