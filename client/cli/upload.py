"""``pyarchive upload``: every file the arguments name, resumable across any interruption.

Each file goes up over the seed API (``client.PyArchiveClient.upload``) on one of ``jobs``
threads, each thread with its own connection. As soon as the server has created a file's
upload its URL is written to the journal (``client.cli.journal``), so running the same
command again, after Ctrl-C, a SIGKILL, a sleeping laptop or a restarted server, asks the
server where each upload stands and sends only the rest. Network failures are retried with
backoff for as long as it takes (``retries=None``); a connection on which nothing moves for
``stall`` seconds times out and is retried like any other failure. The md5 and sha256 are
computed from the bytes read while they are sent: the server checks the md5 at completion,
and the sha256 is compared with the one the server stored; a mismatch is reported and the
command exits non-zero.

Progress is of acknowledged bytes, per file and overall (rich), or one line per file when the
output is not a terminal.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from client.api import PyArchiveClient
from client.cli.failures import FAILURE, OK, REFUSED, explain
from client.cli.journal import Journal, Source
from client.errors import ApiError


@dataclass
class Result:
    source: Source
    code: int  # an exit code: OK, or why it failed
    message: str
    resumed_at: int | None = None  # the server's offset when an earlier upload was continued
    file_id: str | None = None
    sha256: str | None = None  # of what was sent, once the server's matched it


@dataclass
class Settings:
    server: str
    token: str
    chunk_size: int
    jobs: int
    stall: float


class Display:
    """Per-file and overall progress bars on a terminal, else one line per file."""

    def __init__(self, console: Console, total_bytes: int, files: int) -> None:
        self._console = console
        self._lock = threading.Lock()
        self._live = console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self._live,
            transient=False,
        )
        self._overall = self._progress.add_task(f"{files} files", total=total_bytes)

    def __enter__(self) -> Display:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, source: Source) -> Bar:
        """A file's bar, shown until ``finish``."""
        task = self._progress.add_task(source.remote, total=source.size, visible=self._live)
        return Bar(self, task)

    def moved(self, bar: Bar, sent: int) -> None:
        """``bar``'s file has ``sent`` bytes acknowledged: move it and the overall bar."""
        with self._lock:
            self._progress.advance(self._overall, sent - bar.sent)
            bar.sent = sent
            self._progress.update(bar.task, completed=sent)

    def finish(self, bar: Bar, result: Result) -> None:
        with self._lock:
            self._progress.remove_task(bar.task)
        resumed = f" (resumed at {result.resumed_at} bytes)" if result.resumed_at else ""
        mark = "uploaded" if result.code == OK else "FAILED"
        line = f"{mark} {result.source.remote}: {result.message}{resumed}"
        if self._live:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            self._console.print(line, markup=False, highlight=False, soft_wrap=True)


@dataclass
class Bar:
    """One file's progress bar; calling it with ``(sent, total)`` moves it."""

    display: Display
    task: TaskID
    sent: int = 0

    def __call__(self, sent: int, total: int) -> None:
        self.display.moved(self, sent)


@dataclass
class Uploads:
    settings: Settings
    journal: Journal
    display: Display
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, sources: Sequence[Source]) -> list[Result]:
        """Upload ``sources`` on ``jobs`` daemon threads (so that Ctrl-C ends the command at
        once: what was acknowledged is in the journal). A refusal that would refuse every
        file (a quota, a login) stops the rest."""
        work: queue.Queue[Source] = queue.Queue()
        for source in sources:
            work.put(source)
        threads = [
            threading.Thread(target=self._worker, args=(work,), daemon=True, name=f"upload-{i}")
            for i in range(max(1, min(self.settings.jobs, len(sources))))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # a join with a timeout lets KeyboardInterrupt through
        return self.results

    def _worker(self, work: queue.Queue[Source]) -> None:
        with PyArchiveClient(
            self.settings.server, self.settings.token, timeout=self.settings.stall
        ) as client:
            while not self._stop.is_set():
                try:
                    source = work.get_nowait()
                except queue.Empty:
                    return
                moved = self.display.start(source)
                result = self._one(client, source, moved)
                self.results.append(result)
                self.display.finish(moved, result)
                if result.code not in (OK, FAILURE):
                    self._stop.set()

    def _one(
        self, client: PyArchiveClient, source: Source, moved: Callable[[int, int], None]
    ) -> Result:
        try:
            return self._send(client, source, moved)
        except Exception as error:
            failed = explain(error, self.settings.server)
            return Result(source, failed.exit_code, failed.message)

    def _send(
        self, client: PyArchiveClient, source: Source, moved: Callable[[int, int], None]
    ) -> Result:
        entry = self.journal.find(source)
        resume: str | None = None
        if entry is not None and entry.current and entry.file_id and entry.sha256:
            if self._still_current(client, source, entry.file_id, entry.sha256):
                message = f"{source.size} bytes, unchanged since it was sent (sha256 "
                message += f"{entry.sha256[:16]}...)"
                return Result(source, OK, message, None, entry.file_id, entry.sha256)
        elif entry is not None and entry.current:
            resume = entry.url
        elif entry is not None and entry.url:  # the file changed, or goes elsewhere: afresh
            try:
                client.abort(entry.url)
            except ApiError:
                pass  # already gone (expired, or completed)
            self.journal.forget(source)
        digests: dict[str, str] = {}
        first: list[int] = []

        def progress(sent: int, total: int) -> None:
            if not first:
                first.append(sent)
            moved(sent, total)

        def upload(resume_url: str | None) -> dict[str, object]:
            return client.upload(
                source.local,
                filename=PurePosixPath(source.remote).name,
                remote_path=source.remote,
                chunk_size=self.settings.chunk_size,
                resume_url=resume_url,
                retries=None,
                on_progress=progress,
                on_started=lambda url: self.journal.remember(source, url),
                on_digests=lambda md5, sha256: digests.update(md5=md5, sha256=sha256),
            )

        try:
            done = upload(resume)
        except ApiError as error:
            if resume is None or error.status not in (404, 410):
                raise
            self.journal.forget(source)  # the upload expired on the server: from the start
            resume, first[:] = None, []
            done = upload(None)
        file_id = str(done["file_id"])
        # The completion names the content it stored; a server from before it did not,
        # and is asked for the file instead.
        stored_sha256 = done.get("sha256")
        if not isinstance(stored_sha256, str):
            stored_sha256 = client.file_info(file_id).get("sha256")
        resumed_at = first[0] if resume is not None and first else None
        if stored_sha256 != digests.get("sha256"):
            self.journal.forget(source)
            return Result(
                source, FAILURE,
                f"checksum mismatch: sent sha256 {digests.get('sha256')}, the server stored "
                f"{stored_sha256}",
                resumed_at, file_id,
            )  # fmt: skip
        self.journal.sent(source, file_id, digests["sha256"])
        message = f"{source.size} bytes, sha256 {digests['sha256'][:16]}... verified"
        return Result(source, OK, message, resumed_at, file_id, digests["sha256"])

    @staticmethod
    def _still_current(client: PyArchiveClient, source: Source, file_id: str, sha256: str) -> bool:
        """Whether the server's file is still at this path with this content as its current
        version (it may have been deleted, moved, rolled back or changed since)."""
        try:
            stored = client.file_info(file_id)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return stored.get("sha256") == sha256 and stored.get("path") == source.remote


def exit_code(results: Sequence[Result]) -> int:
    """The command's exit code: 0 when every file made it, else the first refusal's code
    (a quota: 5), else 1.

    >>> from pathlib import Path
    >>> s = Source(Path("/a"), "a", 1, 1)
    >>> exit_code([Result(s, 0, "")]), exit_code([Result(s, 1, ""), Result(s, 5, "")])
    (0, 5)
    """
    codes = [r.code for r in results if r.code != OK]
    refused = [c for c in codes if c != FAILURE]
    return refused[0] if refused else (FAILURE if codes else OK)


__all__ = ["REFUSED", "Display", "Result", "Settings", "Uploads", "exit_code"]
