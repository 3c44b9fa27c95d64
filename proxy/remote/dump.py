"""Writing a consistent metadata snapshot of the database to a local file (the format is
``proxy.remote.snapshots``').

**Consistent, without stopping writers.** On SQLite the online backup API
(``sqlite3.Connection.backup``) copies the database into a temporary file in one step; in WAL
mode that is a read transaction, so writers carry on, and the rows are then exported from the
copy at leisure. On PostgreSQL every table is read inside one ``REPEATABLE READ READ ONLY``
transaction on a connection of its own (the snapshot ``pg_dump`` uses), through server-side
cursors. Either way a row written by one transaction is in the snapshot together with every
other row of that transaction, or none of them is. Rows stream to a temporary file, so memory
does not grow with the catalogue; the file's sha256 travels in the object's metadata and is
checked before a restore trusts a byte of it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.db import DatabaseUrl
from proxy.api.views import isotime
from proxy.remote.snapshots import (
    DUMPED_TABLES,
    FORMAT,
    FORMAT_VERSION,
    SKIPPED_TABLES,
    BackupError,
)


@dataclass(frozen=True)
class Dump:
    """A snapshot written to a local file."""

    path: Path
    size: int
    sha256: str
    schema_version: int
    dialect: str
    rows: dict[str, int]


def quoted(name: str) -> str:
    """An SQL identifier in double quotes, as both SQLite and PostgreSQL read it.

    >>> quoted("users"), quoted('odd"name')
    ('"users"', '"odd""name"')
    """
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
            cursor = self._conn.execute(f"PRAGMA table_info({quoted(table)})")
            return [str(row[1]) for row in cursor.fetchall()]
        return self._column(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )

    def rows(self, table: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
        """Every row, streamed: SQLite cursors step lazily, PostgreSQL's are server-side."""
        sql = f"SELECT {', '.join(map(quoted, columns))} FROM {quoted(table)}"
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
