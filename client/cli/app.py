"""What every ``pyarchive`` command stands on: the top-level group, the settings and a
client of the configured server (``Context``), and the small helpers their output shares."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from client.api import PyArchiveClient
from client.cli.failures import AUTH, NOT_FOUND, USAGE, explain, fail
from client.cli.settings import Settings, config_dir
from common.config import format_size

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
    return "none" if size is None else format_size(size)


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
    "watch": "pyarchive watch --json",
    "sync": "pyarchive sync ~/Documents --to documents/ --delete --watch",
    "upload": "pyarchive upload ~/Pictures/2024 --to photos/ --jobs 4",
    "download": "pyarchive download photos/2024/party.mov -o ~/party.mov --connections 4",
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
