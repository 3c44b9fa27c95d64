"""The upload journal: which server upload each local file was going into, so that running
the same command again continues every file from the server's acknowledged offset.

A row is keyed by the file's absolute path and remembers its size, modification time (ns)
and destination: a file changed since (or sent somewhere else) no longer matches, and its old
upload is abandoned and started afresh. One small SQLite file in the configuration directory,
shared by the upload threads (a lock serialises them; each write commits at once, so a
SIGKILL loses nothing that was recorded).
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


@dataclass(frozen=True)
class Source:
    """A local file to upload and where it goes."""

    local: Path  # absolute
    remote: str  # its path among the user's files
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Entry:
    url: str
    current: bool  # the same file (size, mtime) going to the same place


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def find(self, source: Source) -> Entry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime_ns, remote, url FROM uploads WHERE local = ?",
                (str(source.local),),
            ).fetchone()
        if row is None:
            return None
        same = (row[0], row[1], row[2]) == (source.size, source.mtime_ns, source.remote)
        return Entry(str(row[3]), same)

    def remember(self, source: Source, url: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO uploads (local, size, mtime_ns, remote, url) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (local) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, remote = excluded.remote, url = excluded.url",
                (str(source.local), source.size, source.mtime_ns, source.remote, url),
            )

    def forget(self, source: Source) -> None:
        with self._lock:
            self._db.execute("DELETE FROM uploads WHERE local = ?", (str(source.local),))

    def close(self) -> None:
        self._db.close()
