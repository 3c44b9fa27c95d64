"""``pyarchive upload`` and ``download``: the commands over ``client.cli.upload`` and
``client.cli.download``, with their progress bars."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from client.api import PyArchiveClient
from client.cli.app import (
    Context,
    cli,
    example,
    pass_context,
    resolve,
)
from client.cli.download import Fetch, Mismatch, Partial, Wanted
from client.cli.failures import AUTH, NOT_FOUND, OK, REFUSED, CliError, explain, fail
from client.cli.journal import Journal, Source
from client.cli.sync import Options, Refused, Sync
from client.cli.syncplan import TooManyDeletions
from client.cli.upload import Display, Uploads, exit_code
from client.cli.upload import Settings as UploadSettings
from client.cli.walk import PARTIAL, STATE_DIR, Skipped, sources
from client.cli.watch import Cursor, Watch
from client.errors import ApiError
from common.config import parse_size


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


RESTORED = ("local", "mirroring", "mirrored")


def wait_for_restore(context: Context, client: PyArchiveClient, file_id: str) -> dict[str, Any]:
    """Ask for the file back from S3 and wait, with the restore's progress, until it is on a
    storage node again; the file's JSON then."""
    client.cache(file_id)
    console = Console(stderr=True)
    with Progress(
        TextColumn("restoring from S3"), BarColumn(),
        TextColumn("{task.completed}/{task.total} parts"), console=console,
        disable=not console.is_terminal,
    ) as progress:  # fmt: skip
        task = progress.add_task("restore", total=None)
        said = ""
        while True:
            found = client.file_info(file_id)
            state = found.get("remote_state")
            if state in RESTORED:
                return found
            if state == "lost":
                fail("the file is lost: it was in no node and not in the S3 bucket", NOT_FOUND)
            restore = found.get("restore") or {}
            progress.update(
                task, completed=restore.get("parts_restored", 0), total=restore.get("parts_total")
            )
            detail = str(restore.get("detail") or "")
            if detail and detail != said:
                click.echo(f"pyarchive: the restore is being retried: {detail}", err=True)
                said = detail
            time.sleep(1.0)


@cli.command("download", epilog=example("download"))
@click.argument("ref", metavar="ID|PATH")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to (file or folder).")
@click.option("--connections", default=4, type=click.IntRange(1, 16), help="Ranges at once (4).")
@click.option("--restore", is_flag=True, help="A file kept only in S3: restore it, no question.")
@click.option(
    "--stall", default=60.0, type=click.FloatRange(1, 3600),
    help="Seconds without progress before a connection is dropped and retried (60).",
)  # fmt: skip
@pass_context
def download_command(
    context: Context, ref: str, output: Path | None, connections: int, restore: bool, stall: float
) -> None:
    """Download a file: in parallel ranges, resumable, renamed into place only once its
    sha256 matches (what was there before is never replaced by something unverified)."""
    with context.client() as client:
        file_id = resolve(client, ref)
        found = client.file_info(file_id)
        if found.get("remote_state") in ("remote", "restoring"):
            asked = restore or (
                sys.stdin.isatty()
                and click.confirm(f"{ref} is kept only in S3. Restore it now?", default=True)
            )
            if not asked:
                fail(
                    f"{ref} is kept only in S3: run again with --restore to bring it back", REFUSED
                )
            found = wait_for_restore(context, client, file_id)
    name = PurePosixPath(str(found.get("path") or found["filename"])).name
    dest = output if output is not None else Path(name)
    if dest.is_dir():
        dest = dest / name
    wanted = Wanted(file_id, int(found["size"]), str(found["sha256"]))
    token = context.settings.token
    assert token is not None
    console = Console()
    with Progress(
        TextColumn(name), BarColumn(), DownloadColumn(binary_units=True),
        TransferSpeedColumn(), TimeRemainingColumn(), console=console,
        disable=not console.is_terminal,
    ) as progress:  # fmt: skip
        task = progress.add_task(name, total=wanted.size)
        fetch = Fetch(
            context.server, token, wanted, connections, stall,
            lambda count: progress.advance(task, count),
            lambda line: progress.console.print(line, markup=False, highlight=False),
        )  # fmt: skip
        try:
            fetch.into(Partial(dest, wanted))
        except Mismatch as error:
            fail(f"checksum mismatch: {error}; {dest} was left as it was")
        except KeyboardInterrupt:
            fail("interrupted: run the same command again to continue where it stopped")
        except Exception as error:
            raise explain(error, context.server) from error
    click.echo(f"downloaded {dest} ({wanted.size} bytes, sha256 verified)")


def _percent(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        raise click.BadParameter("a percentage like 50%") from None
    if not 0 <= number <= 100:
        raise click.BadParameter("between 0% and 100%")
    return number


class _ChangeFeed:
    """What wakes ``sync --watch``: a change in the folder (watchdog: inotify where the system
    has it, else polling) or an event of the account's (the server's stream), or a minute."""

    def __init__(self, directory: Path, server: str, token: str) -> None:
        self.changed = threading.Event()
        self._observer: BaseObserver
        try:
            self._observer = Observer()
            self._observer.schedule(self._Handler(self.changed), str(directory), recursive=True)
            self._observer.start()
        except OSError:  # no inotify here (or no watches left): look every few seconds
            self._observer = PollingObserver(timeout=2)
            self._observer.schedule(self._Handler(self.changed), str(directory), recursive=True)
            self._observer.start()
        stream = Watch(server, token, _Forgetful())
        threading.Thread(target=self._follow, args=(stream,), daemon=True).start()

    class _Handler(FileSystemEventHandler):
        def __init__(self, changed: threading.Event) -> None:
            self._changed = changed

        def on_any_event(self, event: FileSystemEvent) -> None:
            where = str(event.src_path)
            if f"/{STATE_DIR}" not in where and not where.endswith(PARTIAL):
                self._changed.set()

    def _follow(self, stream: Watch) -> None:
        try:
            for event in stream.events():
                if event.type.startswith(("file.", "upload.complete")):
                    self.changed.set()
        except ApiError:
            return  # the token stopped working: the folder still wakes the sync

    def wait(self, settle: float = 1.0, longest: float = 60.0) -> None:
        self.changed.wait(longest)
        time.sleep(settle)  # a burst of changes makes one pass
        self.changed.clear()

    def stop(self) -> None:
        self._observer.stop()


class _Forgetful(Cursor):
    """The sync lists the server on every pass: its event stream needs no kept cursor."""

    def __init__(self) -> None:
        pass

    def read(self) -> str | None:
        return None

    def keep(self, event_id: str) -> None:
        pass


@cli.command("sync", epilog=example("sync"))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--to", "prefix", default="", help="The folder on the server (default: the top).")
@click.option("--delete", is_flag=True, help="Deletions on either side are done on the other.")
@click.option(
    "--max-delete", default="50%", callback=_percent,
    help="Refuse to delete more than this share of either side in one run (50%).",
)  # fmt: skip
@click.option("--watch", "keep_watching", is_flag=True, help="Keep running; sync on changes.")
@click.option("--dry-run", is_flag=True, help="Print what it would do, and do nothing.")
@click.option("--device", help="This computer's name in conflict copies (its hostname).")
@click.option("--jobs", default=2, type=click.IntRange(1, 32), help="Uploads at once (2).")
@pass_context
def sync_command(
    context: Context, directory: Path, prefix: str, delete: bool, max_delete: float,
    keep_watching: bool, dry_run: bool, device: str | None, jobs: int,
) -> None:  # fmt: skip
    """Two-way sync of DIRECTORY with a folder on the server.

    New and changed files go both ways; a file changed on both sides keeps both (yours is
    renamed NAME.conflict-WHEN-DEVICE.EXT). Deletions propagate only with --delete, and what
    a sync deletes on the server is kept there in .pyarchive-trash/. A missing or empty folder
    that the last sync saw files in (an unmounted disk) is refused.
    """
    server, token = context.server, context.settings.token
    if token is None:
        fail("login needed: run `pyarchive login USER`", AUTH)
    options = Options(
        directory.absolute(), prefix.strip("/") + "/" if prefix.strip("/") else "", delete,
        max_delete, dry_run, jobs=jobs,
    )  # fmt: skip
    if device:
        options.device = device
    console = Console()

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    def display(total: int, files: int) -> Display:
        return Display(console, total, files)

    syncer = Sync(server, token, context.settings.directory, options, say, display)
    feed = _ChangeFeed(options.directory, server, token) if keep_watching else None
    try:
        while True:
            try:
                outcome = syncer.once()
            except (Refused, TooManyDeletions) as refused:
                raise CliError(str(refused), REFUSED) from refused
            except ApiError as error:
                raise explain(error, server) from error
            for failure in outcome.failed:
                say(f"FAILED {failure}")
            if not dry_run:
                say(f"sync: {outcome.done} of {len(outcome.steps)} steps done")
            if feed is None:
                break
            feed.wait()
    except KeyboardInterrupt:
        return
    finally:
        if feed is not None:
            feed.stop()
    if outcome.failed:
        raise CliError(f"{len(outcome.failed)} steps failed; run sync again to retry them")
