"""Replication's pure rules over node and replica views: which nodes take new copies, which
are lost past the grace period or leaving (drained), and which confirmed copies to keep."""

from __future__ import annotations

from proxy.cluster.nodestore import ACTIVE, UP, Node, Replica
from proxy.cluster.placement import Candidate

LOST_NOTE = "written off: its node was down past the grace period"


def candidates(nodes: list[Node]) -> list[Candidate]:
    return [
        Candidate(n.name, n.zone, n.free_bytes or 0, n.rtt_ms or 0.0)
        for n in nodes
        if n.status == UP and n.state == ACTIVE
    ]


def lost_nodes(nodes: list[Node], now: float, grace: float) -> set[str]:
    """Nodes down for longer than the grace period: their replicas no longer count."""
    return {
        n.name
        for n in nodes
        if n.status != UP and n.down_since is not None and now - n.down_since > grace
    }


def leaving_nodes(nodes: list[Node], now: float, grace: float) -> set[str]:
    """Nodes whose copies no longer count: lost ones, and those staff are draining (their
    copies are made again elsewhere, then dropped as surplus)."""
    return lost_nodes(nodes, now, grace) | {n.name for n in nodes if n.state != ACTIVE}


def keepers_first(
    replicas: list[Replica],
    zones: dict[str, str],
    target: int,
    leaving: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[Replica]:
    """Confirmed copies ordered so that the first ``target`` are the ones to keep: spread over
    as many zones as possible, then copies on nodes that stay and that were not written off
    while their node was lost, then the newest. What comes after them is surplus (a node
    back from a long absence, or one being drained)."""
    rest = sorted(
        replicas, key=lambda r: (r.node in leaving or r.detail == LOST_NOTE, -r.updated_at)
    )
    kept: list[Replica] = []
    while rest and len(kept) < target:
        seen = {zones.get(r.node) for r in kept}
        pick = next((r for r in rest if zones.get(r.node) not in seen), rest[0])
        rest.remove(pick)
        kept.append(pick)
    return kept + rest
