"""``pyarchive sync DIR``: a folder and a folder on the server kept the same, both ways.

A pass scans the folder (stat only: a file is hashed when its size or modification time
differs from what the last sync recorded), lists the server's files under the prefix (1,000
a page), lets ``client.cli.syncplan`` decide each path's step, checks the plan against the
safety rules, and carries it out, recording each path in the folder's state as soon as its
step is done: an interrupted sync goes on from there (uploads also resume mid-file, through
the upload journal).

Safety, before anything is changed:

- a folder that is missing, or empty, while the last sync of it saw files (a disk that is not
  mounted) is refused; what the last sync saw is kept both in the folder and in the user's
  configuration directory, so that it is known even when the folder's own record is gone;
- no more than ``--max-delete`` percent of either side is deleted in one run;
- deletions happen only with ``--delete``. A file deleted on the server by a sync is moved to
  ``.pyarchive-trash/<when>/<path>`` there, with all its versions (``pyarchive rm`` deletes for
  good); one deleted here is moved to ``DIR/.pyarchive/trash/<when>/<path>``.

A file changed on both sides keeps both: the local one is renamed
``name.conflict-YYYYMMDD-HHMMSS-<device>.ext`` and sent up as a file of its own, and the
server's comes down under the name.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client.api import PyArchiveClient
from client.cli.download import Fetch, Partial, Wanted
from client.cli.journal import Journal, Source
from client.cli.settings import write_private
from client.cli.syncplan import (
    Do,
    Local,
    Record,
    Remote,
    Step,
    check_deletions,
    conflict_name,
    plan,
)
from client.cli.upload import Display, Uploads
from client.cli.upload import Settings as UploadSettings
from client.cli.walk import STATE_DIR, Skipped, tree
from client.errors import ApiError

TRASH = ".pyarchive-trash"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS records (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL,"
    " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, remote_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class Refused(Exception):
    """The sync would be unsafe (exit code 5); nothing was changed."""


class State:
    """The folder's own record of the last sync: ``DIR/.pyarchive/sync.sqlite``."""

    def __init__(self, directory: Path) -> None:
        (directory / STATE_DIR).mkdir(mode=0o700, exist_ok=True)
        self._db = sqlite3.connect(directory / STATE_DIR / "sync.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def records(self) -> dict[str, Record]:
        rows = self._db.execute("SELECT path, sha256, size, mtime_ns, remote_id FROM records")
        return {row[0]: Record(row[1], row[2], row[3], row[4]) for row in rows}

    def put(self, path: str, record: Record) -> None:
        self._db.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET"
            " sha256 = excluded.sha256, size = excluded.size, mtime_ns = excluded.mtime_ns,"
            " remote_id = excluded.remote_id",
            (path, record.sha256, record.size, record.mtime_ns, record.remote_id),
        )

    def drop(self, path: str) -> None:
        self._db.execute("DELETE FROM records WHERE path = ?", (path,))

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        self._db.close()


class Seen:
    """How many files the last sync of each folder saw, kept in the configuration directory
    (so a folder whose own record is gone, an unmounted disk, is still known)."""

    def __init__(self, config: Path) -> None:
        self.path = config / "synced-folders.json"

    def _all(self) -> dict[str, int]:
        try:
            loaded = json.loads(self.path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): int(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}

    def files(self, directory: Path) -> int:
        return self._all().get(str(directory.absolute()), 0)

    def keep(self, directory: Path, files: int) -> None:
        known = self._all()
        known[str(directory.absolute())] = files
        write_private(self.path, json.dumps(known, indent=2, sort_keys=True).encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while piece := data.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


@dataclass
class Options:
    directory: Path
    prefix: str  # "" or "folder/" on the server
    delete: bool
    max_delete: float
    dry_run: bool
    device: str = field(default_factory=lambda: socket.gethostname().split(".")[0] or "device")
    jobs: int = 2
    chunk_size: int = 8 * 2**20
    stall: float = 60.0


@dataclass
class Outcome:
    steps: list[Step]
    done: int = 0
    failed: list[str] = field(default_factory=list)


class Sync:
    def __init__(
        self,
        server: str,
        token: str,
        config: Path,
        options: Options,
        say: Callable[[str], None],
        display: Callable[[int, int], Display],
    ) -> None:
        self.server = server
        self.token = token
        self.config = config
        self.options = options
        self.say = say
        self.display = display
        self.seen = Seen(config)

    # -- one pass

    def once(self) -> Outcome:
        directory = self.options.directory
        self._check_folder(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = State(directory)
        try:
            records = state.records()
            local = self._scan(directory, records)
            if not local and (records or self.seen.files(directory)):
                raise Refused(self._empty_message(directory, records))
            with PyArchiveClient(self.server, self.token) as client:
                remote = self._listing(client)
                steps = plan(records, local, remote, delete=self.options.delete)
                check_deletions(steps, len(local), len(remote), self.options.max_delete)
                outcome = Outcome(steps)
                if self.options.dry_run:
                    for step in steps:
                        self.say(f"would {step.do.value} {step.path} ({step.why})")
                    return outcome
                self._carry_out(client, state, steps, local, remote, outcome)
            self.seen.keep(directory, len(state.records()))  # what both sides now agree on
            return outcome
        finally:
            state.close()

    def _check_folder(self, directory: Path) -> None:
        seen = self.seen.files(directory)
        if not directory.exists() and seen:
            raise Refused(
                f"{directory} is missing, but the last sync saw {seen} files there (a disk "
                "that is not mounted?): nothing was changed"
            )
        if directory.exists() and not directory.is_dir():
            raise Refused(f"{directory} is not a folder")

    def _empty_message(self, directory: Path, records: dict[str, Record]) -> str:
        seen = max(len(records), self.seen.files(directory))
        return (
            f"{directory} is empty, but the last sync saw {seen} files there (a disk that is "
            "not mounted?): nothing was changed"
        )

    def _scan(self, directory: Path, records: dict[str, Record]) -> dict[str, Local]:
        """The folder now; hashing only what changed since the last sync by size or time."""
        found: dict[str, Local] = {}
        for item in tree(directory):
            if isinstance(item, Skipped):
                self.say(f"skipped {item.local}: {item.why}")
                continue
            record = records.get(item.remote)
            same = record is not None and (record.size, record.mtime_ns) == (
                item.size, item.mtime_ns,
            )  # fmt: skip
            digest = record.sha256 if same and record is not None else sha256_file(item.local)
            found[item.remote] = Local(item.size, item.mtime_ns, digest)
        return found

    def _listing(self, client: PyArchiveClient) -> dict[str, Remote]:
        prefix = self.options.prefix
        found: dict[str, Remote] = {}
        query: dict[str, str | int] = {"page_size": 1000}
        if prefix:
            query["prefix"] = prefix
        # By position: files the user adds or deletes meanwhile shift no page.
        for answer in client.walk_files(**query):
            for item in answer.get("results") or []:
                path = str(item["path"])[len(prefix) :]
                if path.startswith(TRASH + "/") or not path:
                    continue
                found[path] = Remote(str(item["id"]), int(item["size"]), str(item["sha256"]))
        return found

    # -- carrying it out

    def _carry_out(
        self,
        client: PyArchiveClient,
        state: State,
        steps: list[Step],
        local: dict[str, Local],
        remote: dict[str, Remote],
        outcome: Outcome,
    ) -> None:
        directory = self.options.directory
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        uploads: list[tuple[str, Source]] = []
        for step in steps:
            path = step.path
            try:
                if step.do is Do.UPLOAD:
                    uploads.append((path, self._source(path)))
                elif step.do is Do.DOWNLOAD:
                    self._download(state, path, remote[path])
                elif step.do is Do.CONFLICT:
                    kept = conflict_name(path, stamp, self.options.device)
                    os.replace(directory / path, directory / kept)
                    self.say(f"conflict {path}: yours kept as {kept}")
                    self._download(state, path, remote[path])
                    uploads.append((kept, self._source(kept)))
                elif step.do is Do.DELETE_REMOTE:
                    trash = f"{self.options.prefix}{TRASH}/{stamp}/{path}"
                    client.move(remote[path].file_id, trash)
                    state.drop(path)
                    self.say(f"deleted {path} on the server (kept in {trash})")
                elif step.do is Do.DELETE_LOCAL:
                    trash_dir = directory / STATE_DIR / "trash" / stamp
                    (trash_dir / path).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(directory / path, trash_dir / path)
                    state.drop(path)
                    self.say(f"deleted {path} here (kept in {trash_dir / path})")
                elif step.do is Do.RECORD:
                    here, there = local[path], remote[path]
                    state.put(path, Record(here.sha256, here.size, here.mtime_ns, there.file_id))
                elif step.do is Do.FORGET:
                    state.drop(path)
                outcome.done += step.do is not Do.UPLOAD
            except (ApiError, OSError) as error:
                outcome.failed.append(f"{step.do.value} {path}: {error}")
        if uploads:
            self._upload(state, uploads, outcome)

    def _source(self, path: str) -> Source:
        local = self.options.directory / path
        status = local.stat()
        return Source(local.absolute(), self.options.prefix + path, status.st_size,
                      status.st_mtime_ns)  # fmt: skip

    def _upload(self, state: State, uploads: list[tuple[str, Source]], outcome: Outcome) -> None:
        journal = Journal(self.config / "uploads.sqlite")
        settings = UploadSettings(
            self.server, self.token, self.options.chunk_size, self.options.jobs,
            self.options.stall,
        )  # fmt: skip
        sources = [source for _, source in uploads]
        try:
            with self.display(sum(s.size for s in sources), len(sources)) as display:
                results = Uploads(settings, journal, display).run(sources)
        finally:
            journal.close()
        by_remote = {source.remote: path for path, source in uploads}
        for result in results:
            path = by_remote[result.source.remote]
            if result.file_id is None or result.sha256 is None:
                outcome.failed.append(f"upload {path}: {result.message}")
                continue
            source = result.source
            state.put(path, Record(result.sha256, source.size, source.mtime_ns, result.file_id))
            outcome.done += 1

    def _download(self, state: State, path: str, remote: Remote) -> None:
        dest = self.options.directory / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        wanted = Wanted(remote.file_id, remote.size, remote.sha256)
        Fetch(self.server, self.token, wanted, 1, self.options.stall, lambda count: None).into(
            Partial(dest, wanted)
        )
        status = dest.stat()
        state.put(path, Record(remote.sha256, status.st_size, status.st_mtime_ns, remote.file_id))
        self.say(f"downloaded {path}")
