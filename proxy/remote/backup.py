"""Metadata snapshots in the bucket: what they hold, how they stay consistent, keep-last-N.

The bucket alone must be enough to bring PyArchive back after a fire: the nodes mirror every
blob to ``<prefix>/<sha256>``, and this module writes the metadata (who owns which file, which
versions point at which blob, each blob's part checksums) beside them under
``<prefix>/metadata/<UTC yyyymmddThhmmssZ>-<random>.jsonl.gz``, keeping the newest ``keep``.

**A portable logical dump, not a database file.** A snapshot is gzip'd JSON lines: a header
(``format``, ``format_version``, ``schema_version`` = the newest applied migration,
``created_at``, the source ``dialect``, and every dumped table with its columns), then one
``{"table": name, "row": {column: value}}`` line per row, table by table in foreign-key order,
then a trailer ``{"end": {"rows": {table: count}}}`` that tells a complete snapshot from a
truncated one. The schema holds only integers, floats, text and NULL, which JSON carries
exactly, so a snapshot taken from SQLite restores into PostgreSQL and the other way round, and
no ``pg_dump`` whose version must match the server's is needed on the proxy's host.

**Consistent, without stopping writers.** On SQLite the online backup API
(``sqlite3.Connection.backup``) copies the database into a temporary file in one step; in WAL
mode that is a read transaction, so writers carry on, and the rows are then exported from the
copy at leisure. On PostgreSQL every table is read inside one ``REPEATABLE READ READ ONLY``
transaction on a connection of its own (the snapshot ``pg_dump`` uses), through server-side
cursors. Either way a row written by one transaction is in the snapshot together with every
other row of that transaction, or none of them is. Rows stream to a temporary file, so memory
does not grow with the catalogue; the file's sha256 travels in the object's metadata and is
checked before a restore trusts a byte of it.

**What is in a snapshot** (``DUMPED_TABLES``): users (with their argon2 hashes, so staff can log
in after a restore), blobs, files, versions, blob parts (the part checksums a restore from S3
verifies against), nodes, replicas and pending replica deletions (a faithful record of the old
cluster, though a restore does not bring them back), S3 connections (secrets stay sealed),
pending S3 object deletions (else objects of deleted files would stay in the bucket for good)
and the staff's job intervals. **Left out** (``SKIPPED_TABLES``): uploads (an unfinished
upload's bytes are in one proxy's staging area, which the disaster took; a finished one is only
a receipt), the system log (an operational diary that grows without bound; the restore writes
one entry saying where the new history starts) and ``schema_migrations`` (implied by
``schema_version``). A table that a later migration adds and nobody classified is still dumped,
after the known ones; a test fails until it is classified.

Restoring a snapshot into a new cluster is ``proxy.remote.restore``'s job.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import json
import re
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from common.db import Database, DatabaseUrl
from common.errors import Conflict
from common.s3 import S3Settings, make_client
from proxy.api.views import isotime

FORMAT = "pyarchive-metadata"
FORMAT_VERSION = 1
JOB_NAME = "metadata-backup"

# Dumped, in this order: every foreign key points to a table earlier in the list.
DUMPED_TABLES = (
    "users", "blobs", "files", "versions", "blob_parts", "nodes", "replicas",
    "replica_deletions", "s3_connections", "s3_deletions", "jobs",
)  # fmt: skip
# Brought back into a new cluster (the rest of a snapshot describes the cluster that is gone).
RESTORED_TABLES = (
    "users", "blobs", "files", "versions", "blob_parts", "s3_connections", "s3_deletions", "jobs",
)  # fmt: skip
SKIPPED_TABLES = {
    "uploads": "an unfinished upload's bytes were in the lost staging area",
    "system_log": "an operational diary; the restore starts a new one",
    "schema_migrations": "implied by the header's schema_version",
}

_SNAPSHOT_NAME = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]{8}\.jsonl\.gz")


class BackupError(RuntimeError):
    """A snapshot could not be written; the message says why (never with a secret)."""


class EventLog(Protocol):
    """What this module needs of the system log (``proxy.ops.systemlog.SystemLog``)."""

    async def record(
        self, level: str, event: str, message: str, *, job: str = "", **data: Any
    ) -> None: ...


def snapshot_name(seconds: float, token: str) -> str:
    """The object name of a snapshot taken at ``seconds``: sorts by time, unique by ``token``.

    >>> snapshot_name(1800000000.7, "0a1b2c3d")
    '20270115T080000Z-0a1b2c3d.jsonl.gz'
    """
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(seconds))}-{token}.jsonl.gz"


# --- writing a snapshot --------------------------------------------------------------------


@dataclass(frozen=True)
class Dump:
    """A snapshot written to a local file."""

    path: Path
    size: int
    sha256: str
    schema_version: int
    dialect: str
    rows: dict[str, int]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Source:
    """One consistent view of a database, read table by table."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self._conn = conn
        self.dialect = dialect

    def scalar(self, sql: str) -> Any:
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql)
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else row[0]

    def _column(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql, tuple(params))
            return [str(row[0]) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def tables(self) -> set[str]:
        if self.dialect == "sqlite":
            return set(self._column(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ))  # fmt: skip
        return set(self._column(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        ))  # fmt: skip

    def columns(self, table: str) -> list[str]:
        if self.dialect == "sqlite":
            cursor = self._conn.execute(f"PRAGMA table_info({_quoted(table)})")
            return [str(row[1]) for row in cursor.fetchall()]
        return self._column(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )

    def rows(self, table: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
        """Every row, streamed: SQLite cursors step lazily, PostgreSQL's are server-side."""
        sql = f"SELECT {', '.join(map(_quoted, columns))} FROM {_quoted(table)}"
        if self.dialect == "sqlite":
            cursor = self._conn.execute(sql)
            try:
                yield from cursor
            finally:
                cursor.close()
            return
        with self._conn.cursor(name=f"pyarchive_dump_{table}") as cursor:
            cursor.itersize = 2000
            cursor.execute(sql)
            yield from cursor


@contextmanager
def _consistent_source(url: DatabaseUrl, workdir: Path) -> Iterator[_Source]:
    """A read-only view of the whole database as of one instant (see the module docstring)."""
    if url.dialect == "sqlite":
        copy = workdir / "copy.sqlite3"
        source_uri = Path(url.path).resolve().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(source_uri, uri=True, timeout=30)) as source:
            with closing(sqlite3.connect(copy)) as target:
                source.backup(target)  # pages=-1: one step, one read transaction
        with closing(sqlite3.connect(copy)) as conn:
            yield _Source(conn, "sqlite")
        return
    import psycopg2

    with closing(psycopg2.connect(**pg_connect_kwargs(url))) as conn:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        try:
            yield _Source(conn, "postgresql")
        finally:
            conn.rollback()


def pg_connect_kwargs(url: DatabaseUrl) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"connect_timeout": 10, **(url.dsn or {})}
    if url.schema:
        kwargs["options"] = f"-c search_path={url.schema}"
    return kwargs


class _HashingFile:
    """A binary file that hashes and counts what is written to it (gzip's ``fileobj``)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def write_dump(url: DatabaseUrl, out: Path, *, created_at: float, workdir: Path) -> Dump:
    """Write a consistent snapshot of the database at ``url`` to ``out``. Blocking."""
    with _consistent_source(url, workdir) as source:
        present = source.tables()
        if "schema_migrations" not in present:
            raise BackupError("the database has no schema yet")
        schema_version = int(source.scalar("SELECT MAX(version) FROM schema_migrations") or 0)
        unclassified = sorted(present - set(DUMPED_TABLES) - set(SKIPPED_TABLES))
        names = [t for t in DUMPED_TABLES if t in present] + unclassified
        tables = [(name, source.columns(name)) for name in names]
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "schema_version": schema_version,
            "created_at": isotime(created_at),
            "dialect": source.dialect,
            "tables": [{"name": name, "columns": columns} for name, columns in tables],
        }
        counts: dict[str, int] = {}
        raw = _HashingFile(out)
        try:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed:  # type: ignore[arg-type]
                packed.write(_line(header))
                for name, columns in tables:
                    counts[name] = 0
                    for values in source.rows(name, columns):
                        packed.write(
                            _line({"table": name, "row": dict(zip(columns, values, strict=True))})
                        )
                        counts[name] += 1
                packed.write(_line({"end": {"rows": counts}}))
        finally:
            raw.close()
    return Dump(out, raw.size, raw.hexdigest(), schema_version, source.dialect, counts)


# --- snapshots in the bucket ---------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    name: str
    key: str
    size: int
    last_modified: float

    @property
    def taken_at(self) -> float:
        match = _SNAPSHOT_NAME.fullmatch(self.name)
        assert match is not None
        return float(calendar.timegm(time.strptime(match[1], "%Y%m%dT%H%M%SZ")))

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "size": self.size,
            "taken_at": isotime(self.taken_at),
        }


def list_snapshots_in(client: Any, settings: S3Settings) -> list[Snapshot]:
    """Every snapshot under the connection's metadata prefix, newest first. Blocking."""
    found = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.bucket, Prefix=settings.metadata_prefix
    )
    for page in pages:
        for item in page.get("Contents", []):
            name = item["Key"][len(settings.metadata_prefix) :]
            if _SNAPSHOT_NAME.fullmatch(name):
                modified = item["LastModified"].timestamp()
                found.append(Snapshot(name, item["Key"], int(item["Size"]), modified))
    return sorted(found, key=lambda s: (s.name, s.last_modified), reverse=True)


def prune_snapshots(client: Any, settings: S3Settings, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` (at least one) snapshots; their names. Blocking."""
    doomed = list_snapshots_in(client, settings)[max(1, keep) :]
    for start in range(0, len(doomed), 1000):
        batch = doomed[start : start + 1000]
        answer = client.delete_objects(
            Bucket=settings.bucket,
            Delete={"Objects": [{"Key": s.key} for s in batch], "Quiet": True},
        )
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise BackupError(f"could not delete old snapshot {first.get('Key')}: "
                              f"{first.get('Code')} {first.get('Message')}")  # fmt: skip
    return [s.name for s in doomed]


class MetadataBackup:
    """The ``metadata-backup`` job: a consistent snapshot to the active bucket, keep-last-N.

    ``settings`` answers the active S3 connection (None: nothing to do). Every blocking step
    (the database copy, the export, boto3) runs in ``pool``; temporary files go to
    ``workdir`` (default: beside the SQLite file, else the system's temporary directory).
    """

    def __init__(
        self,
        *,
        db: Database,
        clock: IReactorTime,
        threads: IReactorThreads,
        pool: ThreadPool,
        settings: Callable[[], Awaitable[S3Settings | None]],
        keep: int,
        log: EventLog | None = None,
        workdir: str | None = None,
    ) -> None:
        self._url = db.url
        self._clock = clock
        self._threads = threads
        self._pool = pool
        self._settings = settings
        self._keep = max(1, keep)
        self._log = log
        if workdir is None and self._url.dialect == "sqlite":
            workdir = str(Path(self._url.path).resolve().parent)
        self._workdir = workdir
        self._busy = False

    async def run_once(self) -> dict[str, Any]:
        """Write one snapshot and prune old ones; what was done, as JSON-able data."""
        if self._busy:
            raise Conflict("a metadata backup is running already")
        self._busy = True
        try:
            settings = await self._settings()
            if settings is None:
                return {"skipped": "no active S3 connection"}
            now = self._clock.seconds()
            name = snapshot_name(now, secrets.token_hex(4))
            result = await deferToThreadPool(
                self._threads, self._pool, self._backup, settings, name, now
            )
        finally:
            self._busy = False
        if self._log is not None:
            await self._log.record(
                "info", "metadata-backup",
                f"metadata snapshot {name} written ({result['bytes']} bytes); "
                f"{result['pruned']} old snapshot(s) removed",
                job=JOB_NAME, snapshot=result["snapshot"], bytes=result["bytes"],
            )  # fmt: skip
        return result

    def _backup(self, settings: S3Settings, name: str, now: float) -> dict[str, Any]:
        key = settings.metadata_prefix + name
        client = make_client(settings, max_pool_connections=4)
        with tempfile.TemporaryDirectory(prefix=".metadata-backup-", dir=self._workdir) as tmp:
            dump = write_dump(self._url, Path(tmp) / name, created_at=now, workdir=Path(tmp))
            client.upload_file(
                str(dump.path), settings.bucket, key,
                ExtraArgs={
                    "ContentType": "application/gzip",
                    "ChecksumAlgorithm": "SHA256",
                    "Metadata": {
                        "sha256": dump.sha256,
                        "schema-version": str(dump.schema_version),
                        "dialect": dump.dialect,
                    },
                },
            )  # fmt: skip
        pruned = prune_snapshots(client, settings, self._keep)
        return {
            "snapshot": key,
            "bytes": dump.size,
            "sha256": dump.sha256,
            "schema_version": dump.schema_version,
            "tables": dump.rows,
            "pruned": len(pruned),
        }

    async def list_snapshots(self) -> list[dict[str, Any]]:
        """The snapshots in the active bucket, newest first."""
        settings = await self._settings()
        if settings is None:
            raise Conflict("no active S3 connection")

        def listing() -> list[Snapshot]:
            return list_snapshots_in(make_client(settings, max_pool_connections=1), settings)

        found = await deferToThreadPool(self._threads, self._pool, listing)
        return [s.public() for s in found]
