"""Each node's want-list by cursor: what changed since the node last acknowledged a sync.

``mirror_wants`` holds, per node, one row for each blob the node has been asked to mirror or
restore (``gone = 1`` once it is withdrawn, until the node acknowledges that), each numbered
with the node's change number (``seq``) of its latest change; ``mirror_cursors`` holds per
node the id of its journal (``state``), the newest change it acknowledged (``acked``) and the
newest change numbered (``seq``).

Each pass (inside the planning transaction), for every up node:

1. **Record changes** (``record_changes``): blobs now assigned to it (``mirroring`` with
   ``mirror_node`` = it, ``restoring`` with ``restore_node`` = it) without a live row get
   one; live rows whose blob is no longer so (mirrored, reassigned, uncached, deleted) are
   withdrawn. Both are anti-joins over that node's rows and indexes, ``BATCH`` at a time.
2. **Build its work** (``node_work``): with a known journal, the rows changed after
   ``acked`` (``BATCH`` at most, oldest first); without one (never synced, or its journal is
   new or behind), every live row: the whole list.

When the node answers (``acknowledge``, in the report's transaction), its cursor moves to
what it says it durably recorded, and withdrawals it has are deleted. The node numbers the
changes of its own records too (per run, in memory): the proxy keeps the newest number of
the answer it recorded and sends it back, and the node reports only the records changed
since (or asked for again); a whole list, or a node run anew, reports everything.

A node that refused a delta (its journal is not the one it was made for, or older) has its
journal forgotten, and gets the whole list at once. A change is numbered in the same
transaction that plans it, so a proxy restarted mid-sync sends again everything after the
last acknowledged change: the node takes a delta that starts at or before its own cursor
(each change says what the blob's entry is now, so taking one twice changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.db import Txn
from common.signing import replica_key
from proxy.cluster.nodestore import Node
from proxy.remote.states import MIRRORING, RESTORING

BATCH = 5000
MIRROR, RESTORE = "mirror", "restore"
_ASSIGNED = {MIRROR: ("mirror_node", MIRRORING), RESTORE: ("restore_node", RESTORING)}


@dataclass(frozen=True)
class BlobTask:
    blob_id: int
    sha256: str
    md5: str
    size: int

    @property
    def key(self) -> str:
        return replica_key(self.blob_id, self.sha256)

    def wire(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "md5": self.md5, "sha256": self.sha256}


@dataclass
class NodeWork:
    """What one node is sent: blobs added (or the whole list), withdrawn, and the cursor."""

    node: Node
    mirror: list[BlobTask]
    restore: list[tuple[BlobTask, list[dict[str, Any]]]]
    withdraw_mirror: list[str] = field(default_factory=list)
    withdraw_restore: list[str] = field(default_factory=list)
    state: str | None = None  # the node's journal the delta is for
    since: int | None = None  # None: the whole list
    to: int = 0
    reported: tuple[str, int] | None = None  # the node's run and change last recorded

    def wire(self) -> dict[str, Any]:
        """The want-list part of the sync body."""
        body: dict[str, Any] = {
            "mirror": [t.wire() for t in self.mirror],
            "restore": [{**t.wire(), "parts": parts} for t, parts in self.restore],
            "cursor": {"state": self.state, "since": self.since, "to": self.to},
        }
        if self.since is not None:
            body["withdraw"] = {"mirror": self.withdraw_mirror, "restore": self.withdraw_restore}
            if self.reported is not None:
                body["reported"] = {"boot": self.reported[0], "at": self.reported[1]}
        return body


def _cursor(txn: Txn, node: str) -> tuple[str | None, int, int, tuple[str, int] | None]:
    row = txn.one(
        "SELECT state, acked, seq, report_boot, report_at FROM mirror_cursors WHERE node = ?"
        + txn.for_update,
        (node,),
    )
    if row is None:
        txn.execute(
            "INSERT INTO mirror_cursors (node) VALUES (?) ON CONFLICT (node) DO NOTHING", (node,)
        )
        return None, 0, 0, None
    reported = None if row[3] is None else (str(row[3]), int(row[4]))
    return row[0], int(row[1]), int(row[2]), reported


def record_changes(txn: Txn, node: str) -> int:
    """Number the node's want-list changes since the last pass; the newest change number."""
    _, _, seq, _ = _cursor(txn, node)
    for kind, (column, state) in _ASSIGNED.items():
        added = txn.all(
            f"SELECT b.id, b.sha256 FROM blobs b WHERE b.{column} = ? AND b.remote_state = ?"
            " AND NOT EXISTS (SELECT 1 FROM mirror_wants w WHERE w.node = ? AND w.kind = ?"
            " AND w.blob_id = b.id AND w.gone = 0) ORDER BY b.id LIMIT ?",
            (node, state, node, kind, BATCH),
        )
        for blob_id, sha256 in added:
            seq += 1
            txn.execute(
                "INSERT INTO mirror_wants (node, kind, blob_id, key, seq, gone)"
                " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (node, kind, blob_id)"
                " DO UPDATE SET key = excluded.key, seq = excluded.seq, gone = 0",
                (node, kind, int(blob_id), replica_key(int(blob_id), sha256), seq),
            )
        withdrawn = txn.all(
            "SELECT w.blob_id FROM mirror_wants w WHERE w.node = ? AND w.kind = ?"
            " AND w.gone = 0 AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.id = w.blob_id"
            f" AND b.{column} = ? AND b.remote_state = ?) ORDER BY w.blob_id LIMIT ?",
            (node, kind, node, state, BATCH),
        )
        for (blob_id,) in withdrawn:
            seq += 1
            txn.execute(
                "UPDATE mirror_wants SET gone = 1, seq = ? WHERE node = ? AND kind = ?"
                " AND blob_id = ?",
                (seq, node, kind, int(blob_id)),
            )
    txn.execute("UPDATE mirror_cursors SET seq = ? WHERE node = ?", (seq, node))
    return seq


_ROWS = (
    "SELECT w.kind, w.blob_id, w.key, w.gone, w.seq, b.sha256, b.md5, b.size"
    " FROM mirror_wants w LEFT JOIN blobs b ON b.id = w.blob_id"
)


def node_work(txn: Txn, node: Node) -> NodeWork:
    """Record the node's changes, then what it is to be sent: the delta after its
    acknowledged cursor, or (no journal known) the whole list."""
    seq = record_changes(txn, node.name)
    state, acked, _, reported = _cursor(txn, node.name)
    if state is None:
        rows = txn.all(_ROWS + " WHERE w.node = ? AND w.gone = 0 ORDER BY w.seq", (node.name,))
        work = NodeWork(node, [], [], state=None, since=None, to=seq)
    else:
        rows = txn.all(
            _ROWS + " WHERE w.node = ? AND w.seq > ? ORDER BY w.seq LIMIT ?",
            (node.name, acked, BATCH),
        )
        last = int(rows[-1][4]) if rows else acked
        work = NodeWork(node, [], [], state=state, since=acked, to=last, reported=reported)
    for kind, blob_id, key, gone, _seq, sha256, md5, size in rows:
        task = (
            None if int(gone) or sha256 is None else BlobTask(int(blob_id), sha256, md5, int(size))
        )
        if task is None:
            if work.since is not None:
                (work.withdraw_mirror if kind == MIRROR else work.withdraw_restore).append(key)
        elif kind == MIRROR:
            work.mirror.append(task)
        else:
            parts = _parts(txn, task.blob_id)
            if parts is not None:
                work.restore.append((task, parts))
            elif work.since is not None:
                work.withdraw_restore.append(key)
    return work


def _parts(txn: Txn, blob_id: int) -> list[dict[str, Any]] | None:
    parts = [
        {"index": int(i), "offset": int(start), "size": int(size), "sha256": digest}
        for i, start, size, digest in txn.all(
            "SELECT idx, start, size, sha256 FROM blob_parts WHERE blob_id = ? ORDER BY idx",
            (blob_id,),
        )
    ]
    return parts if parts and all(p["sha256"] for p in parts) else None


def acknowledge(txn: Txn, work: NodeWork, body: dict[str, Any]) -> bool:
    """Move the node's cursor to what its answer says it recorded; False if it refused the
    delta (or said nothing usable), after which it gets the whole list. The node's numbering
    of its reports is kept too (its report was recorded in this same transaction)."""
    node = work.node.name
    reported = body.get("reported")
    boot = reported.get("boot") if isinstance(reported, dict) else None
    change = reported.get("at") if isinstance(reported, dict) else None
    usable = isinstance(boot, str) and 0 < len(boot) <= 64
    usable = usable and isinstance(change, int) and not isinstance(change, bool) and change >= 0
    txn.execute(
        "UPDATE mirror_cursors SET report_boot = ?, report_at = ? WHERE node = ?",
        (boot if usable else None, change if usable else 0, node),
    )
    cursor = body.get("cursor")
    state = cursor.get("state") if isinstance(cursor, dict) else None
    at = cursor.get("at") if isinstance(cursor, dict) else None
    if (
        body.get("applied") is True
        and isinstance(state, str)
        and 0 < len(state) <= 64
        and at == work.to
        and not isinstance(at, bool)
    ):
        txn.execute(
            "UPDATE mirror_cursors SET state = ?, acked = ? WHERE node = ?", (state, at, node)
        )
        txn.execute("DELETE FROM mirror_wants WHERE node = ? AND gone = 1 AND seq <= ?", (node, at))
        return True
    txn.execute("UPDATE mirror_cursors SET state = NULL WHERE node = ?", (node,))
    return False
