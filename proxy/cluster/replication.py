"""Keeping every blob on ``replicas`` nodes: placement, rsync copies, repair of replicas lost
with a node, release of the proxy's own copy, surplus copies and pending deletions.

The ``Replicator``'s pass (``run_once``) is driven by a ``LoopingCall`` on an injected clock,
and kicked when a file is completed; its failures are caught and logged so the loop never
stops. Timing rules (backoff, grace periods) compare against ``clock.seconds()``, so tests
move time with ``task.Clock``. The rules themselves are in ``proxy.cluster.rules``; watching
the nodes (health, scrub) is ``proxy.cluster.monitor``'s job.

Over 400 lines, for now: a pass's steps (plan, single and batched copies, repair, release)
share the ``Scope`` and the copies in flight, which a split would pass between modules. The
repair step (``_restore_missing`` and its plan) is the piece that can leave whole, next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from common.backoff import retry_delay
from common.db import Database, Txn
from common.signing import replica_key
from proxy.cluster import nodestore
from proxy.cluster.batches import BatchLimits, Budget, Copy, group
from proxy.cluster.fetched import FetchedFile
from proxy.cluster.monitor import note
from proxy.cluster.nodeapi import NodeApi, Pushed, ReplicaPusher, WantedReplica
from proxy.cluster.nodestore import CONFIRMED, COPYING, FAILED, PENDING, UP, Replica
from proxy.cluster.placement import choose_nodes
from proxy.cluster.rules import LOST_NOTE, candidates, keepers_first, leaving_nodes, lost_nodes
from proxy.events import kinds
from proxy.events.emit import NO_WAKING, Emitter, Waker
from proxy.uploads.staging import StagingArea

if TYPE_CHECKING:
    from proxy.ops.systemlog import SystemLog

log = Logger()
_LIVE = (CONFIRMED, COPYING, PENDING)


def _not_on(nodes: set[str]) -> str:
    """SQL that leaves out replicas on ``nodes`` (their names follow as parameters)."""
    return f" AND r.node NOT IN ({', '.join('?' for _ in nodes)})" if nodes else ""


# The plan reads blobs still kept here this many at a time (by id, from an index), and stops
# as soon as the pass is full: a backlog is never read whole.
PLAN_PAGE = 1000
# A pass looks at every blob (for repairs, surplus copies and written-off ones) when the nodes
# changed (up, leaving, lost), when a repair is still going on, and at least this often; other
# passes look only at blobs kept here and blobs whose replica rows changed since the last pass.
FULL_EVERY = 600.0
# A row changed this long before the last pass began still counts as changed since it (a
# transaction that committed after the pass had begun, the clocks of several proxies sharing a
# database). Short, since every pass re-reads what changed within it: a 60 s margin had every
# pass for a minute after a catalogue's import read all of it again.
CHANGED_MARGIN = 10.0


@dataclass(frozen=True)
class Scope:
    """What one pass reads: every blob (``full``), or only those whose replica rows changed
    at or after ``since``, plus the blobs kept here."""

    full: bool
    since: float
    now: float
    nodes: tuple[frozenset[str], frozenset[str], frozenset[str]]  # up, leaving, lost


__all__ = ["Copy", "Replicator", "confirmed_txn"]


class Replicator:
    """One pass: plan copies, run them, drop surplus, release local copies, clean up."""

    def __init__(
        self,
        *,
        db: Database,
        staging: StagingArea,
        client: NodeApi,
        rsync: ReplicaPusher,
        clock: IReactorTime,
        target: int,
        grace: float,
        batch: int = 8,
        limits: BatchLimits | None = None,
        stale_after: float = 600.0,
        syslog: SystemLog | None = None,
        waker: Waker = NO_WAKING,
        full_every: float = FULL_EVERY,
    ) -> None:
        self._syslog = syslog
        self._waker = waker
        self._db = db
        self._staging = staging
        self._client = client
        self._rsync = rsync
        self._clock = clock
        self.target = target
        self._grace = grace
        self._batch = batch  # at most this many repairs (fetches back) per pass
        # Copies per pass: up to ``limits.batches`` batches of small files, ``batch`` large.
        self._limits = limits or BatchLimits(singles=batch)
        # A row left ``copying`` by a proxy that stopped mid-transfer (or by another proxy
        # that went quiet) counts as live only this long; our own copies always do.
        self._stale_after = stale_after
        self._in_flight: set[tuple[int, str]] = set()
        self._running = False
        self._again = False
        self._full_every = full_every
        self._full_due = True  # the first pass looks at everything
        self._last_full = float("-inf")
        self._last_pass = float("-inf")
        self._nodes_seen: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None

    def kick(self) -> None:
        """Start a pass now (or right after the current one): a file was just completed."""
        if self._running:
            self._again = True
            return
        ensureDeferred(self.run_once()).addErrback(
            lambda failure: log.failure("replication pass failed", failure)
        )

    async def run_once(self) -> None:
        if self._running:
            self._again = True
            return
        self._running = True
        try:
            while True:
                self._again = False
                scope = await self._db.run(self._scope, self._clock.seconds())
                repairs_left = await self._restore_missing(scope)
                copies = await self._db.run(self._plan, self._clock.seconds())
                singles, batches = group(copies, self._limits)
                await DeferredList(
                    [ensureDeferred(self._copy(c)) for c in singles]
                    + [ensureDeferred(self._copy_batch(b)) for b in batches],
                    consumeErrors=True,
                )
                await self._release_local_copies(scope)
                await self._clean_deletions()
                self._passed(scope, repairs_left)
                if not (self._again or copies):
                    break
        finally:
            self._running = False

    # -- what a pass reads

    def _scope(self, txn: Txn, now: float) -> Scope:
        nodes = nodestore.list_nodes(txn)
        seen = (
            frozenset(n.name for n in nodes if n.status == UP),
            frozenset(leaving_nodes(nodes, now, self._grace)),
            frozenset(lost_nodes(nodes, now, self._grace)),
        )
        full = (
            self._full_due or seen != self._nodes_seen or now - self._last_full >= self._full_every
        )
        return Scope(full, self._last_pass - CHANGED_MARGIN, now, seen)

    def _passed(self, scope: Scope, repairs_left: bool) -> None:
        """Remember what this pass saw; a repair that did not fit in it, or a full pass that
        did not finish its repairs, makes the next one full."""
        self._nodes_seen = scope.nodes
        self._last_pass = scope.now
        if scope.full and not repairs_left:
            self._last_full = scope.now
        self._full_due = repairs_left

    # -- planning

    def _counts(self, replica: Replica, now: float, leaving: set[str]) -> bool:
        """Whether a replica counts towards the target: confirmed or being made, on a node
        that is neither lost nor being drained."""
        if replica.node in leaving or replica.state not in _LIVE:
            return False
        if replica.state == COPYING and (replica.blob_id, replica.node) not in self._in_flight:
            return replica.updated_at > now - self._stale_after
        return True

    def _plan(self, txn: Txn, now: float) -> list[Copy]:
        nodes = nodestore.list_nodes(txn)
        by_name = {n.name: n for n in nodes}
        leaving = leaving_nodes(nodes, now, self._grace)
        up = candidates(nodes)
        if not up:  # no node could take a copy: no need to read every blob to know it
            return []
        budget = Budget(self._limits)
        planned: list[Copy] = []
        after = 0
        while not budget.full():
            rows = txn.all(
                "SELECT id, sha256, md5, size FROM blobs WHERE local = 1 AND id > ?"
                " ORDER BY id LIMIT ?",
                (after, PLAN_PAGE),
            )
            if not rows:
                break
            after = int(rows[-1][0])
            replicas = nodestore.replicas_of(txn, [int(r[0]) for r in rows])
            for blob_id, sha256, md5, size in rows:
                blob_id, size = int(blob_id), int(size)
                mine = replicas[blob_id]
                live = [r for r in mine if self._counts(r, now, leaving)]
                need = self.target - len(live)
                if need <= 0:
                    continue
                waiting = {r.node for r in mine if r.state == FAILED and r.next_attempt_at > now}
                exclude = {r.node for r in live} | waiting | leaving
                zones = {by_name[r.node].zone for r in live if r.node in by_name}
                attempts = {r.node: r.attempts for r in mine}
                chosen = choose_nodes(up, size=size, count=need, used_zones=zones, exclude=exclude)
                for name in chosen:
                    if not budget.take(size):
                        break
                    node = by_name[name]
                    nodestore.set_replica(txn, blob_id, name, COPYING, now)
                    copy = Copy(
                        blob_id, sha256, md5, size, name, node.url, node.rsync_url,
                        attempts.get(name, 0),
                    )  # fmt: skip
                    planned.append(copy)
            if len(rows) < PLAN_PAGE:
                break
        return planned

    async def _copy(self, copy: Copy) -> None:
        source = str(self._staging.blob_path(copy.sha256, copy.blob_id))
        self._in_flight.add((copy.blob_id, copy.node))
        try:
            await self._rsync.push(source, copy.rsync_url, copy.node, copy.key, copy.size)
            await self._client.confirm(
                copy.url, copy.node, copy.key, copy.size, copy.md5, copy.sha256
            )
        except Exception as exc:
            self._in_flight.discard((copy.blob_id, copy.node))
            now = self._clock.seconds()
            await note(
                self._syslog, "warn", "replication.copy_failed",
                f"copy of blob {copy.blob_id} to {copy.node} failed: {exc}",
                blob=copy.blob_id, node=copy.node, attempts=copy.attempts + 1,
            )  # fmt: skip
            await self._db.run(
                nodestore.set_replica, copy.blob_id, copy.node, FAILED, now,
                detail=str(exc)[:500], next_attempt_at=now + retry_delay(copy.attempts + 1),
                failed=True,
            )  # fmt: skip
            return
        emitter = Emitter(self._clock.seconds())
        await self._db.run(confirmed_txn, copy.blob_id, copy.node, emitter)
        self._waker.wake(emitter.users)
        self._in_flight.discard((copy.blob_id, copy.node))
        await note(
            self._syslog, "info", "replication.confirmed",
            f"blob {copy.blob_id} confirmed on {copy.node}", blob=copy.blob_id, node=copy.node,
        )  # fmt: skip

    async def _copy_batch(self, batch: Sequence[Copy]) -> None:
        """Many small copies to one node: one rsync run, one signed confirm. The node says
        which it verified; those are marked confirmed together, the rest failed with their
        backoff, as ``_copy`` does for one."""
        first = batch[0]
        self._in_flight.update((c.blob_id, c.node) for c in batch)
        try:
            outcomes = await self._send_batch(batch)
            confirmed = [c.blob_id for c in batch if c.key in outcomes and outcomes[c.key] is None]
            refused = [
                (c, outcomes.get(c.key) or "the node did not answer for it")
                for c in batch
                if c.key not in outcomes or outcomes[c.key] is not None
            ]
            now = self._clock.seconds()
            emitter = Emitter(now)
            if confirmed:
                await self._db.run(confirmed_batch_txn, confirmed, first.node, emitter)
            if refused:
                await self._db.run(_failed_batch_txn, refused, now)
        finally:
            self._in_flight.difference_update((c.blob_id, c.node) for c in batch)
        self._waker.wake(emitter.users)
        if confirmed:
            await note(
                self._syslog, "info", "replication.confirmed",
                f"{len(confirmed)} blobs confirmed on {first.node} in one batch",
                blobs=len(confirmed), node=first.node,
            )  # fmt: skip
        if len(refused) == len(batch):  # one note for a batch that failed as a whole
            await note(
                self._syslog, "warn", "replication.copy_failed",
                f"copy of {len(batch)} blobs to {first.node} in a batch failed: {refused[0][1]}",
                blobs=len(batch), node=first.node,
            )  # fmt: skip
            return
        for copy, why in refused:
            await note(
                self._syslog, "warn", "replication.copy_failed",
                f"copy of blob {copy.blob_id} to {copy.node} failed: {why}",
                blob=copy.blob_id, node=copy.node, attempts=copy.attempts + 1,
            )  # fmt: skip

    async def _send_batch(self, batch: Sequence[Copy]) -> dict[str, str | None]:
        """Push a batch and have the node confirm it: for each key, None if confirmed, else
        why not. A push that failed is still followed by the confirm, since some files may
        have arrived whole (one source deleted meanwhile fails the rsync run for all); the
        node verifies each, so nothing is trusted because rsync said so, or did not."""
        first = batch[0]
        pushed = [
            Pushed(str(self._staging.blob_path(c.sha256, c.blob_id)), c.key, c.size) for c in batch
        ]
        wanted = [WantedReplica(c.key, c.size, c.md5, c.sha256) for c in batch]
        push_error: Exception | None = None
        try:
            await self._rsync.push_batch(pushed, first.rsync_url, first.node)
        except Exception as exc:
            push_error = exc
        try:
            outcomes = await self._client.confirm_batch(first.url, first.node, wanted)
        except Exception as exc:
            return {c.key: str(push_error or exc) for c in batch}
        if push_error is None:
            return outcomes
        return {k: None if why is None else f"{push_error}; {why}" for k, why in outcomes.items()}

    # -- repair of blobs that live only on nodes

    async def _restore_missing(self, scope: Scope) -> bool:
        """Bring back to the proxy the content of blobs that have too few good replicas and no
        local copy (a node was lost, or scrub quarantined a copy), from a good replica; the
        plan then copies it to new nodes and the release step lets it go again. True when
        there may be more than this pass took."""
        wanted = await self._db.run(self._restore_plan, scope)
        for blob_id, sha256, size, node, url in wanted:
            key = replica_key(blob_id, sha256)
            target = self._staging.blob_path(sha256, blob_id)
            partial = target.with_name(target.name + ".restoring")
            writer = FetchedFile(partial)
            try:
                await self._client.fetch(url, node, key, writer.write)
                await writer.close_and_check(size, sha256, target)
            except Exception as exc:
                log.warn("restoring blob {blob} from {node} failed: {exc}", blob=blob_id,
                         node=node, exc=exc)  # fmt: skip
                await deferToThread(writer.discard)
                continue
            await self._db.run(self._mark_local, blob_id)
            log.info("blob {blob} restored from {node} for repair", blob=blob_id, node=node)
        return len(wanted) >= self._batch

    def _restore_plan(self, txn: Txn, scope: Scope) -> list[tuple[int, str, int, str, str]]:
        now = scope.now
        nodes = nodestore.list_nodes(txn)
        leaving = leaving_nodes(nodes, now, self._grace)
        up = {n.name: n for n in nodes if n.status == UP}
        if not up:  # nothing to fetch a copy from
            return []
        # Only blobs short of confirmed copies on nodes that stay, with a confirmed copy on a
        # node that answers, can be repaired; outside a full pass only those whose replica
        # rows changed. Read a page at a time by id: nothing here grows with the catalogue.
        ups = ", ".join("?" for _ in up)
        changed = (
            ""
            if scope.full
            else " AND b.id IN (SELECT blob_id FROM replicas WHERE updated_at >= ?)"
        )
        wanted: list[tuple[int, str, int, str, str]] = []
        after = 0
        while len(wanted) < self._batch:
            rows = txn.all(
                "SELECT b.id, b.sha256, b.size FROM blobs b WHERE b.local = 0 AND b.id > ?"
                f"{changed} AND (SELECT COUNT(*) FROM replicas r WHERE r.blob_id = b.id"
                f" AND r.state = ?{_not_on(leaving)}) < ? AND EXISTS (SELECT 1 FROM replicas r"
                f" WHERE r.blob_id = b.id AND r.state = ? AND r.node IN ({ups}))"
                " ORDER BY b.id LIMIT ?",
                (
                    after, *(() if scope.full else (scope.since,)), CONFIRMED, *sorted(leaving),
                    self.target, CONFIRMED, *sorted(up), PLAN_PAGE,
                ),
            )  # fmt: skip
            if not rows:
                break
            after = int(rows[-1][0])
            replicas = nodestore.replicas_of(txn, [int(r[0]) for r in rows])
            for blob_id, sha256, size in rows:
                mine = replicas[int(blob_id)]
                live = [r for r in mine if self._counts(r, now, leaving)]
                sources = [r.node for r in mine if r.state == CONFIRMED and r.node in up]
                if len(live) < self.target and sources and len(wanted) < self._batch:
                    node = up[sources[0]]
                    wanted.append((int(blob_id), sha256, int(size), node.name, node.url))
            if len(rows) < PLAN_PAGE:
                break
        return wanted

    @staticmethod
    def _mark_local(txn: Txn, blob_id: int) -> None:
        txn.execute("UPDATE blobs SET local = 1 WHERE id = ?", (blob_id,))

    # -- the proxy's own copy, surplus replicas, deletions

    async def _release_local_copies(self, scope: Scope) -> None:
        released = await self._db.run(self._release_txn, scope)
        if released:
            await deferToThread(self._staging.remove_blobs, released)

    def _release_txn(self, txn: Txn, scope: Scope) -> list[tuple[str, int]]:
        """Blobs with enough confirmed replicas stop being kept locally; surplus replicas on
        nodes that came back after a repair are dropped."""
        now = scope.now
        nodes = nodestore.list_nodes(txn)
        lost = lost_nodes(nodes, now, self._grace)
        up = {n.name for n in nodes if n.status == UP}
        zone_of_node = {n.name: n.zone for n in nodes}
        leaving = leaving_nodes(nodes, now, self._grace)
        if not up and not lost:  # nothing can be released, dropped or marked
            return []
        # What the loop below can change: blobs still kept here, blobs with more confirmed
        # copies than the target, and copies written off once; outside a full pass, of the
        # last two only blobs whose replica rows changed since the last pass (a surplus or a
        # written-off copy comes from a change of the nodes, which makes the pass full).
        if scope.full:
            rows = txn.all(
                "SELECT id, sha256, local FROM blobs b WHERE local = 1 OR (SELECT COUNT(*)"
                " FROM replicas r WHERE r.blob_id = b.id AND r.state = ?) > ? OR EXISTS"
                " (SELECT 1 FROM replicas r WHERE r.blob_id = b.id AND r.detail = ?) ORDER BY id",
                (CONFIRMED, self.target, LOST_NOTE),
            )
        else:
            rows = txn.all(
                "SELECT id, sha256, local FROM blobs WHERE local = 1 UNION SELECT id, sha256,"
                " local FROM blobs WHERE id IN (SELECT blob_id FROM replicas WHERE updated_at"
                " >= ?) ORDER BY id",
                (scope.since,),
            )
        replicas = nodestore.replicas_of(txn, [int(r[0]) for r in rows])
        if lost and scope.full:
            # Remember which copies were written off, so that if their node comes back it is
            # their copies, not the replacements, that count as the surplus.
            marks = ", ".join("?" for _ in lost)
            txn.execute(
                f"UPDATE replicas SET detail = ? WHERE state = ? AND node IN ({marks})",
                (LOST_NOTE, CONFIRMED, *sorted(lost)),
            )
        released = []
        for blob_id, sha256, local in rows:
            confirmed = [r for r in replicas[int(blob_id)] if r.state == CONFIRMED]
            # The proxy lets go of its copy only when enough are on nodes that answer now.
            counted = [r for r in confirmed if r.node in up and r.node not in leaving]
            if int(local) and len(counted) >= self.target:
                txn.execute("UPDATE blobs SET local = 0 WHERE id = ?", (blob_id,))
                released.append((sha256, int(blob_id)))
            on_up = keepers_first(
                [r for r in confirmed if r.node in up], zone_of_node, self.target, leaving
            )
            for extra in on_up[self.target :]:
                nodestore.drop_replica(
                    txn, int(blob_id), extra.node, replica_key(int(blob_id), sha256)
                )
            for kept in on_up[: self.target]:
                if kept.detail == LOST_NOTE:
                    nodestore.set_replica(txn, int(blob_id), kept.node, CONFIRMED, now)
        return released

    async def _clean_deletions(self) -> None:
        due = await self._db.run(nodestore.due_deletions, self._clock.seconds())
        if not due:
            return
        nodes = {n.name: n for n in await self._db.run(nodestore.list_nodes)}
        for node_name, key in due:
            try:
                await self._client.delete(nodes[node_name].url, node_name, key)
            except Exception as exc:
                log.warn("deleting {key} on {node} failed: {exc}", key=key, node=node_name, exc=exc)
                retry = self._clock.seconds() + retry_delay(2)  # a fixed 10 s
                await self._db.run(nodestore.deletion_failed, node_name, key, retry)
            else:
                await self._db.run(nodestore.deletion_done, node_name, key)


def confirmed_txn(txn: Txn, blob_id: int, node: str, emitter: Emitter) -> None:
    """Record a confirmed replica, and tell the owners of the files it holds the count."""
    nodestore.set_replica(txn, blob_id, node, CONFIRMED, emitter.now)
    replicas = nodestore.confirmed_count(txn, blob_id)
    emitter.for_blob(txn, blob_id, kinds.REPLICA_CONFIRMED, replicas=replicas)


def confirmed_batch_txn(txn: Txn, blob_ids: Sequence[int], node: str, emitter: Emitter) -> None:
    """``confirmed_txn`` for every blob of a batch, in one transaction."""
    for blob_id in blob_ids:
        confirmed_txn(txn, blob_id, node, emitter)


def _failed_batch_txn(txn: Txn, refused: Sequence[tuple[Copy, str]], now: float) -> None:
    for copy, why in refused:
        nodestore.set_replica(
            txn, copy.blob_id, copy.node, FAILED, now, detail=why[:500],
            next_attempt_at=now + retry_delay(copy.attempts + 1), failed=True,
        )  # fmt: skip
