"""Disaster recovery: rebuild an empty proxy database from a metadata snapshot in the bucket.

``pyarchive-proxy restore --from-s3`` calls ``restore_from_s3``. The snapshot format and what
it holds are described in ``proxy.remote.backup``. The target is treated as a **new cluster**:

- It must hold no user, file or blob (empty, only migrated, or served by a proxy that nobody
  used yet): merging a snapshot into a live catalogue would mix two histories. The check is
  made before downloading anything and again inside the restoring transaction. Job rows a
  started proxy wrote give way to the snapshot's; nodes registered before the restore stay.
- The newest snapshot (or the one named) is downloaded and its sha256 checked against the one
  recorded when it was written; a snapshot from a newer schema than this code knows is
  refused. The target is migrated, and every row is inserted in **one transaction**, so a
  failure at any step leaves the target as it was. PostgreSQL's sequences are moved past the
  restored ids (SQLite's AUTOINCREMENT follows explicit ids by itself).
- The old nodes, their replicas and the old proxy's own store are gone: no node, replica or
  pending replica deletion is restored, and every blob gets ``local = 0`` with its mirror and
  restore assignments cleared. Each blob whose object ``<prefix>/<sha256>`` is in the bucket
  with the right size (and sha256 metadata, when present) becomes ``remote`` and verified, so
  it can be cached back; one whose object is missing becomes ``lost`` (no copy exists
  anywhere; the reason is in ``mirror_detail``) and its part list is dropped. A remote blob
  whose part list is incomplete (mirrored after the snapshot was taken) gets it rebuilt from
  the object: part sizes from ``HeadObject`` with ``PartNumber``, part sha256s by reading the
  object once (which also proves it holds the blob's content; if not, the blob is lost), so
  a node can restore and verify it part by part.
- The S3 connection used for the restore becomes the active one (the restored row with the
  same bucket, prefix and endpoint, or a new one), its secret sealed with *this* proxy's key.
  Other restored connections are kept even when this key cannot open their secrets (the
  old proxy's ``encryption_key`` may be gone with it): as for a database moved to a proxy
  with another key, staff see them and only need to enter the secret again; the result
  names them. Job intervals set by staff are kept, their run history cleared. Staff keep
  their passwords (argon2 hashes), so they can log in.

Only one clear line reaches the operator on failure (``RestoreError``); no secret is ever
part of a message.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.db import DatabaseUrl, DatabaseUrlError, Txn, parse_database_url
from common.s3 import S3Settings, SecretBox, SecretError, make_client
from proxy.migrations import MIGRATIONS, migrate
from proxy.ops.systemlog import SystemLog
from proxy.remote.backup import (
    FORMAT,
    FORMAT_VERSION,
    RESTORED_TABLES,
    Snapshot,
    list_snapshots_in,
)
from proxy.remote.tier import LOST, REMOTE

_BATCH = 500
_HEAD_THREADS = 8


class RestoreError(RuntimeError):
    """A restore was refused or failed; the message is one line for the operator."""


def restore_from_s3(
    database_url: str,
    settings: S3Settings,
    snapshot: str | None = None,
    *,
    box: SecretBox,
    say: Callable[[str], None] = lambda line: None,
    workdir: str | None = None,
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Restore ``snapshot`` (default: the newest) from ``settings``' bucket into the empty
    database at ``database_url``; returns a summary. Blocking: for the command line."""
    try:
        url = parse_database_url(database_url)
    except DatabaseUrlError as exc:
        raise RestoreError(str(exc)) from None
    with _Target(url) as target:
        try:
            target.refuse_if_used()
        except target.errors as exc:
            raise RestoreError(f"cannot read the target database: {_first_line(exc)}") from None
        target.rollback()  # PostgreSQL: do not sit in a transaction while downloading
        say(f"target database ({url.dialect}) is empty")
        client = make_client(settings, max_pool_connections=_HEAD_THREADS + 2)
        chosen = _choose(client, settings, snapshot, say)
        with tempfile.TemporaryDirectory(prefix=".metadata-restore-", dir=workdir) as tmp:
            path = Path(tmp) / chosen.name
            _download_verified(client, settings, chosen, path)
            say(f"downloaded {chosen.name} ({chosen.size} bytes), sha256 verified")
            records = _records(path, chosen.name)
            header = _header(next(records, None), chosen.name)
            say(f"snapshot of a {header['dialect']} database at schema version "
                f"{header['schema_version']}, taken {header['created_at']}")  # fmt: skip
            target.begin()
            try:
                summary = _restore_txn(target, client, settings, box, chosen, header, records,
                                       say, now())  # fmt: skip
                target.commit()
            except target.errors as exc:
                target.rollback()
                raise RestoreError(f"the target database refused the restore (nothing was "
                                   f"changed): {_first_line(exc)}") from exc  # fmt: skip
            except BaseException:
                target.rollback()
                raise
    return summary


def _restore_txn(
    target: _Target,
    client: Any,
    settings: S3Settings,
    box: SecretBox,
    chosen: Snapshot,
    header: dict[str, Any],
    records: Iterator[dict[str, Any]],
    say: Callable[[str], None],
    now: float,
) -> dict[str, Any]:
    """Everything that happens inside the one restoring transaction."""
    migrate(target.txn)
    target.refuse_if_used()
    counts = _load(target, header, records)
    restored = {t: counts[t] for t in RESTORED_TABLES if t in counts}
    say("rows: " + ", ".join(f"{n} {t}" for t, n in restored.items()))
    target.fix_sequences()
    blobs = _settle_blobs(target.txn, client, settings, say)
    detail = f"used to restore {chosen.name}"
    connection, unreadable = _adopt_connection(target.txn, settings, box, now, detail)
    if unreadable:
        say(f"S3 connection(s) whose secret key must be entered again: {', '.join(unreadable)}")
    say(f"S3 connection {connection!r} is active, its secret sealed with this proxy's key")
    _reset_jobs(target.txn)
    summary = {
        "snapshot": chosen.name,
        "schema_version": header["schema_version"],
        "source": header["dialect"],
        "taken_at": header["created_at"],
        "tables": restored,
        "users": counts.get("users", 0),
        "files": counts.get("files", 0),
        **blobs,
        "connection": connection,
        "connections_unreadable": unreadable,
    }
    SystemLog.record_txn(
        target.txn, now, "info", "metadata-restore",
        f"metadata restored from snapshot {chosen.name} into a new cluster",
        data={k: v for k, v in summary.items() if k != "tables"},
    )  # fmt: skip
    return summary


# --- the target database -------------------------------------------------------------------


class _Target:
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

                from proxy.remote.backup import pg_connect_kwargs

                self._conn = psycopg2.connect(**pg_connect_kwargs(url))
        except Exception as exc:
            raise RestoreError(f"cannot open the target database: {exc}".strip()) from None
        self._cursor = self._conn.cursor()
        self.txn = Txn(self._cursor, self.dialect)
        self.errors: tuple[type[Exception], ...] = _driver_errors(self.dialect)

    def __enter__(self) -> _Target:
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
            return {str(row[1]) for row in self.txn.all(f"PRAGMA table_info({_quoted(table)})")}
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
        names = ", ".join(map(_quoted, columns))
        if self.dialect == "sqlite":
            marks = ", ".join("?" for _ in columns)
            self._cursor.executemany(
                f"INSERT INTO {_quoted(table)} ({names}) VALUES ({marks})", rows
            )
            return
        from psycopg2.extras import execute_values

        execute_values(
            self._cursor, f"INSERT INTO {_quoted(table)} ({names}) VALUES %s", rows,
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
                f" || quote_ident(?), ?), COALESCE(MAX({_quoted(column)}), 1),"
                f" MAX({_quoted(column)}) IS NOT NULL) FROM {_quoted(table)}",
                (table, column),
            )


def _first_line(exc: Exception) -> str:
    return "".join(str(exc).strip().splitlines()[:1])


def _driver_errors(dialect: str) -> tuple[type[Exception], ...]:
    if dialect == "sqlite":
        import sqlite3

        return (sqlite3.Error,)
    import psycopg2

    return (psycopg2.Error,)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- choosing, downloading and reading a snapshot ------------------------------------------


def _s3_failure(exc: Exception, settings: S3Settings) -> RestoreError:
    """One line for an S3 error; botocore's messages carry no secrets."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    if isinstance(exc, EndpointConnectionError):
        return RestoreError(f"cannot reach the S3 endpoint {settings.endpoint_url or '(AWS)'}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
            return RestoreError(f"S3 refused the credentials for bucket {settings.bucket} ({code})")
        if code in {"NoSuchBucket"}:
            return RestoreError(f"there is no bucket {settings.bucket}")
        return RestoreError(f"S3 error: {code} {error.get('Message', '')}".strip())
    return RestoreError(f"S3 error: {exc}")


def _choose(
    client: Any, settings: S3Settings, wanted: str | None, say: Callable[[str], None]
) -> Snapshot:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = list_snapshots_in(client, settings)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_failure(exc, settings) from None
    where = f"s3://{settings.bucket}/{settings.metadata_prefix}"
    if not found:
        raise RestoreError(f"no metadata snapshots in {where}")
    if wanted is None:
        say(f"{len(found)} snapshot(s) in {where}; restoring the newest, {found[0].name}")
        return found[0]
    for snapshot in found:
        if wanted in {snapshot.name, snapshot.key}:
            say(f"restoring snapshot {snapshot.name}")
            return snapshot
    names = ", ".join(s.name for s in found)
    raise RestoreError(f"no snapshot {wanted} in {where}; there are: {names}")


def _download_verified(client: Any, settings: S3Settings, snapshot: Snapshot, path: Path) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        head = client.head_object(Bucket=settings.bucket, Key=snapshot.key)
        client.download_file(settings.bucket, snapshot.key, str(path))
    except (BotoCoreError, ClientError) as exc:
        raise _s3_failure(exc, settings) from None
    expected = str(head.get("Metadata", {}).get("sha256", ""))
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    if not expected:
        raise RestoreError(f"snapshot {snapshot.name} carries no sha256, so it cannot be trusted")
    if digest.hexdigest() != expected:
        raise RestoreError(f"snapshot {snapshot.name} is corrupt: its sha256 is "
                           f"{digest.hexdigest()}, not {expected} as written")  # fmt: skip


def _records(path: Path, name: str) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(path, "rb") as lines:
            for line in lines:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("a line is not a JSON object")
                yield record
    except (OSError, EOFError, ValueError) as exc:
        raise RestoreError(f"snapshot {name} is unreadable: {exc}") from None


def _header(record: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if record is None or record.get("format") != FORMAT:
        raise RestoreError(f"{name} is not a PyArchive metadata snapshot")
    if record.get("format_version") != FORMAT_VERSION:
        raise RestoreError(f"snapshot {name} has format version {record.get('format_version')}; "
                           f"this PyArchive reads version {FORMAT_VERSION}")  # fmt: skip
    schema = record.get("schema_version")
    if not isinstance(schema, int) or schema > len(MIGRATIONS):
        raise RestoreError(f"snapshot {name} is from a newer PyArchive (schema version {schema}, "
                           f"this one knows {len(MIGRATIONS)}): upgrade, then restore")  # fmt: skip
    return record


def _load(
    target: _Target, header: dict[str, Any], records: Iterator[dict[str, Any]]
) -> dict[str, int]:
    """Insert the restored tables' rows in snapshot order; the row count of every table.

    Migrations so far only add tables and columns, so a snapshot of an older schema loads into
    the current one with the new columns at their defaults; a future migration that rewrites
    data must be replayed here."""
    columns = {t["name"]: list(t["columns"]) for t in header["tables"]}
    present = target.tables()
    for table in RESTORED_TABLES:
        if table in columns:
            unknown = set(columns[table]) - target.columns(table) if table in present else {"*"}
            if unknown:
                raise RestoreError(f"table {table} of the snapshot does not fit this schema")
    for table in reversed(RESTORED_TABLES):
        # What a proxy started on the empty database wrote (its job runs) gives way to the
        # snapshot; users, files and blobs were checked to be empty, nodes are kept.
        target.txn.execute(f"DELETE FROM {_quoted(table)}")
    counts = {name: 0 for name in columns}
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
                    target.insert_many(current, columns[current], batch)
                batch, current = [], table
            batch.append(tuple(row[c] for c in columns[table]))
        else:
            raise RestoreError("the snapshot is truncated (it has no trailer)")
    except (KeyError, TypeError) as exc:
        raise RestoreError(f"the snapshot is malformed: {exc!r}") from None
    if batch:
        target.insert_many(current, columns[current], batch)
    return counts


# --- a new cluster: blobs, the connection, jobs --------------------------------------------


def _settle_blobs(
    txn: Txn, client: Any, settings: S3Settings, say: Callable[[str], None]
) -> dict[str, int]:
    """Mark each blob remote or lost by what the bucket holds; rebuild missing part lists."""
    txn.execute(
        "UPDATE blobs SET local = 0, mirror_node = NULL, mirror_detail = '', restore_node = NULL,"
        " restore_requested_at = NULL, parts_restored = 0, restore_detail = ''"
    )
    total = int(txn.scalar("SELECT COUNT(*) FROM blobs"))
    say(f"checking {total} blob(s) in s3://{settings.bucket}/{settings.prefix}/")
    remote = lost = 0
    last = 0
    with ThreadPoolExecutor(_HEAD_THREADS) as pool:
        while page := txn.all(
            "SELECT id, sha256, size FROM blobs WHERE id > ? ORDER BY id LIMIT ?", (last, _BATCH)
        ):
            last = int(page[-1][0])
            verdicts = list(
                pool.map(lambda r: _object_problem(client, settings, r[1], int(r[2])), page)
            )
            present = [row for row, problem in zip(page, verdicts, strict=True) if problem is None]
            for (blob_id, _, _), problem in zip(page, verdicts, strict=True):
                if problem is None:
                    txn.execute(
                        "UPDATE blobs SET remote_state = ?, remote_verified = 1 WHERE id = ?",
                        (REMOTE, blob_id),
                    )
                    txn.execute(
                        "UPDATE blob_parts SET remote_state = 'uploaded' WHERE blob_id = ?",
                        (blob_id,),
                    )
                else:
                    txn.execute(
                        "UPDATE blobs SET remote_state = ?, remote_verified = 0, mirror_detail = ?"
                        " WHERE id = ?",
                        (LOST, problem, blob_id),
                    )
                    txn.execute("DELETE FROM blob_parts WHERE blob_id = ?", (blob_id,))
            corrupt = _complete_parts(txn, client, settings, present, pool)
            remote += len(present) - corrupt
            lost += len(page) - len(present) + corrupt
    files_lost = int(txn.scalar(
        "SELECT COUNT(*) FROM files f JOIN versions v ON v.file_id = f.id"
        " AND v.number = f.current_version JOIN blobs b ON b.id = v.blob_id"
        " WHERE b.remote_state = ?", (LOST,),
    ))  # fmt: skip
    say(f"blobs: {remote} remote, {lost} lost")
    return {
        "blobs_remote": remote,
        "blobs_lost": lost,
        "files_lost": files_lost,
    }


def _object_problem(client: Any, settings: S3Settings, sha256: str, size: int) -> str | None:
    """None if the blob's object is in the bucket as expected, else why it is not."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        head = client.head_object(Bucket=settings.bucket, Key=settings.object_key(sha256))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return "lost: its object was not in the bucket at the metadata restore"
        raise _s3_failure(exc, settings) from None
    except BotoCoreError as exc:
        raise _s3_failure(exc, settings) from None
    if int(head["ContentLength"]) != size:
        return f"lost: its object in the bucket has {head['ContentLength']} bytes, not {size}"
    recorded = head.get("Metadata", {}).get("sha256")
    if recorded and recorded != sha256:
        return "lost: its object in the bucket has another sha256"
    return None


def _complete_parts(
    txn: Txn,
    client: Any,
    settings: S3Settings,
    blobs: list[tuple[Any, ...]],
    pool: ThreadPoolExecutor,
) -> int:
    """Rebuild the part list of each remote blob whose list is incomplete (mirrored after the
    snapshot); a blob whose object turns out not to hold its content becomes lost. Returns
    how many did."""
    if not blobs:
        return 0
    ids = [int(row[0]) for row in blobs]
    known = {
        int(blob_id): (int(total or 0), int(unhashed or 0))
        for blob_id, total, unhashed in txn.all(
            "SELECT blob_id, SUM(size), SUM(CASE WHEN sha256 IS NULL THEN 1 ELSE 0 END)"
            f" FROM blob_parts WHERE blob_id IN ({', '.join('?' for _ in ids)}) GROUP BY blob_id",
            ids,
        )
    }
    wanting = [
        (int(blob_id), sha256, int(size)) for blob_id, sha256, size in blobs
        if known.get(int(blob_id)) != (int(size), 0)
    ]  # fmt: skip
    rebuilt = pool.map(lambda b: _parts_from_object(client, settings, b[1], b[2]), wanting)
    corrupt = 0
    for (blob_id, _, _), parts in zip(wanting, rebuilt, strict=True):
        txn.execute("DELETE FROM blob_parts WHERE blob_id = ?", (blob_id,))
        if isinstance(parts, str):
            txn.execute(
                "UPDATE blobs SET remote_state = ?, remote_verified = 0, mirror_detail = ?"
                " WHERE id = ?",
                (LOST, parts, blob_id),
            )
            corrupt += 1
            continue
        for index, start, size, digest in parts:
            txn.execute(
                "INSERT INTO blob_parts (blob_id, idx, start, size, sha256, remote_state)"
                " VALUES (?, ?, ?, ?, ?, 'uploaded')",
                (blob_id, index, start, size, digest),
            )
    return corrupt


def _parts_from_object(
    client: Any, settings: S3Settings, sha256: str, size: int
) -> list[tuple[int, int, int, str]] | str:
    """(index, offset, size, sha256) of each part of the blob's object, or why the object
    cannot be trusted.

    A single-part object's one part is the whole blob. A multipart object's part sizes come
    from ``HeadObject`` with ``PartNumber`` (every S3-compatible server answers it); their
    sha256s are computed by reading the object once, which also proves that the object holds
    exactly the blob's content. (S3's own part checksums would save the read, but not every
    server reports them per part.)"""
    from botocore.exceptions import BotoCoreError, ClientError

    key = settings.object_key(sha256)
    try:
        if size == 0:
            return [(1, 0, 0, sha256)]
        first = client.head_object(Bucket=settings.bucket, Key=key, PartNumber=1)
        count = int(first.get("PartsCount") or 1)
        if count == 1:
            return [(1, 0, size, sha256)]
        sizes = [int(first["ContentLength"])] + [
            int(client.head_object(Bucket=settings.bucket, Key=key, PartNumber=n)["ContentLength"])
            for n in range(2, count + 1)
        ]
        if sum(sizes) != size:
            return f"lost: its object's parts add up to {sum(sizes)} bytes, not {size}"
        body = client.get_object(Bucket=settings.bucket, Key=key)["Body"]
        whole = hashlib.sha256()
        parts, offset = [], 0
        for index, part_size in enumerate(sizes, start=1):
            digest = hashlib.sha256()
            left = part_size
            while left:
                chunk = body.read(min(left, 1 << 20))
                if not chunk:
                    return "lost: its object in the bucket ended early"
                digest.update(chunk)
                whole.update(chunk)
                left -= len(chunk)
            parts.append((index, offset, part_size, digest.hexdigest()))
            offset += part_size
        body.close()
    except (BotoCoreError, ClientError) as exc:
        raise _s3_failure(exc, settings) from None
    if whole.hexdigest() != sha256:
        return "lost: its object in the bucket does not hold its content (sha256 differs)"
    return parts


def _adopt_connection(
    txn: Txn, settings: S3Settings, box: SecretBox, now: float, detail: str
) -> tuple[str, list[str]]:
    """Make the restore's S3 connection the active one, its secret sealed with this proxy's
    key; the names of the other connections whose secrets this key cannot open. (name,
    unreadable)."""
    rows = txn.all(
        "SELECT name, bucket, prefix, endpoint_url, secret_encrypted FROM s3_connections"
        " ORDER BY name"
    )
    same = (settings.bucket, settings.prefix, settings.endpoint_url)
    match = next((str(r[0]) for r in rows if (r[1], r[2], r[3]) == same), None)
    unreadable = []
    for name, *_, sealed in rows:
        try:
            box.open(sealed)
        except SecretError:
            if name != match:
                unreadable.append(str(name))
    txn.execute("UPDATE s3_connections SET active = 0 WHERE active = 1")
    sealed_secret = box.seal(settings.secret_key)
    last4 = settings.secret_key[-4:] if len(settings.secret_key) >= 12 else ""
    if match is None:
        taken = {str(r[0]) for r in rows}
        base = settings.name or "restored"
        match = base
        for n in range(2, len(taken) + 3):
            if match not in taken:
                break
            match = f"{base}-{n}"
        txn.execute(
            "INSERT INTO s3_connections (name, endpoint_url, region, bucket, prefix, access_key,"
            " secret_encrypted, secret_last4, active, validated_at, validation_ok,"
            " validation_detail, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, 1, ?, ?, ?)",
            (match, settings.endpoint_url, settings.region, settings.bucket, settings.prefix,
             settings.access_key, sealed_secret, last4, now, detail, now, now),
        )  # fmt: skip
    else:
        txn.execute(
            "UPDATE s3_connections SET region = ?, access_key = ?, secret_encrypted = ?,"
            " secret_last4 = ?, active = 1, validated_at = ?, validation_ok = 1,"
            " validation_detail = ?, updated_at = ? WHERE name = ?",
            (settings.region, settings.access_key, sealed_secret, last4, now, detail, now, match),
        )
    return match, unreadable


def _reset_jobs(txn: Txn) -> None:
    """Keep the intervals staff chose; the old cluster's run history means nothing here."""
    txn.execute(
        "UPDATE jobs SET last_run = NULL, last_duration = NULL, last_ok = NULL,"
        " last_result = '', next_run = NULL"
    )
