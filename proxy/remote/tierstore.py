"""SQL of the remote tier's other work: uncache and cache (one blob, locked), what a file's
detail shows of its blob in the tier, the queue of S3 objects of deleted blobs, and each
node's mirror backlog."""

from __future__ import annotations

from typing import Any

from common.db import Txn
from common.errors import Conflict
from common.signing import replica_key
from proxy.cluster import nodestore
from proxy.remote.states import LOCAL, LOST, MIRRORED, MIRRORING, REMOTE, RESTORING

_SHARED = (
    "This file's content was stored before each account's content was kept apart, and "
    "files of another account still use it, so only staff can uncache it"
)


def uncache(txn: Txn, blob_id: int, now: float, owner_id: int | None = None) -> int:
    """Drop every replica of a mirrored, verified blob; how many. Already remote: 0.

    ``owner_id`` (None: staff) may only release content no other account's version uses:
    blobs are kept per owner (``proxy.catalog.store.dedup_key``), but one stored before that
    may still be shared, and one user's uncache must not take another's local copies."""
    if owner_id is not None and txn.scalar(
        "SELECT 1 FROM versions v JOIN files f ON f.id = v.file_id"
        " WHERE v.blob_id = ? AND f.owner_id <> ? LIMIT 1",
        (blob_id, owner_id),
    ):
        raise Conflict(_SHARED)
    row = txn.one(
        "SELECT sha256, remote_state, remote_verified, local FROM blobs WHERE id = ?"
        + txn.for_update,
        (blob_id,),
    )
    if row is None:
        raise Conflict("This file's content is gone")
    sha256, state, verified, local = row
    if state == REMOTE:
        return 0  # already uncached: nothing to do
    if state != MIRRORED or not int(verified):
        raise Conflict(
            "This file is not mirrored to S3 and verified yet, so its local copies are"
            f" kept (remote_state: {state})",
            remote_state=state,
        )
    if int(local):
        raise Conflict(
            "This file is still being placed on storage nodes; uncache it once that is done",
            remote_state=state,
        )
    replicas = nodestore.replicas_of(txn, [blob_id])[blob_id]
    for replica in replicas:
        nodestore.drop_replica(txn, blob_id, replica.node, replica_key(blob_id, sha256))
    txn.execute(
        "UPDATE blobs SET remote_state = ?, mirror_node = NULL, restore_detail = '' WHERE id = ?",
        (REMOTE, blob_id),
    )
    return len(replicas)


def cache(txn: Txn, blob_id: int, now: float) -> tuple[str, bool]:
    """Ask for a remote blob's restore; its state, and whether this call asked."""
    row = txn.one("SELECT remote_state FROM blobs WHERE id = ?" + txn.for_update, (blob_id,))
    if row is None:
        raise Conflict("This file's content is gone")
    state = row[0]
    if state == LOST:
        raise Conflict("This file's content is in neither a node nor the S3 bucket")
    if state != REMOTE:
        return state, False  # local, mirroring, mirrored: cached; restoring: joined
    txn.execute(
        "UPDATE blobs SET remote_state = ?, restore_requested_at = ?, restore_node = NULL,"
        " parts_restored = 0, restore_detail = '' WHERE id = ?",
        (RESTORING, now, blob_id),
    )
    return RESTORING, True


def due_deletions(txn: Txn, now: float) -> list[tuple[str, str, int]]:
    rows = txn.all(
        "SELECT object_key, sha256, attempts FROM s3_deletions WHERE next_attempt_at <= ?"
        " ORDER BY next_attempt_at LIMIT 100",
        (now,),
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


def still_unused(txn: Txn, key: str, sha256: str) -> bool:
    """Whether the object may go: no blob has that content again (if one has, the queued
    deletion is dropped and the object stays for the new blob)."""
    if txn.scalar("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,)) is None:
        return True
    txn.execute("DELETE FROM s3_deletions WHERE object_key = ?", (key,))
    return False


def deletion_failed(txn: Txn, key: str, retry_at: float, detail: str) -> None:
    txn.execute(
        "UPDATE s3_deletions SET attempts = attempts + 1, next_attempt_at = ?, detail = ?"
        " WHERE object_key = ?",
        (retry_at, detail, key),
    )


def deletion_done(txn: Txn, key: str, sha256: str) -> None:
    txn.execute("DELETE FROM s3_deletions WHERE object_key = ?", (key,))
    # The same content may have been uploaded again while the object was being removed: its
    # mirror (perhaps satisfied by the object we just removed) must be made again.
    txn.execute(
        "UPDATE blobs SET remote_state = ?, remote_verified = 0, mirror_node = NULL"
        " WHERE sha256 = ? AND remote_state IN (?, ?)",
        (LOCAL, sha256, MIRRORING, MIRRORED),
    )


def remote_view(txn: Txn, blob_id: int) -> dict[str, Any]:
    row = txn.one(
        "SELECT remote_state, remote_verified, mirror_node, mirror_detail, restore_node,"
        " parts_restored, restore_detail FROM blobs WHERE id = ?",
        (blob_id,),
    )
    if row is None:
        return {"remote_state": LOST, "parts": []}
    state, verified, mirror_node, mirror_detail, restore_node, restored, restore_detail = row
    parts = [
        {"index": int(i), "offset": int(s), "size": int(z), "sha256": h, "remote_state": rs}
        for i, s, z, h, rs in txn.all(
            "SELECT idx, start, size, sha256, remote_state FROM blob_parts WHERE blob_id = ?"
            " ORDER BY idx",
            (blob_id,),
        )
    ]
    return {
        "remote_state": state,
        "remote_verified": bool(verified),
        "mirror_node": mirror_node,
        "mirror_detail": mirror_detail,
        "parts": parts,
        "restore": {
            "node": restore_node,
            "parts_restored": int(restored),
            "parts_total": len(parts),
            "detail": restore_detail,
        },
    }


def mirror_backlog(txn: Txn) -> dict[str, int]:
    """Per node, the blobs assigned to it for mirroring to S3 that are not mirrored yet."""
    rows = txn.all(
        "SELECT mirror_node, COUNT(*) FROM blobs WHERE remote_state = ?"
        " AND mirror_node IS NOT NULL GROUP BY mirror_node",
        (MIRRORING,),
    )
    return {row[0]: int(row[1]) for row in rows}
