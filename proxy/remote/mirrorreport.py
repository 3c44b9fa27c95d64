"""Recording a node's ``mirror-sync`` answer, inside one transaction: the parts' states, blobs
mirrored and verified in S3, restores finished (a confirmed replica on that node) or failed
(the blob stays ``remote`` with the node's reason). Only what the node was asked about, and
is still its job, is taken; the answer is untrusted input."""

from __future__ import annotations

from typing import Any

from common.db import Txn
from common.signing import valid_replica_key
from proxy.cluster import nodestore
from proxy.cluster.nodestore import CONFIRMED
from proxy.remote.mirrorplan import NodeWork
from proxy.remote.states import MIRRORED, MIRRORING, REMOTE, RESTORING


def _blob_id_of(key: object) -> int | None:
    if not isinstance(key, str) or not valid_replica_key(key):
        return None
    return int(key.partition("-")[0])


def ingest(
    txn: Txn, node: str, work: NodeWork, body: dict[str, Any], now: float
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Record a node's answer; returns the system-log entries it deserves."""
    changes: list[tuple[str, str, str, dict[str, Any]]] = []
    asked = {t.blob_id for t in work.mirror}
    for item in body.get("mirror") or []:
        blob_id = _blob_id_of(item.get("key") if isinstance(item, dict) else None)
        if blob_id is None or blob_id not in asked:
            continue
        row = txn.one(
            "SELECT remote_state, mirror_node FROM blobs WHERE id = ?" + txn.for_update,
            (blob_id,),
        )
        if row is None or row[0] != MIRRORING or row[1] != node:
            continue  # reassigned or deleted since the plan
        _store_parts(txn, blob_id, item.get("parts"))
        state, detail = item.get("state"), str(item.get("detail") or "")[:500]
        if state == "mirrored" and item.get("verified") is True:
            txn.execute(
                "UPDATE blobs SET remote_state = ?, remote_verified = 1, mirror_detail = ''"
                " WHERE id = ?",
                (MIRRORED, blob_id),
            )
            changes.append(("info", "mirror", f"blob {blob_id} mirrored to S3 by {node}",
                            {"blob": blob_id}))  # fmt: skip
        else:
            txn.execute("UPDATE blobs SET mirror_detail = ? WHERE id = ?", (detail, blob_id))
    restoring = {t.blob_id: t for t, _ in work.restore}
    totals = {t.blob_id: len(parts) for t, parts in work.restore}
    for item in body.get("restore") or []:
        blob_id = _blob_id_of(item.get("key") if isinstance(item, dict) else None)
        if blob_id is None or blob_id not in restoring:
            continue
        row = txn.one(
            "SELECT remote_state, restore_node FROM blobs WHERE id = ?" + txn.for_update,
            (blob_id,),
        )
        if row is None or row[0] != RESTORING or row[1] != node:
            continue
        state = item.get("state")
        done = item.get("parts_restored")
        done = done if isinstance(done, int) and not isinstance(done, bool) else 0
        if state == "restored":
            nodestore.set_replica(txn, blob_id, node, CONFIRMED, now)
            txn.execute(
                "UPDATE blobs SET remote_state = ?, restore_node = NULL, parts_restored = ?,"
                " restore_detail = '' WHERE id = ?",
                (MIRRORED, totals[blob_id], blob_id),
            )
            changes.append(("info", "restore", f"blob {blob_id} restored from S3 on {node}",
                            {"blob": blob_id}))  # fmt: skip
        elif state == "failed":
            detail = str(item.get("detail") or "restore failed")[:500]
            txn.execute(
                "UPDATE blobs SET remote_state = ?, restore_node = NULL, parts_restored = 0,"
                " restore_detail = ? WHERE id = ?",
                (REMOTE, detail, blob_id),
            )
            changes.append(("error", "restore",
                            f"restore of blob {blob_id} on {node} failed: {detail}",
                            {"blob": blob_id}))  # fmt: skip
        else:
            txn.execute("UPDATE blobs SET parts_restored = ? WHERE id = ?", (done, blob_id))
    return changes


def _store_parts(txn: Txn, blob_id: int, parts: object) -> None:
    if not isinstance(parts, list):
        return
    txn.execute("DELETE FROM blob_parts WHERE blob_id = ?", (blob_id,))
    for part in parts:
        if not isinstance(part, dict):
            continue
        index, start, size = part.get("index"), part.get("offset"), part.get("size")
        digest, state = part.get("sha256"), part.get("remote_state")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, start, size)):
            continue
        if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
            continue
        if state not in {"pending", "uploading", "uploaded"}:
            continue
        txn.execute(
            "INSERT INTO blob_parts (blob_id, idx, start, size, sha256, remote_state)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (blob_id, index, start, size, digest, state),
        )
