"""Planning a ``mirror-sync`` pass, inside one transaction: each blob still to be mirrored
gets exactly one responsible node among those holding a confirmed copy (the least loaded,
preferring one that is not leaving), each blob to restore gets a node with room, and every
up node gets its ``NodeWork``: the want-list it is sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.db import Txn
from common.signing import replica_key
from proxy.cluster import nodestore
from proxy.cluster.nodestore import CONFIRMED, UP, Node
from proxy.cluster.placement import choose_nodes
from proxy.cluster.rules import candidates, leaving_nodes, lost_nodes
from proxy.remote.states import LOCAL, MIRRORING, REMOTE, RESTORING


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
    node: Node
    mirror: list[BlobTask]
    restore: list[tuple[BlobTask, list[dict[str, Any]]]]


def plan(txn: Txn, now: float, connected: bool, grace: float) -> list[NodeWork]:
    """What every up node is to be sent; assignments and restore nodes are stored."""
    nodes = nodestore.list_nodes(txn)
    up = {n.name: n for n in nodes if n.status == UP}
    lost = lost_nodes(nodes, now, grace)
    leaving = leaving_nodes(nodes, now, grace)
    work = {name: NodeWork(node, [], []) for name, node in up.items()}
    if connected:
        _assign(txn, up, lost, leaving, work)
    _plan_restores(txn, nodes, lost, work)
    return list(work.values())


def _assign(
    txn: Txn,
    up: dict[str, Node],
    lost: set[str],
    leaving: set[str],
    work: dict[str, NodeWork],
) -> None:
    rows = txn.all(
        "SELECT id, sha256, md5, size, mirror_node FROM blobs"
        " WHERE remote_state IN (?, ?) ORDER BY id",
        (LOCAL, MIRRORING),
    )
    replicas = nodestore.replicas_of(txn, [int(r[0]) for r in rows])
    load = {name: 0 for name in up}
    for row in rows:
        if row[4] in load:
            load[row[4]] += 1
    for blob_id, sha256, md5, size, assigned in rows:
        blob_id, row_assigned = int(blob_id), assigned
        holders = {r.node for r in replicas[blob_id] if r.state == CONFIRMED}
        keep = assigned is not None and assigned in holders and assigned not in lost
        if not keep:
            choices = sorted(
                (n for n in holders if n in up and n not in leaving),
                key=lambda n: (load[n], n),
            )
            if not choices:
                choices = sorted((n for n in holders if n in up), key=lambda n: (load[n], n))
            assigned = choices[0] if choices else None
            if assigned is not None:
                load[assigned] += 1
            if assigned is not None or row_assigned is not None:
                txn.execute(
                    "UPDATE blobs SET mirror_node = ?, remote_state = ? WHERE id = ?",
                    (assigned, MIRRORING if assigned else LOCAL, blob_id),
                )
        if assigned in work:
            work[assigned].mirror.append(BlobTask(blob_id, sha256, md5, int(size)))


def _plan_restores(txn: Txn, nodes: list[Node], lost: set[str], work: dict[str, NodeWork]) -> None:
    rows = txn.all(
        "SELECT id, sha256, md5, size, restore_node FROM blobs WHERE remote_state = ?"
        " ORDER BY restore_requested_at, id",
        (RESTORING,),
    )
    room = candidates(nodes)
    for blob_id, sha256, md5, size, node in rows:
        blob_id, size = int(blob_id), int(size)
        if node is None or node in lost:
            chosen = choose_nodes(room, size=size, count=1, used_zones=set(), exclude=set())
            node = chosen[0] if chosen else None
            txn.execute(
                "UPDATE blobs SET restore_node = ?, parts_restored = 0 WHERE id = ?",
                (node, blob_id),
            )
            if node is None:
                continue
        # An uncache queued this replica's deletion on every node; on the node that now
        # restores it, that deletion must not run (it would remove the restored copy).
        txn.execute(
            "DELETE FROM replica_deletions WHERE node = ? AND replica = ?",
            (node, replica_key(blob_id, sha256)),
        )
        if node not in work:
            continue  # down for now: its restore resumes when it answers again
        parts = [
            {"index": int(i), "offset": int(start), "size": int(sz), "sha256": digest}
            for i, start, sz, digest in txn.all(
                "SELECT idx, start, size, sha256 FROM blob_parts WHERE blob_id = ? ORDER BY idx",
                (blob_id,),
            )
        ]
        if not parts or any(p["sha256"] is None for p in parts):
            txn.execute(
                "UPDATE blobs SET remote_state = ?, restore_node = NULL, restore_detail = ?"
                " WHERE id = ?",
                (REMOTE, "cannot restore: the part checksums are not known", blob_id),
            )
            continue
        work[node].restore.append((BlobTask(blob_id, sha256, md5, size), parts))
