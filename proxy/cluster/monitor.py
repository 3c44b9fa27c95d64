"""Watching the storage nodes: ``NodeMonitor`` pings each node's health and records up/down,
``Scrubber`` asks nodes to re-hash their confirmed replicas; ``note`` is how the cluster's
loops tell staff (the system log when there is one, else Twisted's log)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from common.db import Database, Txn
from common.signing import replica_key
from proxy.cluster import nodestore
from proxy.cluster.nodeapi import NodeApi
from proxy.cluster.nodestore import CONFIRMED, QUARANTINED, UP, Node
from proxy.events import kinds
from proxy.events.emit import NO_WAKING, Emitter, Waker

if TYPE_CHECKING:
    from proxy.ops.systemlog import SystemLog

log = Logger()


async def note(syslog: SystemLog | None, level: str, event: str, message: str, **data: Any) -> None:
    """Into the system log (which also logs it) when there is one, else Twisted's log only."""
    if syslog is not None:
        await syslog.record(level, event, message, **data)
    else:
        log.emit(LogLevel.lookupByName(level), "{message}", message=message)


class NodeMonitor:
    """Pings every node's /health; records free space, round trip and up/down."""

    def __init__(
        self,
        *,
        db: Database,
        client: NodeApi,
        clock: IReactorTime,
        down_after: int,
        syslog: SystemLog | None = None,
        waker: Waker = NO_WAKING,
        on_node_up: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_node_up`` is called once each time a node is seen up after it was not (a new
        node's first good ping, a node back from down): the replicator's ``kick``, so the
        copies waiting for it start now rather than at the replication job's next tick."""
        self._db = db
        self._client = client
        self._clock = clock
        self._down_after = down_after
        self._syslog = syslog
        self._waker = waker
        self._on_node_up = on_node_up

    async def run_once(self) -> None:
        nodes = await self._db.run(nodestore.list_nodes)
        pings = [ensureDeferred(self._ping(node)) for node in nodes]
        await DeferredList(pings, consumeErrors=True)

    async def _ping(self, node: Node) -> None:
        started = time.monotonic()
        try:
            health = await self._client.health(node.url)
            rtt = (time.monotonic() - started) * 1000
            free, total = int(health["free_bytes"]), int(health["total_bytes"])
            ok = health.get("status") == "ok"
        except Exception as exc:
            log.debug("ping of {node} failed: {exc}", node=node.name, exc=exc)
            ok, rtt, free, total = False, 0.0, 0, 0
        emitter = Emitter(self._clock.seconds())

        def record(txn: Txn) -> tuple[str, str]:
            old, new = nodestore.record_ping(
                txn, node.name, now=emitter.now, free_bytes=free if ok else None,
                total_bytes=total if ok else None, rtt_ms=rtt if ok else None,
                down_after=self._down_after,
            )  # fmt: skip
            if old != new:
                emitter.for_staff(txn, kinds.NODE_STATUS, node=node.name, status=new, was=old)
            return old, new

        old, new = await self._db.run(record)
        self._waker.wake(emitter.users)
        if old != new:
            if new == UP:
                self._on_node_up()
            await note(
                self._syslog, "info" if new == UP else "warn", f"node.{new}",
                f"node {node.name} is {new}", node=node.name, was=old,
            )  # fmt: skip


SCRUB_BATCH = 500  # replicas a scrub pass reads from the database at a time


class Scrubber:
    """Asks nodes to re-hash every confirmed replica; a bad one is quarantined, which makes
    the replicator re-create it from a good copy."""

    def __init__(self, *, db: Database, client: NodeApi, clock: IReactorTime) -> None:
        self._db = db
        self._client = client
        self._clock = clock

    async def run_once(self) -> dict[str, int]:
        checked = corrupt = unreachable = 0
        after: tuple[int, str] = (0, "")
        while page := await self._db.run(self._confirmed, after, SCRUB_BATCH):
            after = (page[-1][0], page[-1][3])
            for blob_id, sha256, size, node, url in page:
                try:
                    key = replica_key(blob_id, sha256)
                    good = await self._client.verify(url, node, key, size, sha256)
                except Exception as exc:
                    log.warn("scrub of blob {blob} on {node}: {exc}",
                             blob=blob_id, node=node, exc=exc)  # fmt: skip
                    unreachable += 1
                    continue
                checked += 1
                if not good:
                    corrupt += 1
                    log.warn("blob {blob} on {node} failed its checksum: quarantined",
                             blob=blob_id, node=node)  # fmt: skip
                    await self._db.run(
                        nodestore.set_replica, blob_id, node, QUARANTINED, self._clock.seconds(),
                        detail="checksum mismatch found by scrub",
                    )  # fmt: skip
        return {"checked": checked, "corrupt": corrupt, "unreachable": unreachable}

    @staticmethod
    def _confirmed(
        txn: Txn, after: tuple[int, str], limit: int
    ) -> list[tuple[int, str, int, str, str]]:
        """The next ``limit`` confirmed replicas on up nodes after (blob id, node): a pass
        holds one page at a time, whatever the catalogue's size (the replicas' primary key
        is the order)."""
        rows = txn.all(
            "SELECT b.id, b.sha256, b.size, n.name, n.url FROM replicas r"
            " JOIN blobs b ON b.id = r.blob_id JOIN nodes n ON n.name = r.node"
            " WHERE r.state = ? AND n.status = ? AND r.blob_id >= ?"
            " AND (r.blob_id > ? OR r.node > ?) ORDER BY r.blob_id, r.node LIMIT ?",
            (CONFIRMED, UP, after[0], after[0], after[1], limit),
        )
        return [(int(r[0]), r[1], int(r[2]), r[3], r[4]) for r in rows]
