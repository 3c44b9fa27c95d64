"""SQL for ``s3_connections``: ``Connection`` (one row, its secret still sealed) and one small
function per statement group. At most one row is active; activation clears the others in the
same transaction."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from common.db import Txn
from common.errors import Conflict, NotFound
from common.s3 import S3Settings, SecretBox, SecretError

_COLUMNS = (
    "name, endpoint_url, region, bucket, prefix, access_key, secret_encrypted, secret_last4,"
    " active, validated_at, validation_ok, validation_detail, created_at, updated_at"
)


@dataclass(frozen=True)
class Connection:
    """One row of ``s3_connections``; the secret still sealed."""

    name: str
    endpoint_url: str
    region: str
    bucket: str
    prefix: str
    access_key: str
    secret_encrypted: str
    secret_last4: str
    active: bool
    validated_at: float | None
    validation_ok: bool | None
    validation_detail: str
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Connection:
        (name, endpoint, region, bucket, prefix, access, sealed, last4, active, validated_at,
         validation_ok, detail, created, updated) = row  # fmt: skip
        return cls(
            name, endpoint, region, bucket, prefix, access, sealed, last4, bool(active),
            None if validated_at is None else float(validated_at),
            None if validation_ok is None else bool(validation_ok),
            detail, float(created), float(updated),
        )  # fmt: skip

    def settings(self, secret: str) -> S3Settings:
        return S3Settings(
            bucket=self.bucket, region=self.region, access_key=self.access_key,
            secret_key=secret, endpoint_url=self.endpoint_url, prefix=self.prefix,
            name=self.name,
        )  # fmt: skip


def insert(txn: Txn, row: Connection) -> bool:
    values = (
        row.name, row.endpoint_url, row.region, row.bucket, row.prefix, row.access_key,
        row.secret_encrypted, row.secret_last4, int(row.active), row.validated_at,
        row.validation_ok, row.validation_detail, row.created_at, row.updated_at,
    )  # fmt: skip
    inserted = txn.execute(
        f"INSERT INTO s3_connections ({_COLUMNS}) VALUES ({', '.join('?' for _ in values)})"
        " ON CONFLICT (name) DO NOTHING",
        values,
    )
    return inserted == 1


def all_connections(txn: Txn) -> list[Connection]:
    rows = txn.all(f"SELECT {_COLUMNS} FROM s3_connections ORDER BY name")
    return [Connection.from_row(row) for row in rows]


def find(txn: Txn, name: str, lock: bool = False) -> Connection | None:
    row = txn.one(
        f"SELECT {_COLUMNS} FROM s3_connections WHERE name = ?" + (txn.for_update if lock else ""),
        (name,),
    )
    return None if row is None else Connection.from_row(row)


def get(txn: Txn, name: str, lock: bool = False) -> Connection:
    row = find(txn, name, lock)
    if row is None:
        raise NotFound(f"No S3 connection named {name!r}")
    return row


def active(txn: Txn) -> Connection | None:
    row = txn.one(f"SELECT {_COLUMNS} FROM s3_connections WHERE active = 1")
    return None if row is None else Connection.from_row(row)


def update(txn: Txn, name: str, changes: dict[str, Any], now: float) -> Connection:
    get(txn, name, lock=True)
    assigned = ", ".join(f"{column} = ?" for column in changes)
    txn.execute(
        f"UPDATE s3_connections SET {assigned}, updated_at = ?, validated_at = NULL,"
        " validation_ok = NULL, validation_detail = '' WHERE name = ?",
        (*changes.values(), now, name),
    )
    return get(txn, name)


def delete(txn: Txn, name: str) -> None:
    row = get(txn, name, lock=True)
    if row.active:
        raise Conflict(f"S3 connection {name} is the active one: activate another connection first")
    txn.execute("DELETE FROM s3_connections WHERE name = ?", (name,))


def activate(txn: Txn, name: str, box: SecretBox) -> Connection:
    if txn.dialect == "postgresql":
        # Two activations at once would both clear, then collide on the unique index.
        txn.execute("SELECT pg_advisory_xact_lock(7260913)")
    row = get(txn, name, lock=True)
    try:
        box.open(row.secret_encrypted)
    except SecretError:
        raise Conflict(
            f"S3 connection {name}'s secret key cannot be opened with this proxy's key: "
            "PATCH it with its secret_key first",
            field="secret_key",
        ) from None
    # Clear first: the unique index allows one active row at any moment.
    txn.execute("UPDATE s3_connections SET active = 0 WHERE active = 1 AND name <> ?", (name,))
    txn.execute("UPDATE s3_connections SET active = 1 WHERE name = ?", (name,))
    return replace(row, active=True)


def record_validation(
    txn: Txn, name: str, seen_at: float, ok: bool, detail: str, now: float
) -> Connection:
    """Store a validation's outcome, unless the connection changed while it ran (then the
    outcome says nothing about what is stored, and the row is returned as it is)."""
    txn.execute(
        "UPDATE s3_connections SET validated_at = ?, validation_ok = ?, validation_detail = ?"
        " WHERE name = ? AND updated_at = ?",
        (now, int(ok), detail, name, seen_at),
    )
    return get(txn, name)


def reseal_all(txn: Txn, box: SecretBox) -> tuple[int, int]:
    """Seal every stored secret with ``box``'s sealing key where a fallback key sealed it.

    One transaction: all of them or none. Returns (resealed, unreadable): a secret no key of
    ``box`` opens (a database from another proxy) is left as it is, flagged as before.
    """
    resealed = unreadable = 0
    for name, sealed in txn.all("SELECT name, secret_encrypted FROM s3_connections"):
        if box.is_current(sealed):
            continue
        try:
            fresh = box.reseal(sealed)
        except SecretError:
            unreadable += 1
            continue
        txn.execute("UPDATE s3_connections SET secret_encrypted = ? WHERE name = ?", (fresh, name))
        resealed += 1
    return resealed, unreadable
