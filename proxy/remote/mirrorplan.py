"""Planning a ``mirror-sync`` pass, inside one transaction: each blob still to be mirrored
gets exactly one responsible node among those holding a confirmed copy (the least loaded,
preferring one that is not leaving), each blob to restore gets a node with room, and every
up node gets its ``NodeWork``: what changed in its want-list since its cursor, or the whole
list (``proxy.remote.mirrorwants``).

No pass reads every blob: the blobs to assign are the ``local`` ones with a confirmed copy on
an up node, the ones to reassign the ``mirroring`` ones whose node is lost or holds no
confirmed copy, and both are read at most ``BATCH`` at a time (the rest the next pass).
"""

from __future__ import annotations

from common.db import Txn
from common.signing import replica_key
from proxy.cluster import nodestore
from proxy.cluster.nodestore import CONFIRMED, UP, Node
from proxy.cluster.placement import choose_nodes
from proxy.cluster.rules import candidates, leaving_nodes, lost_nodes
from proxy.remote import mirrorwants
from proxy.remote.mirrorwants import NodeWork
from proxy.remote.states import LOCAL, MIRRORING, REMOTE, RESTORING

BATCH = 5000


def plan(txn: Txn, now: float, connected: bool, grace: float) -> list[NodeWork]:
    """What every up node is to be sent; assignments and restore nodes are stored."""
    nodes = nodestore.list_nodes(txn)
    up = {n.name: n for n in nodes if n.status == UP}
    lost = lost_nodes(nodes, now, grace)
    leaving = leaving_nodes(nodes, now, grace)
    if connected:
        _assign(txn, up, lost, leaving)
    _plan_restores(txn, nodes, lost)
    return [mirrorwants.node_work(txn, node) for node in up.values()]


def _assign(txn: Txn, up: dict[str, Node], lost: set[str], leaving: set[str]) -> None:
    load = {name: 0 for name in up}
    for name, count in txn.all(
        "SELECT mirror_node, COUNT(*) FROM blobs WHERE remote_state = ?"
        " AND mirror_node IS NOT NULL GROUP BY mirror_node",
        (MIRRORING,),
    ):
        if name in load:
            load[name] = int(count)
    if not up:
        return
    marks = ", ".join("?" for _ in up)
    lost_marks = ", ".join("?" for _ in lost) or "NULL"
    stale = txn.all(
        "SELECT b.id, b.mirror_node FROM blobs b WHERE b.remote_state = ? AND"
        f" (b.mirror_node IN ({lost_marks}) OR NOT EXISTS (SELECT 1 FROM replicas r"
        " WHERE r.blob_id = b.id AND r.node = b.mirror_node AND r.state = ?))"
        " ORDER BY b.id LIMIT ?",
        (MIRRORING, *sorted(lost), CONFIRMED, BATCH),
    )
    fresh = txn.all(
        "SELECT b.id, b.mirror_node FROM blobs b WHERE b.remote_state = ? AND EXISTS"
        " (SELECT 1 FROM replicas r WHERE r.blob_id = b.id AND r.state = ?"
        f" AND r.node IN ({marks})) ORDER BY b.id LIMIT ?",
        (LOCAL, CONFIRMED, *sorted(up), BATCH),
    )
    rows = [(int(r[0]), r[1]) for r in [*stale, *fresh]]
    replicas = nodestore.replicas_of(txn, [blob_id for blob_id, _ in rows])
    for blob_id, was in rows:
        if was in load:
            load[was] -= 1
        holders = {r.node for r in replicas[blob_id] if r.state == CONFIRMED}
        choices = sorted(
            (n for n in holders if n in up and n not in leaving), key=lambda n: (load[n], n)
        )
        if not choices:
            choices = sorted((n for n in holders if n in up), key=lambda n: (load[n], n))
        assigned = choices[0] if choices else None
        if assigned is not None:
            load[assigned] += 1
        if assigned != was or assigned is None:
            txn.execute(
                "UPDATE blobs SET mirror_node = ?, remote_state = ? WHERE id = ?",
                (assigned, MIRRORING if assigned else LOCAL, blob_id),
            )


def _plan_restores(txn: Txn, nodes: list[Node], lost: set[str]) -> None:
    """A node for each blob to restore that has none (or a lost one)."""
    lost_marks = ", ".join("?" for _ in lost) or "NULL"
    rows = txn.all(
        "SELECT id, sha256, size FROM blobs WHERE remote_state = ?"
        f" AND (restore_node IS NULL OR restore_node IN ({lost_marks}))"
        " ORDER BY restore_requested_at, id LIMIT ?",
        (RESTORING, *sorted(lost), BATCH),
    )
    room = candidates(nodes)
    for blob_id, sha256, size in rows:
        blob_id, size = int(blob_id), int(size)
        known = txn.one(
            "SELECT COUNT(*), COUNT(sha256) FROM blob_parts WHERE blob_id = ?", (blob_id,)
        )
        if known is None or not int(known[0]) or int(known[0]) != int(known[1]):
            txn.execute(
                "UPDATE blobs SET remote_state = ?, restore_node = NULL, restore_detail = ?"
                " WHERE id = ?",
                (REMOTE, "cannot restore: the part checksums are not known", blob_id),
            )
            continue
        chosen = choose_nodes(room, size=size, count=1, used_zones=set(), exclude=set())
        node = chosen[0] if chosen else None
        txn.execute(
            "UPDATE blobs SET restore_node = ?, parts_restored = 0 WHERE id = ?", (node, blob_id)
        )
        if node is not None:
            # An uncache queued this replica's deletion on every node; on the node that now
            # restores it, that deletion must not run (it would remove the restored copy).
            txn.execute(
                "DELETE FROM replica_deletions WHERE node = ? AND replica = ?",
                (node, replica_key(blob_id, sha256)),
            )
