"""SQL for storage nodes, replicas and pending replica deletions."""

from __future__ import annotations

from dataclasses import dataclass

from common.db import Row, Txn
from common.errors import Conflict, NotFound

UP, DOWN, UNKNOWN = "up", "down", "unknown"
ACTIVE, DRAINING = "active", "draining"
PENDING, COPYING, CONFIRMED, FAILED, QUARANTINED = (
    "pending", "copying", "confirmed", "failed", "quarantined",
)  # fmt: skip


@dataclass(frozen=True)
class Node:
    name: str
    url: str
    rsync_url: str
    zone: str
    state: str  # active | draining (set by staff)
    status: str  # up | down | unknown (seen by the monitor)
    free_bytes: int | None
    total_bytes: int | None
    last_seen: float | None
    down_since: float | None
    rtt_ms: float | None
    missed_pings: int

    @property
    def public_status(self) -> str:
        """What the API shows: draining wins over up/down."""
        return DRAINING if self.state == DRAINING else (DOWN if self.status != UP else UP)


_NODE_COLUMNS = (
    "name, url, rsync_url, zone, state, status, free_bytes, total_bytes, last_seen,"
    " down_since, rtt_ms, missed_pings"
)


def _node(row: Row) -> Node:
    def opt_int(value: object) -> int | None:
        return None if value is None else int(value)  # type: ignore[call-overload]

    def opt_float(value: object) -> float | None:
        return None if value is None else float(value)  # type: ignore[arg-type]

    return Node(
        row[0], row[1], row[2], row[3], row[4], row[5], opt_int(row[6]), opt_int(row[7]),
        opt_float(row[8]), opt_float(row[9]), opt_float(row[10]), int(row[11]),
    )  # fmt: skip


def add_node(txn: Txn, name: str, url: str, rsync_url: str, zone: str, now: float) -> Node:
    row = txn.one(
        "INSERT INTO nodes (name, url, rsync_url, zone, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING RETURNING " + _NODE_COLUMNS,
        (name, url, rsync_url, zone, now),
    )
    if row is None:
        raise Conflict(f"A node named {name!r} exists already", field="name")
    return _node(row)


def list_nodes(txn: Txn) -> list[Node]:
    return [_node(row) for row in txn.all(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY name")]


def get_node(txn: Txn, name: str) -> Node:
    row = txn.one(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE name = ?", (name,))
    if row is None:
        raise NotFound("Node not found")
    return _node(row)


def replica_counts(txn: Txn) -> dict[str, int]:
    rows = txn.all(
        "SELECT node, COUNT(*) FROM replicas WHERE state = ? GROUP BY node", (CONFIRMED,)
    )
    return {row[0]: int(row[1]) for row in rows}


def update_node(txn: Txn, name: str, /, **changes: object) -> Node:
    allowed = {"url", "rsync_url", "zone", "state"}
    assert set(changes) <= allowed
    get_node(txn, name)
    for column, value in changes.items():
        txn.execute(f"UPDATE nodes SET {column} = ? WHERE name = ?", (value, name))
    return get_node(txn, name)


def record_ping(
    txn: Txn,
    name: str,
    *,
    now: float,
    free_bytes: int | None = None,
    total_bytes: int | None = None,
    rtt_ms: float | None = None,
    down_after: int = 3,
) -> tuple[str, str]:
    """Store one ping's outcome (``rtt_ms`` None: it failed); returns (old, new) status."""
    row = txn.one("SELECT status, missed_pings FROM nodes WHERE name = ?" + txn.for_update, (name,))
    if row is None:
        return UNKNOWN, UNKNOWN
    old, missed = row[0], int(row[1])
    if rtt_ms is not None:
        txn.execute(
            "UPDATE nodes SET status = ?, missed_pings = 0, free_bytes = ?, total_bytes = ?,"
            " rtt_ms = ?, last_seen = ?, down_since = NULL WHERE name = ?",
            (UP, free_bytes, total_bytes, rtt_ms, now, name),
        )
        return old, UP
    missed += 1
    new = DOWN if missed >= down_after or old != UP else UP
    txn.execute(
        "UPDATE nodes SET status = ?, missed_pings = ?,"
        " down_since = CASE WHEN ? = 'down' THEN COALESCE(down_since, ?) ELSE down_since END"
        " WHERE name = ?",
        (new, missed, new, now, name),
    )
    return old, new


def remove_node(txn: Txn, name: str) -> None:
    """Forget a node; refused while it holds the only copy of anything that can be reached
    (a confirmed copy on a node that is down does not count: it may never come back)."""
    get_node(txn, name)
    only = txn.scalar(
        "SELECT COUNT(*) FROM replicas r JOIN blobs b ON b.id = r.blob_id"
        " WHERE r.node = ? AND r.state = ? AND b.local = 0 AND NOT EXISTS ("
        "  SELECT 1 FROM replicas o JOIN nodes n ON n.name = o.node"
        "  WHERE o.blob_id = r.blob_id AND o.node <> r.node AND o.state = ? AND n.status = ?)",
        (name, CONFIRMED, CONFIRMED, UP),
    )
    if int(only or 0):
        raise Conflict(
            f"Node {name!r} holds the only copy of {int(only)} files; drain it first",
            only_copies=int(only),
        )
    txn.execute("DELETE FROM replicas WHERE node = ?", (name,))
    txn.execute("DELETE FROM replica_deletions WHERE node = ?", (name,))
    # Its S3 want-list and cursor (proxy.remote.mirrorwants) go with it: they would only
    # grow, and a node added later under this name starts from the whole list.
    txn.execute("DELETE FROM mirror_wants WHERE node = ?", (name,))
    txn.execute("DELETE FROM mirror_cursors WHERE node = ?", (name,))
    txn.execute("DELETE FROM nodes WHERE name = ?", (name,))


# ---------------------------------------------------------------- replicas


@dataclass(frozen=True)
class Replica:
    blob_id: int
    node: str
    state: str
    attempts: int
    next_attempt_at: float
    detail: str
    updated_at: float = 0.0


def replicas_of(txn: Txn, blob_ids: list[int]) -> dict[int, list[Replica]]:
    found: dict[int, list[Replica]] = {blob_id: [] for blob_id in blob_ids}
    if not blob_ids:
        return found
    marks = ", ".join("?" for _ in blob_ids)
    rows = txn.all(
        "SELECT blob_id, node, state, attempts, next_attempt_at, detail, updated_at FROM replicas"
        f" WHERE blob_id IN ({marks}) ORDER BY node",
        blob_ids,
    )
    for row in rows:
        found[int(row[0])].append(
            Replica(int(row[0]), row[1], row[2], int(row[3]), float(row[4]), row[5], float(row[6]))
        )
    return found


def confirmed_count(txn: Txn, blob_id: int) -> int:
    return int(
        txn.scalar(
            "SELECT COUNT(*) FROM replicas WHERE blob_id = ? AND state = ?", (blob_id, CONFIRMED)
        )
    )


def set_replica(
    txn: Txn,
    blob_id: int,
    node: str,
    state: str,
    now: float,
    *,
    detail: str = "",
    next_attempt_at: float = 0.0,
    failed: bool = False,
) -> None:
    """Create or update one replica's row (``failed`` counts an attempt)."""
    txn.execute(
        "INSERT INTO replicas (blob_id, node, state, attempts, next_attempt_at, detail, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (blob_id, node) DO UPDATE SET"
        " state = excluded.state, attempts = replicas.attempts + excluded.attempts,"
        " next_attempt_at = excluded.next_attempt_at, detail = excluded.detail,"
        " updated_at = excluded.updated_at",
        (blob_id, node, state, int(failed), next_attempt_at, detail, now),
    )


def drop_replica(txn: Txn, blob_id: int, node: str, replica_key: str) -> None:
    """Forget a replica and queue its removal from the node."""
    txn.execute("DELETE FROM replicas WHERE blob_id = ? AND node = ?", (blob_id, node))
    queue_deletion(txn, node, replica_key)


def queue_deletion(txn: Txn, node: str, replica_key: str) -> None:
    txn.execute(
        "INSERT INTO replica_deletions (node, replica) VALUES (?, ?)"
        " ON CONFLICT (node, replica) DO NOTHING",
        (node, replica_key),
    )


def due_deletions(txn: Txn, now: float, limit: int = 100) -> list[tuple[str, str]]:
    rows = txn.all(
        "SELECT d.node, d.replica FROM replica_deletions d JOIN nodes n ON n.name = d.node"
        " WHERE n.status = ? AND d.next_attempt_at <= ? LIMIT ?",
        (UP, now, limit),
    )
    return [(row[0], row[1]) for row in rows]


def deletion_done(txn: Txn, node: str, replica_key: str) -> None:
    txn.execute("DELETE FROM replica_deletions WHERE node = ? AND replica = ?", (node, replica_key))


def deletion_failed(txn: Txn, node: str, replica_key: str, retry_at: float) -> None:
    txn.execute(
        "UPDATE replica_deletions SET attempts = attempts + 1, next_attempt_at = ?"
        " WHERE node = ? AND replica = ?",
        (retry_at, node, replica_key),
    )
