"""SQL for uploads (both dialects' sessions): one small function per statement.

Every function takes a ``Txn`` first and runs inside ``Database.run``; rows come back as
frozen ``Upload`` dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.db import Row, Txn

UPLOADING, COMPLETE = 1, 2


@dataclass(frozen=True)
class Upload:
    id: str
    owner_id: int
    filename: str
    parent_id: str | None
    total: int | None
    received: int
    status: int
    created_at: float
    expires_at: float
    completed_at: float | None
    file_id: str | None
    version: int | None
    # What a tus upload carries beside (``proxy.uploads.tus``); the seed API leaves them.
    dialect: str = "seed"  # or "tus"
    metadata: str = ""  # the Upload-Metadata header as the client sent it
    content_type: str = ""  # metadata's filetype
    concat: str = ""  # "", "partial" or "final"
    parts: str = ""  # a final upload's partial uploads, their ids separated by spaces
    path: str = ""  # where its file is (folder/name); "" in a row older than paths: filename
    # Once complete: its content's sha256 (not a column: the completion knows it, and
    # ``completed_sha256`` reads it from the version it became).
    sha256: str | None = None


_UPLOAD_COLUMNS = (
    "id, owner_id, filename, parent_id, total, received, status, created_at, expires_at,"
    " completed_at, file_id, version, dialect, metadata, content_type, concat, parts, path"
)


def _upload(row: Row) -> Upload:
    return Upload(
        row[0],
        int(row[1]),
        row[2],
        row[3],
        None if row[4] is None else int(row[4]),
        int(row[5]),
        int(row[6]),
        float(row[7]),
        float(row[8]),
        None if row[9] is None else float(row[9]),
        row[10],
        None if row[11] is None else int(row[11]),
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
        row[17],
    )


def insert_upload(txn: Txn, upload: Upload) -> None:
    txn.execute(
        f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES ({', '.join('?' * 18)})",
        (
            upload.id,
            upload.owner_id,
            upload.filename,
            upload.parent_id,
            upload.total,
            upload.received,
            upload.status,
            upload.created_at,
            upload.expires_at,
            upload.completed_at,
            upload.file_id,
            upload.version,
            upload.dialect,
            upload.metadata,
            upload.content_type,
            upload.concat,
            upload.parts,
            upload.path,
        ),
    )


def completed_sha256(txn: Txn, file_id: str, version: int) -> str | None:
    """The sha256 of the version a completed upload became; None once its file is gone."""
    found = txn.scalar(
        "SELECT b.sha256 FROM versions v JOIN blobs b ON b.id = v.blob_id"
        " WHERE v.file_id = ? AND v.number = ?",
        (file_id, version),
    )
    return None if found is None else str(found)


def get_upload(txn: Txn, upload_id: str, owner_id: int, *, lock: bool = False) -> Upload | None:
    """The caller's upload, locked for this transaction if asked; None for anyone else's."""
    row = txn.one(
        f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = ? AND owner_id = ?"
        + (txn.for_update if lock else ""),
        (upload_id, owner_id),
    )
    return None if row is None else _upload(row)


def unfinished_uploads(txn: Txn, owner_id: int, now: float, limit: int = 100) -> list[Upload]:
    """The caller's uploads still in progress (not expired), newest first. A tus final
    upload is left out: its partial uploads are what a client resumes."""
    rows = txn.all(
        f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE owner_id = ? AND status = ?"
        " AND expires_at > ? AND concat <> 'final' ORDER BY created_at DESC, id LIMIT ?",
        (owner_id, UPLOADING, now, limit),
    )
    return [_upload(row) for row in rows]


@dataclass(frozen=True)
class Usage:
    """What an account holds (``proxy.uploads.quota``)."""

    used: int  # bytes of every version of its files, and what its open uploads reserve
    open_uploads: int  # unfinished, not expired, not tus finals (as ``unfinished_uploads``)


def usage(txn: Txn, owner_id: int, now: float) -> Usage:
    """One query: the bytes of every version of the owner's files (a shared blob counts once
    per version, as ``store.storage_used``) plus each open upload's total, or its received
    bytes while the total is unknown; and how many uploads are open. Expired uploads and tus
    final uploads (whose partials are counted) count nothing."""
    row = txn.one(
        "SELECT (SELECT COALESCE(SUM(b.size), 0) FROM versions v"
        " JOIN files f ON f.id = v.file_id JOIN blobs b ON b.id = v.blob_id"
        " WHERE f.owner_id = ?),"
        " COALESCE(SUM(CASE WHEN concat = 'final' THEN 0 ELSE COALESCE(total, received) END), 0),"
        " COUNT(CASE WHEN concat <> 'final' THEN 1 END)"
        " FROM uploads WHERE owner_id = ? AND status = ? AND expires_at > ?",
        (owner_id, owner_id, UPLOADING, now),
    )
    assert row is not None
    return Usage(int(row[0]) + int(row[1]), int(row[2]))


def open_uploads(txn: Txn, owner_id: int, now: float) -> int:
    """How many uploads the owner has open, as ``usage`` counts them (and nothing else)."""
    return int(
        txn.scalar(
            "SELECT COUNT(*) FROM uploads WHERE owner_id = ? AND status = ? AND expires_at > ?"
            " AND concat <> 'final'",
            (owner_id, UPLOADING, now),
        )
    )


def set_received(txn: Txn, upload_id: str, received: int, total: int | None) -> None:
    txn.execute(
        "UPDATE uploads SET received = ?, total = ? WHERE id = ?", (received, total, upload_id)
    )


def mark_complete(
    txn: Txn, upload_id: str, total: int, file_id: str, version: int, now: float
) -> None:
    txn.execute(
        "UPDATE uploads SET status = ?, total = ?, received = ?, completed_at = ?,"
        " file_id = ?, version = ? WHERE id = ?",
        (COMPLETE, total, total, now, file_id, version, upload_id),
    )


def expire_now(txn: Txn, upload_id: str, now: float) -> None:
    """Make an unfinished upload expired (it counts nothing; ``expired_uploads`` finds it)."""
    txn.execute(
        "UPDATE uploads SET expires_at = ? WHERE id = ? AND status = ?", (now, upload_id, UPLOADING)
    )


def delete_upload(txn: Txn, upload_id: str) -> None:
    txn.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))


def find_final(txn: Txn, owner_id: int, parts: str) -> Upload | None:
    """The caller's final tus upload of exactly these partial uploads, if one was made."""
    row = txn.one(
        f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE owner_id = ? AND concat = 'final'"
        " AND parts = ?",
        (owner_id, parts),
    )
    return None if row is None else _upload(row)


def finals_waiting_on(txn: Txn, owner_id: int, partial_id: str) -> list[str]:
    """The caller's unfinished final uploads that list this partial upload."""
    rows = txn.all(
        "SELECT id FROM uploads WHERE owner_id = ? AND concat = 'final' AND status = ?"
        " AND ' ' || parts || ' ' LIKE ?",
        (owner_id, UPLOADING, f"% {partial_id} %"),
    )
    return [row[0] for row in rows]


def expired_uploads(txn: Txn, now: float, limit: int = 100) -> list[str]:
    rows = txn.all(
        "SELECT id FROM uploads WHERE status = ? AND expires_at <= ? LIMIT ?",
        (UPLOADING, now, limit),
    )
    return [row[0] for row in rows]
