"""The ``pyarchive`` commands: settings and the account, then the files.

Each command is a thin layer over ``client.PyArchiveClient``: it reads what it needs from the
settings (``client.cli.settings``), calls the server, and prints either a few lines for a
person or, with ``--json``, the server's JSON for a script. Every failure ends the same way
(``client.cli.failures``): one line on stderr and an exit code a script can test.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from client.api import PyArchiveClient
from client.cli.failures import AUTH, NOT_FOUND, OK, USAGE, CliError, explain, fail
from client.cli.journal import Journal, Source
from client.cli.settings import KEYS, Settings, config_dir
from client.cli.upload import Display, Uploads, exit_code
from client.cli.upload import Settings as UploadSettings
from client.cli.walk import Skipped, sources
from client.errors import ApiError
from common.config import parse_size

F = TypeVar("F", bound=Callable[..., Any])
_FILE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Context:
    settings: Settings
    verbose: bool

    @property
    def server(self) -> str:
        server = self.settings.get("server")
        if not server:
            fail("no server set: run `pyarchive config set server http://HOST:PORT`", USAGE)
        return server

    @contextmanager
    def client(self, *, login: bool = True) -> Iterator[PyArchiveClient]:
        """A client of the configured server (with the kept token unless ``login`` is
        False); any failure inside becomes one line and its exit code."""
        server = self.server
        token = self.settings.token
        if login and token is None:
            fail("login needed: run `pyarchive login USER`", AUTH)
        try:
            with PyArchiveClient(server, token if login else None) as client:
                yield client
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except Exception as error:
            if self.verbose:
                import traceback

                traceback.print_exc()
            raise explain(error, server) from error


def pass_context(handler: F) -> F:
    return click.pass_obj(handler)  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def human_size(size: int | None) -> str:
    """Bytes as people read them.

    >>> human_size(0), human_size(1536), human_size(5 * 2**30), human_size(None)
    ('0 B', '1.5 KiB', '5.0 GiB', 'none')
    """
    if size is None:
        return "none"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def resolve(client: PyArchiveClient, ref: str) -> str:
    """A file's id from an id or a path."""
    if _FILE_ID.fullmatch(ref):
        return ref
    found = client.list_files(path=ref).get("results") or []
    if not found:
        fail(f"no file at {ref}", NOT_FOUND)
    return str(found[0]["id"])


EXAMPLES = {
    "config": "pyarchive config set server http://127.0.0.1:8000",
    "signup": "pyarchive signup alice",
    "login": 'pyarchive login alice   (or: echo "$PASS" | pyarchive login alice --password-stdin)',
    "logout": "pyarchive logout",
    "whoami": "pyarchive whoami --json",
    "ls": "pyarchive ls photos/2024/ --json",
    "info": "pyarchive info photos/2024/beach.jpg",
    "rm": "pyarchive rm photos/2024/beach.jpg",
    "versions": "pyarchive versions notes.txt",
    "rollback": "pyarchive rollback notes.txt 2",
    "cache": "pyarchive cache old-movie.mkv",
    "uncache": "pyarchive uncache old-movie.mkv",
    "usage": "pyarchive usage",
    "upload": "pyarchive upload ~/Pictures/2024 --to photos/ --jobs 4",
}


def example(name: str) -> str:
    return f"\b\nExample:\n  {EXAMPLES[name]}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config-dir",
    "config_path",
    type=click.Path(file_okay=False),
    envvar="PYARCHIVE_CONFIG_DIR",
    help="Where the server address and token are kept (default: $XDG_CONFIG_HOME/pyarchive).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the details of a failure.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """PyArchive from the command line: your account, your files, resumable transfers.

    \b
    Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 authentication,
    5 conflict or refused (quota, safety).
    """
    ctx.obj = Context(Settings(config_dir(config_path)), verbose)


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


# -- files


@cli.command("ls", epilog=example("ls"))
@click.argument("prefix", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="As JSON lines, one file each.")
@pass_context
def list_files(context: Context, prefix: str, as_json: bool) -> None:
    """Your files (under PREFIX), a page at a time from the server."""
    with context.client() as client:
        page = 1
        while True:
            query: dict[str, str | int] = {"prefix": prefix} if prefix else {}
            found = client.list_files(page, **query)
            for item in found.get("results") or []:
                if as_json:
                    click.echo(json.dumps(item, sort_keys=True))
                else:
                    versions = len(item.get("versions") or [])
                    name = item.get("path") or item["filename"]
                    state = item.get("state") or item.get("remote_state") or ""
                    click.echo(f"{human_size(item['size']):>10}  v{versions:<3} {state:<10} {name}")
            if not found.get("next"):
                return
            page += 1


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


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        size = parse_size(value)
    except ValueError:
        raise click.BadParameter("a size like 8M, 64MiB or 1048576") from None
    if not 64 * 1024 <= size <= 2**30:
        raise click.BadParameter("between 64KiB and 1GiB")
    return size


@cli.command("upload", epilog=example("upload"))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--to", "prefix", default="", help="Put them under this folder on the server.")
@click.option("--chunk-size", default="8M", callback=_size, help="Bytes per request (8M).")
@click.option("--jobs", default=2, type=click.IntRange(1, 32), help="Files at once (2).")
@click.option(
    "--stall", default=60.0, type=click.FloatRange(1, 3600),
    help="Seconds without progress before a connection is dropped and retried (60).",
)  # fmt: skip
@pass_context
def upload_command(
    context: Context, paths: tuple[Path, ...], prefix: str, chunk_size: int, jobs: int,
    stall: float,
) -> None:  # fmt: skip
    """Upload files and folders (recursively; .pyarchiveignore holds gitignore patterns).

    Interrupted in any way? Run the same command again: each file continues from what the
    server acknowledged. A file changed since is sent afresh.
    """
    server, token = context.server, context.settings.token
    if token is None:
        fail("login needed: run `pyarchive login USER`", AUTH)
    try:
        found = list(sources(paths, prefix))
    except FileNotFoundError as error:
        fail(f"{error.filename}: no such file or directory", NOT_FOUND)
    files = [item for item in found if isinstance(item, Source)]
    for item in found:
        if isinstance(item, Skipped):
            click.echo(f"pyarchive: skipped {item.local}: {item.why}", err=True)
    journal = Journal(context.settings.directory / "uploads.sqlite")
    settings = UploadSettings(server, token, chunk_size, jobs, stall)
    try:
        with Display(Console(), sum(f.size for f in files), len(files)) as display:
            results = Uploads(settings, journal, display).run(files)
    except KeyboardInterrupt:
        fail("interrupted: run the same command again to continue where it stopped")
    finally:
        journal.close()
    failed = [r for r in results if r.code != OK]
    if failed:
        raise CliError(f"{len(failed)} of {len(files)} files failed", exit_code(results))


def main() -> None:
    cli(prog_name="pyarchive")
