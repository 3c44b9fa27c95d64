"""The database a restore writes into, on a connection of its own (``RestoreTarget``), and
``load_rows``, which inserts a snapshot's restored tables into it in batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from common.db import DatabaseUrl, Txn
from proxy.remote.dump import pg_connect_kwargs, quoted
from proxy.remote.restore_rows import check_row, clear_staff
from proxy.remote.restore_snapshot import RestoreError
from proxy.remote.snapshots import RESTORED_TABLES

_BATCH = 500  # rows per INSERT


class RestoreTarget:
    """The database being restored into, on a connection of its own."""

    def __init__(self, url: DatabaseUrl) -> None:
        self.dialect = url.dialect
        try:
            if url.dialect == "sqlite":
                import sqlite3

                self._conn: Any = sqlite3.connect(url.path, isolation_level=None, timeout=30)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
            else:
                import psycopg2

                self._conn = psycopg2.connect(**pg_connect_kwargs(url))
        except Exception as exc:
            raise RestoreError(f"cannot open the target database: {exc}".strip()) from None
        self._cursor = self._conn.cursor()
        self.txn = Txn(self._cursor, self.dialect)
        self.errors: tuple[type[Exception], ...] = _driver_errors(self.dialect)

    def __enter__(self) -> RestoreTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def begin(self) -> None:
        if self.dialect == "sqlite":
            self._cursor.execute("BEGIN IMMEDIATE")  # psycopg2 opens one by itself

    def commit(self) -> None:
        self._conn.commit() if self.dialect == "postgresql" else self._cursor.execute("COMMIT")

    def rollback(self) -> None:
        if self.dialect == "postgresql":
            self._conn.rollback()
        elif self._conn.in_transaction:
            self._cursor.execute("ROLLBACK")

    def tables(self) -> set[str]:
        if self.dialect == "sqlite":
            rows = self.txn.all("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = self.txn.all(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        return {str(row[0]) for row in rows}

    def columns(self, table: str) -> set[str]:
        if self.dialect == "sqlite":
            return {str(row[1]) for row in self.txn.all(f"PRAGMA table_info({quoted(table)})")}
        return {str(row[0]) for row in self.txn.all(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?", (table,),
        )}  # fmt: skip

    def refuse_if_used(self) -> None:
        present = self.tables()
        held = {t: int(self.txn.scalar(f"SELECT COUNT(*) FROM {t}")) for t in
                ("users", "files", "blobs") if t in present}  # fmt: skip
        if any(held.values()):
            shown = ", ".join(f"{n} {t}" for t, n in held.items())
            raise RestoreError(f"the target database is not empty ({shown}): "
                               "restore only into a new, empty database")  # fmt: skip

    def insert_many(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        names = ", ".join(map(quoted, columns))
        if self.dialect == "sqlite":
            marks = ", ".join("?" for _ in columns)
            self._cursor.executemany(
                f"INSERT INTO {quoted(table)} ({names}) VALUES ({marks})", rows
            )
            return
        from psycopg2.extras import execute_values

        execute_values(
            self._cursor, f"INSERT INTO {quoted(table)} ({names}) VALUES %s", rows,
            page_size=_BATCH,
        )  # fmt: skip

    def fix_sequences(self) -> None:
        """Move each BIGSERIAL past the restored ids, so new rows do not collide."""
        if self.dialect != "postgresql":
            return
        for table, column in self.txn.all(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%%'"
        ):
            self.txn.execute(
                "SELECT setval(pg_get_serial_sequence(quote_ident(current_schema()) || '.'"
                f" || quote_ident(?), ?), COALESCE(MAX({quoted(column)}), 1),"
                f" MAX({quoted(column)}) IS NOT NULL) FROM {quoted(table)}",
                (table, column),
            )


def _driver_errors(dialect: str) -> tuple[type[Exception], ...]:
    if dialect == "sqlite":
        import sqlite3

        return (sqlite3.Error,)
    import psycopg2

    return (psycopg2.Error,)


def load_rows(
    target: RestoreTarget,
    header: dict[str, Any],
    records: Iterator[dict[str, Any]],
    *,
    restore_staff: bool = False,
) -> tuple[dict[str, int], list[str]]:
    """Insert the restored tables' rows in snapshot order, each checked first
    (``proxy.remote.restore_rows``); the row count of every table, and the usernames of the
    staff accounts restored as ordinary ones (all of them unless ``restore_staff``).

    Migrations so far only add tables and columns, so a snapshot of an older schema loads into
    the current one with the new columns at their defaults, except those a migration filled
    from other columns (``_REPLAYED``); a future migration that rewrites data must be replayed
    there too."""
    columns = {t["name"]: list(t["columns"]) for t in header["tables"]}
    derived = {
        table: [(new, old) for new, old in pairs if new not in columns[table]]
        for table, pairs in _REPLAYED.items()
        if table in columns
    }
    present = target.tables()
    for table in RESTORED_TABLES:
        if table in columns:
            unknown = set(columns[table]) - target.columns(table) if table in present else {"*"}
            if unknown:
                raise RestoreError(f"table {table} of the snapshot does not fit this schema")
    for table in reversed(RESTORED_TABLES):
        # What a proxy started on the empty database wrote (its job runs) gives way to the
        # snapshot; users, files and blobs were checked to be empty, nodes are kept.
        target.txn.execute(f"DELETE FROM {quoted(table)}")
    counts = {name: 0 for name in columns}
    demoted: list[str] = []
    batch: list[tuple[Any, ...]] = []
    current = ""
    try:
        for record in records:
            if "end" in record:
                if record["end"]["rows"] != counts:
                    raise RestoreError("the snapshot's row counts do not match its trailer")
                break
            table, row = record["table"], record["row"]
            counts[table] += 1
            if table not in RESTORED_TABLES:
                continue
            if table != current or len(batch) >= _BATCH:
                if batch:
                    target.insert_many(current, _named(current, columns, derived), batch)
                batch, current = [], table
            row = {c: row[c] for c in columns[table]}
            check_row(table, row)
            if table == "users" and not restore_staff and clear_staff(row):
                demoted.append(str(row["username"]))
            values = list(row.values())
            batch.append(tuple(values + [row[old] for _, old in derived.get(table, [])]))
        else:
            raise RestoreError("the snapshot is truncated (it has no trailer)")
    except (KeyError, TypeError) as exc:
        raise RestoreError(f"the snapshot is malformed: {exc!r}") from None
    if batch:
        target.insert_many(current, _named(current, columns, derived), batch)
    # Each account's file counter (what a listing's count reads) is counted again from the
    # files restored: a snapshot's is not trusted, and one from before it has none.
    target.txn.execute(
        "UPDATE users SET file_count = (SELECT COUNT(*) FROM files WHERE owner_id = users.id)"
    )
    return counts, demoted


# (table, [(column, the column it was filled from)]): the files' path came with the paths
# migration, each existing file's path its filename; the blobs' dedup_key with per-owner
# deduplication, each existing blob's key its sha256.
_REPLAYED: dict[str, list[tuple[str, str]]] = {
    "files": [("path", "filename")],
    "blobs": [("dedup_key", "sha256")],
}


def _named(
    table: str, columns: dict[str, list[str]], derived: dict[str, list[tuple[str, str]]]
) -> list[str]:
    return columns[table] + [new for new, _ in derived.get(table, [])]
