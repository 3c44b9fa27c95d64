"""Recording a node's ``mirror-sync`` answer, inside one transaction: the parts' states, blobs
mirrored and verified in S3, restores finished (a confirmed replica on that node) or failed
(the blob stays ``remote`` with the node's reason), and the node's cursor
(``proxy.remote.mirrorwants.acknowledge``). Only what is still the node's job in the database
is taken (the node reports on every blob it holds, not only those in this sync's delta); the
answer is untrusted input.

What changed is told to the owners of the files using each blob, in the same transaction:
``part.mirrored`` for each part newly uploaded, ``file.backed_up``, ``restore.progress`` when
the count of restored parts moves, ``file.restored`` (and ``replica.confirmed``). A report
that repeats what the last one said records nothing."""

from __future__ import annotations

from typing import Any

from common.db import Txn
from common.signing import valid_replica_key
from proxy.cluster import nodestore
from proxy.cluster.nodestore import CONFIRMED
from proxy.events import kinds
from proxy.events.emit import Emitter
from proxy.remote import mirrorwants
from proxy.remote.mirrorwants import NodeWork
from proxy.remote.states import MIRRORED, MIRRORING, REMOTE, RESTORING

Change = tuple[str, str, str, dict[str, Any]]  # a system-log entry: level, event, message, data
_UPLOADED = "uploaded"


def _blob_id_of(key: object) -> int | None:
    if not isinstance(key, str) or not valid_replica_key(key):
        return None
    return int(key.partition("-")[0])


def _items(body: dict[str, Any], name: str) -> list[tuple[int, dict[str, Any]]]:
    """The answer's entries under ``name`` with a well-formed key, each blob once."""
    found: dict[int, dict[str, Any]] = {}
    items = body.get(name)
    for item in items if isinstance(items, list) else []:
        blob_id = _blob_id_of(item.get("key") if isinstance(item, dict) else None)
        if blob_id is not None:
            found.setdefault(blob_id, item)
    return list(found.items())


def record_answer(
    txn: Txn, node: str, work: NodeWork, body: dict[str, Any], emitter: Emitter
) -> tuple[list[Change], bool]:
    """``ingest``, then the node's cursor; False if the node refused the delta."""
    return ingest(txn, node, work, body, emitter), mirrorwants.acknowledge(txn, work, body)


def ingest(
    txn: Txn, node: str, work: NodeWork, body: dict[str, Any], emitter: Emitter
) -> list[Change]:
    """Record a node's answer; returns the system-log entries it deserves."""
    changes: list[Change] = []
    for blob_id, item in _items(body, "mirror"):
        changes.extend(_mirrored(txn, node, blob_id, item, emitter))
    totals = {t.blob_id: len(parts) for t, parts in work.restore}
    for blob_id, item in _items(body, "restore"):
        total = totals.get(blob_id)
        if total is None:
            total = int(txn.scalar("SELECT COUNT(*) FROM blob_parts WHERE blob_id = ?", (blob_id,)))
        changes.extend(_restored(txn, node, blob_id, item, total, emitter))
    return changes


def _mirrored(
    txn: Txn, node: str, blob_id: int, item: dict[str, Any], emitter: Emitter
) -> list[Change]:
    row = txn.one(
        "SELECT remote_state, mirror_node FROM blobs WHERE id = ?" + txn.for_update, (blob_id,)
    )
    if row is None or row[0] != MIRRORING or row[1] != node:
        return []  # reassigned or deleted since the plan
    _store_parts(txn, blob_id, item.get("parts"), emitter)
    state, detail = item.get("state"), str(item.get("detail") or "")[:500]
    if state == "mirrored" and item.get("verified") is True:
        txn.execute(
            "UPDATE blobs SET remote_state = ?, remote_verified = 1, mirror_detail = ''"
            " WHERE id = ?",
            (MIRRORED, blob_id),
        )
        emitter.for_blob(txn, blob_id, kinds.FILE_BACKED_UP)
        return [("info", "mirror", f"blob {blob_id} mirrored to S3 by {node}", {"blob": blob_id})]
    txn.execute("UPDATE blobs SET mirror_detail = ? WHERE id = ?", (detail, blob_id))
    return []


def _restored(
    txn: Txn, node: str, blob_id: int, item: dict[str, Any], total: int, emitter: Emitter
) -> list[Change]:
    row = txn.one(
        "SELECT remote_state, restore_node, parts_restored FROM blobs WHERE id = ?"
        + txn.for_update,
        (blob_id,),
    )
    if row is None or row[0] != RESTORING or row[1] != node:
        return []
    state = item.get("state")
    done = item.get("parts_restored")
    done = done if isinstance(done, int) and not isinstance(done, bool) else 0
    if state == "restored":
        nodestore.set_replica(txn, blob_id, node, CONFIRMED, emitter.now)
        txn.execute(
            "UPDATE blobs SET remote_state = ?, restore_node = NULL, parts_restored = ?,"
            " restore_detail = '' WHERE id = ?",
            (MIRRORED, total, blob_id),
        )
        emitter.for_blob(txn, blob_id, kinds.FILE_RESTORED)
        replicas = nodestore.confirmed_count(txn, blob_id)
        emitter.for_blob(txn, blob_id, kinds.REPLICA_CONFIRMED, replicas=replicas)
        return [("info", "restore", f"blob {blob_id} restored from S3 on {node}",
                 {"blob": blob_id})]  # fmt: skip
    if state == "failed":
        detail = str(item.get("detail") or "restore failed")[:500]
        txn.execute(
            "UPDATE blobs SET remote_state = ?, restore_node = NULL, parts_restored = 0,"
            " restore_detail = ? WHERE id = ?",
            (REMOTE, detail, blob_id),
        )
        return [("error", "restore", f"restore of blob {blob_id} on {node} failed: {detail}",
                 {"blob": blob_id})]  # fmt: skip
    txn.execute("UPDATE blobs SET parts_restored = ? WHERE id = ?", (done, blob_id))
    if done != int(row[2]):
        emitter.for_blob(txn, blob_id, kinds.RESTORE_PROGRESS, parts_done=done, parts_total=total)
    return []


def _store_parts(txn: Txn, blob_id: int, parts: object, emitter: Emitter) -> None:
    """Replace the blob's part list with the node's; tell each part newly uploaded."""
    if not isinstance(parts, list):
        return
    before = {
        int(row[0])
        for row in txn.all(
            "SELECT idx FROM blob_parts WHERE blob_id = ? AND remote_state = ?",
            (blob_id, _UPLOADED),
        )
    }
    txn.execute("DELETE FROM blob_parts WHERE blob_id = ?", (blob_id,))
    stored: dict[int, str] = {}
    for part in parts:
        row = _part_row(part)
        if row is None:
            continue
        txn.execute(
            "INSERT INTO blob_parts (blob_id, idx, start, size, sha256, remote_state)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (blob_id, *row),
        )
        stored[row[0]] = row[4]
    uploaded = {index for index, state in stored.items() if state == _UPLOADED}
    new = sorted(uploaded - before)
    for done, index in enumerate(new, start=len(uploaded) - len(new) + 1):
        emitter.for_blob(
            txn, blob_id, kinds.PART_MIRRORED,
            index=index, parts_done=done, parts_total=len(stored),
        )  # fmt: skip


def _part_row(part: object) -> tuple[int, int, int, str | None, str] | None:
    """One reported part as (index, offset, size, sha256, state), or None if malformed."""
    if not isinstance(part, dict):
        return None
    index, start, size = part.get("index"), part.get("offset"), part.get("size")
    digest, state = part.get("sha256"), part.get("remote_state")
    numbers = [v for v in (index, start, size) if isinstance(v, int) and not isinstance(v, bool)]
    if len(numbers) != 3:
        return None
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
        return None
    if not isinstance(state, str) or state not in {"pending", "uploading", _UPLOADED}:
        return None
    return numbers[0], numbers[1], numbers[2], digest, state
