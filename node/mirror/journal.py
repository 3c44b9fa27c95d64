"""The mirror's records on disk: one SQLite database, ``DATA_DIR/mirror/journal.sqlite3``.

One row per record (``records``: its kind, its blob key, its JSON), and a few named values
(``meta``): ``state``, an id made when the journal is created (a new data directory is a new
id, which is how the proxy learns that a node lost its want-list), and ``cursor``, the newest
change of the proxy's want-list that is recorded here.

Why SQLite in WAL mode with ``synchronous=FULL``: a record used to be one JSON file written
with a temporary file, two fsyncs and a rename, so 100,000 blobs were 100,000 files and a
sync of 2,000 new blobs was 4,000 fsyncs. Now a sync's new records and its cursor are one
transaction and one fsync of the write-ahead log; a part's progress is one small
transaction. ``FULL`` rather than ``NORMAL`` because the cursor is acknowledged to the proxy
as soon as the transaction commits, and an acknowledged cursor must survive a power cut
(DESIGN: acknowledged means durable); in WAL mode ``FULL`` costs one fsync per commit, and a
commit is per sync or per part, never per byte. SQLite checkpoints the log on its own.

A node upgraded from the JSON layout (``upload/<key>.json``, ``restore/<key>.json``) imports
those files once, in one transaction, then removes them; a multipart upload under way keeps
its id and its uploaded parts.

Blocking: every method runs on the mirror's thread pool (``node.mirror.ledger.Threads``) or
before the reactor runs. One connection, shared by the pool's threads under a lock.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from common.signing import valid_replica_key
from node.mirror.state import MIRROR, RESTORE, MirrorRecord, Record, RestoreRecord

FILENAME = "journal.sqlite3"
Write = tuple[str, str, bytes | None]  # kind, key, the record's JSON (None: remove it)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS records ("
    " kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, key))",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class Journal:
    """The records under ``root`` (``DATA_DIR/mirror/``), in one SQLite file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / FILENAME
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    # -- life

    def create(self) -> None:
        """Open (or make) the database; import a JSON layout left by an older version."""
        with self._lock:
            if self._db is not None:
                return
            self.root.mkdir(mode=0o750, parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            with _transaction(db):
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('state', ?)",
                    (uuid.uuid4().hex,),
                )
                imported = _import_json(db, self.root)
            self._db = db
        for directory in imported:
            shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- reading

    def load(self) -> tuple[list[MirrorRecord], list[RestoreRecord]]:
        """Every record kept; a record that cannot be read is skipped (the proxy's next full
        sync asks for that blob again)."""
        mirrors: list[MirrorRecord] = []
        restores: list[RestoreRecord] = []
        with self._lock:
            rows = self._conn().execute("SELECT kind, key, data FROM records ORDER BY kind, key")
            for kind, key, data in rows:
                record = _decode(kind, key, data)
                if isinstance(record, MirrorRecord):
                    mirrors.append(record)
                elif isinstance(record, RestoreRecord):
                    restores.append(record)
        return mirrors, restores

    def identity(self) -> tuple[str, int | None]:
        """This journal's state id and the proxy's cursor recorded with it (None: none yet)."""
        with self._lock:
            rows = dict(self._conn().execute("SELECT name, value FROM meta").fetchall())
        cursor = rows.get("cursor")
        return str(rows["state"]), None if cursor is None else int(cursor)

    # -- writing

    def write(self, kind: str, key: str, content: bytes) -> None:
        """Replace one record (its JSON, made on the reactor thread)."""
        self.apply([(kind, key, content)])

    def remove(self, kind: str, key: str) -> None:
        self.apply([(kind, key, None)])

    def apply(self, writes: Iterable[Write], cursor: int | None = None) -> None:
        """Replace or remove many records, and record ``cursor`` if given, in one transaction."""
        with self._lock:
            db = self._conn()
            with _transaction(db):
                for kind, key, content in writes:
                    _check(kind, key)
                    if content is None:
                        db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO records (kind, key, data) VALUES (?, ?, ?)",
                            (kind, key, content.decode()),
                        )
                if cursor is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO meta (name, value) VALUES ('cursor', ?)",
                        (str(cursor),),
                    )

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the mirror journal is not open (call create first)")
        return self._db


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on an error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._db.execute("COMMIT" if error is None else "ROLLBACK")


def _check(kind: str, key: str) -> None:
    if kind not in (MIRROR, RESTORE) or not valid_replica_key(key):
        raise ValueError(f"not a mirror record: {kind!r} {key!r}")


def _decode(kind: str, key: str, data: str) -> Record | None:
    try:
        value = json.loads(data)
        record: Record = (
            MirrorRecord.from_json(value) if kind == MIRROR else RestoreRecord.from_json(value)
        )
    except (ValueError, KeyError, TypeError):
        return None
    return record if record.blob.key == key and value.get("kind") == kind else None


def _import_json(db: sqlite3.Connection, root: Path) -> list[Path]:
    """Copy the records of the JSON layout into ``db`` (inside the caller's transaction); the
    directories to remove once it committed. A file that cannot be read is left out, as the
    JSON layout's own loader did."""
    found: list[Path] = []
    for kind, name in ((MIRROR, "upload"), (RESTORE, "restore")):
        directory = root / name
        if not directory.is_dir():
            continue
        found.append(directory)
        for path in sorted(directory.glob("*.json")):
            key = path.name[: -len(".json")]
            if not valid_replica_key(key):
                continue
            data = path.read_text(errors="replace")
            if _decode(kind, key, data) is not None:
                db.execute(
                    "INSERT OR REPLACE INTO records (kind, key, data) VALUES (?, ?, ?)",
                    (kind, key, data),
                )
    return found
