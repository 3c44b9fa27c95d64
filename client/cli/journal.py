"""The upload journal: which server upload each local file was going into, so that running
the same command again continues every file from the server's acknowledged offset.

A row is keyed by the file's absolute path and remembers its size, modification time (ns)
and destination: a file changed since (or sent somewhere else) no longer matches, and its old
upload is abandoned and started afresh. Once a file is up and verified, its row keeps the
server's file id and the sha256 instead of an upload URL, so that the same command again
passes over it (after asking the server that this content is still the file's current
version there) instead of sending it as a new version. One small SQLite file in the
configuration directory, shared by the upload threads (a lock serialises them; each write
commits at once, so a SIGKILL loses nothing that was recorded).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS uploads (local TEXT PRIMARY KEY, size INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL, remote TEXT NOT NULL, url TEXT NOT NULL)"
)
# Added since the first journals: a file sent and verified (then url is '').
SENT_COLUMNS = (("file_id", "TEXT"), ("sha256", "TEXT"))


@dataclass(frozen=True)
class Source:
    """A local file to upload and where it goes."""

    local: Path  # absolute
    remote: str  # its path among the user's files
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Entry:
    url: str  # the upload it was going into; '' once sent
    current: bool  # the same file (size, mtime) going to the same place
    file_id: str | None = None  # once sent: the server's file and the sha256 it verified
    sha256: str | None = None


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(uploads)")}
        for name, kind in SENT_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE uploads ADD COLUMN {name} {kind}")
        self._lock = threading.Lock()

    def find(self, source: Source) -> Entry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime_ns, remote, url, file_id, sha256 FROM uploads WHERE local = ?",
                (str(source.local),),
            ).fetchone()
        if row is None:
            return None
        same = (row[0], row[1], row[2]) == (source.size, source.mtime_ns, source.remote)
        return Entry(str(row[3]), same, row[4], row[5])

    def remember(self, source: Source, url: str) -> None:
        """The file is going into the upload at ``url``."""
        self._put(source, url, None, None)

    def sent(self, source: Source, file_id: str, sha256: str) -> None:
        """The file is up, as ``file_id``, its sha256 verified."""
        self._put(source, "", file_id, sha256)

    def _put(self, source: Source, url: str, file_id: str | None, sha256: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO uploads (local, size, mtime_ns, remote, url, file_id, sha256)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (local) DO UPDATE SET"
                " size = excluded.size, mtime_ns = excluded.mtime_ns, remote = excluded.remote,"
                " url = excluded.url, file_id = excluded.file_id, sha256 = excluded.sha256",
                (str(source.local), source.size, source.mtime_ns, source.remote, url, file_id,
                 sha256),
            )  # fmt: skip

    def forget(self, source: Source) -> None:
        with self._lock:
            self._db.execute("DELETE FROM uploads WHERE local = ?", (str(source.local),))

    def close(self) -> None:
        self._db.close()
