"""The metadata database: SQLite or PostgreSQL behind ``twisted.enterprise.adbapi``.

SQL is written once, with ``?`` placeholders, in small ``def _name(txn, ...)`` functions that
``Database.run`` executes in one transaction on a pool thread. The ``Txn`` wrapper hides the
two drivers' differences: placeholders, row locks, and how a transaction starts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

P = ParamSpec("P")
R = TypeVar("R")
Row = tuple[Any, ...]


class DatabaseUrlError(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseUrl:
    """Where the metadata lives: ``sqlite:///path`` or ``postgresql://user@host:port/db``."""

    dialect: str  # "sqlite" or "postgresql"
    path: str = ""  # SQLite file
    dsn: dict[str, str] | None = None  # psycopg2 connect() keywords
    schema: str = ""  # PostgreSQL schema to use instead of "public"


def parse_database_url(url: str) -> DatabaseUrl:
    """Parse a database URL.

    >>> parse_database_url("sqlite:////var/lib/pyarchive/db.sqlite3").path
    '/var/lib/pyarchive/db.sqlite3'
    >>> u = parse_database_url("postgresql://postgres@127.0.0.1:5432/pyarchive?schema=t1")
    >>> u.dsn["host"], u.dsn["port"], u.dsn["dbname"], u.schema
    ('127.0.0.1', '5432', 'pyarchive', 't1')
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if not path or path == "/":
            raise DatabaseUrlError(f"sqlite URL needs a file path: {url!r}")
        # sqlite:///abs/path and sqlite:////abs/path both name /abs/path.
        return DatabaseUrl("sqlite", path=path[1:] if path.startswith("//") else path)
    if parts.scheme in {"postgresql", "postgres"}:
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        schema = query.pop("schema", "")
        if schema and not schema.replace("_", "").isalnum():
            raise DatabaseUrlError("schema name may hold only letters, digits and '_'")
        dsn = {"dbname": unquote(parts.path.lstrip("/")) or "postgres"}
        if parts.hostname:
            dsn["host"] = parts.hostname
        if parts.port:
            dsn["port"] = str(parts.port)
        if parts.username:
            dsn["user"] = unquote(parts.username)
        if parts.password:
            dsn["password"] = unquote(parts.password)
        dsn.update(query)
        return DatabaseUrl("postgresql", dsn=dsn, schema=schema)
    raise DatabaseUrlError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


class Txn:
    """One transaction's cursor, with ``?`` placeholders on both databases."""

    def __init__(self, cursor: Any, dialect: str) -> None:
        self._cursor = cursor
        self.dialect = dialect

    @property
    def for_update(self) -> str:
        """Row-lock clause: SQLite locks the whole database at BEGIN IMMEDIATE instead."""
        return " FOR UPDATE" if self.dialect == "postgresql" else ""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        self._cursor.execute(sql, tuple(params))
        return int(self._cursor.rowcount)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self.execute(sql, params)
        row = self._cursor.fetchone()
        return tuple(row) if row is not None else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.execute(sql, params)
        return [tuple(row) for row in self._cursor.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]


def _sqlite_connected(conn: sqlite3.Connection) -> None:
    conn.isolation_level = None  # we issue BEGIN IMMEDIATE ourselves, see Database.run
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a commit is durable when it returns (rule 1)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")


class Database:
    """A connection pool plus ``run(fn, ...)``: one function, one transaction, on a thread."""

    def __init__(self, url: DatabaseUrl, *, pool_size: int = 5) -> None:
        self.url = url
        self.dialect = url.dialect
        if url.dialect == "sqlite":
            # One connection: SQLite serialises writers anyway, and one thread avoids
            # "database is locked" between our own connections.
            self._pool = adbapi.ConnectionPool(
                "sqlite3",
                url.path,
                check_same_thread=False,
                cp_min=1,
                cp_max=1,
                cp_openfun=_sqlite_connected,
            )
        else:
            kwargs: dict[str, Any] = dict(url.dsn or {})
            if url.schema:
                kwargs["options"] = f"-c search_path={url.schema}"
            self._pool = adbapi.ConnectionPool(
                "psycopg2", cp_min=1, cp_max=pool_size, cp_reconnect=True, **kwargs
            )

    def run(
        self, fn: Callable[Concatenate[Txn, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[R]:
        dialect = self.dialect

        def interaction(cursor: Any) -> R:
            if dialect == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            return fn(Txn(cursor, dialect), *args, **kwargs)

        return self._pool.runInteraction(interaction)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._pool.close()


def ddl(sql: str, dialect: str) -> str:
    """Fill the few type names that differ between the two databases into a DDL statement."""
    types = {
        "sqlite": {
            "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
            "float": "REAL",
            "bigint": "INTEGER",
            "collate_c": "",  # BINARY, SQLite's own, is code point order for UTF-8 text
        },
        "postgresql": {
            "id": "BIGSERIAL PRIMARY KEY",
            "float": "DOUBLE PRECISION",
            "bigint": "BIGINT",
            "collate_c": ' COLLATE "C"',
        },
    }[dialect]
    return sql.format(**types)
