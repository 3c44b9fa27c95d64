"""The proxy's half of the remote tier: who mirrors what, cache and uncache, S3 clean-up.

The proxy decides, the nodes do the work. Each ``sync_once`` pass (the ``mirror-sync`` job):

1. **Assigns** every blob still to be mirrored to exactly one responsible node among those
   holding a confirmed replica (the least loaded one); a blob whose node is lost past the
   grace period, or no longer holds a copy, is reassigned.
2. **Sends** each node that answers what changed in its want-list since the cursor it last
   acknowledged (``proxy.remote.mirrorwants``; the whole list to a node whose journal is new
   or behind) over the signed internal channel (``POST /internal/mirror/sync``): the active
   S3 connection (secret sealed with that node's transport key, derived from the cluster
   secret), the blobs it must now mirror, those it must now restore (with every part's
   offset, size and sha256), and those withdrawn.
3. **Records** what the node reports: per-part state into ``blob_parts``, a blob that is
   completed and verified in S3 becomes ``mirrored``; a restored blob becomes a confirmed
   replica on that node, and the usual replication brings the count back to ``replicas``;
   a failed restore leaves the blob ``remote`` with the node's reason, so nothing wrong is
   ever served. The nodes' mirror loops show up as jobs, their events in the system log.

S3 objects of deleted blobs are queued in ``s3_deletions`` and removed by the proxy itself
(``clean_once``), retried with growing waits while S3 is away; content-addressing means an
object is only removed while no blob with that sha256 exists.

Planning a pass is ``proxy.remote.mirrorplan``'s, recording an answer
``proxy.remote.mirrorreport``'s, the other SQL ``proxy.remote.tierstore``'s, and the states
are in ``proxy.remote.states``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from common.backoff import retry_delay
from common.db import Database
from common.s3 import S3Settings, make_client, settings_to_wire
from common.signing import NodeKeys
from proxy.cluster.nodeapi import NodeApi
from proxy.events.emit import NO_WAKING, Emitter, Waker
from proxy.ops.systemlog import EventLog
from proxy.remote import mirrorwants, tierstore
from proxy.remote.mirrorplan import plan
from proxy.remote.mirrorreport import record_answer
from proxy.remote.mirrorwants import NodeWork
from proxy.remote.states import LOST, NOT_HERE

# LOST and NOT_HERE are imported from here by the routes.
__all__ = ["LOST", "NOT_HERE", "SYNC_TIMEOUT", "JobReports", "RemoteTier", "mirror_job_name"]

log = Logger()

SYNC_TIMEOUT = 30.0


class JobReports(Protocol):
    """What this module needs of the job scheduler (``proxy.ops.jobs.JobScheduler``)."""

    def report_remote(self, name: str, job: dict[str, Any]) -> None: ...

    def interval_of(self, name: str) -> float | None: ...


def mirror_job_name(node: str) -> str:
    return f"mirror@{node}"


class RemoteTier:
    """Mirror assignment and node sync, cache/uncache, and removal of unused S3 objects."""

    def __init__(
        self,
        *,
        db: Database,
        clock: IReactorTime,
        client: NodeApi,
        active: Callable[[], Awaitable[S3Settings | None]],
        cluster_secret: str,
        grace: float,
        threads: IReactorThreads,
        pool: ThreadPool,
        events: EventLog | None = None,
        jobs: JobReports | None = None,
        restore_retry_after: int = 30,
        waker: Waker = NO_WAKING,
    ) -> None:
        self._db = db
        self._clock = clock
        self._client = client
        self._active = active
        self._secret = cluster_secret
        self._grace = grace
        self._threads = threads
        self._pool = pool
        self._events = events
        self._jobs = jobs
        self.restore_retry_after = restore_retry_after
        self._waker = waker  # the users' live events (``events`` is the system log)
        self._running = False

    async def _record(self, level: str, event: str, message: str, **data: Any) -> None:
        """Into the system log, which also writes the Twisted log line; without one, only
        the Twisted log."""
        if self._events is not None:
            await self._events.record(level, event, message, **data)
        else:
            getattr(log, {"error": "error", "warn": "warn"}.get(level, "info"))(message)

    # -- the mirror-sync job

    async def sync_once(self) -> dict[str, Any]:
        """One pass: assign, send every up node its want-list, record the answers."""
        if self._running:
            return {"skipped": "a pass is already running"}
        self._running = True
        try:
            settings = await self._active()
            now = self._clock.seconds()
            work = await self._db.run(plan, now, settings is not None, self._grace)
            results = await DeferredList(
                [ensureDeferred(self._sync_node(w, settings)) for w in work], consumeErrors=True
            )
            synced = sum(1 for ok, value in results if ok and value)
            mirroring = sum(len(w.mirror) for w in work)
            restoring = sum(len(w.restore) for w in work)
            return {
                "connection": settings.name if settings is not None else None,
                "nodes": synced,
                "mirroring": mirroring,
                "restoring": restoring,
            }
        finally:
            self._running = False

    async def _sync_node(self, work: NodeWork, settings: S3Settings | None) -> bool:
        """Send the node its delta (or whole list) and record its answer; a node that
        refuses the delta (its journal is new or behind) is sent the whole list at once."""
        name = work.node.name
        job = mirror_job_name(name)
        # The S3 secret is sealed for this node alone, with its transport key.
        transport = NodeKeys.for_node(self._secret, name).transport
        connection = settings_to_wire(settings, transport) if settings is not None else None
        interval = self._jobs.interval_of(job) if self._jobs else None
        for _attempt in range(2):
            payload = {"connection": connection, "mirror_interval": interval, **work.wire()}
            try:
                body = await self._send(work, payload)
            except Exception as exc:
                log.warn("mirror sync with {node} failed: {exc}", node=name, exc=exc)
                return False
            emitter = Emitter(self._clock.seconds())
            changes, taken = await self._db.run(record_answer, name, work, body, emitter)
            await self._told(name, job, body, emitter, changes)
            if taken or work.since is None:
                return True  # answered (a whole list it could not keep is sent again next pass)
            work = await self._db.run(mirrorwants.node_work, work.node)
        return True

    async def _send(self, work: NodeWork, payload: dict[str, Any]) -> dict[str, Any]:
        """One sync call. A node of a version before cursors refuses the ``cursor`` field
        (400, unknown fields): it is sent the whole list without one, as before, so nodes
        can be upgraded after the proxies; it never acknowledges, so it keeps getting the
        whole list."""
        url, name = work.node.url, work.node.name
        try:
            return await self._client.mirror_sync(url, name, payload, timeout=SYNC_TIMEOUT)
        except Exception as exc:
            older = getattr(exc, "status", None) == 400 and "Unknown fields" in str(exc)
            if not older or work.since is not None:
                raise
        legacy = {k: v for k, v in payload.items() if k != "cursor"}
        return await self._client.mirror_sync(url, name, legacy, timeout=SYNC_TIMEOUT)

    async def _told(
        self,
        name: str,
        job: str,
        body: dict[str, Any],
        emitter: Emitter,
        changes: list[tuple[str, str, str, dict[str, Any]]],
    ) -> None:
        """What a node's answer tells the users, the job list and the system log."""
        if self._jobs is not None and isinstance(body.get("job"), dict):
            self._jobs.report_remote(job, {**body["job"], "where": name})
        self._waker.wake(emitter.users)
        for level, event, message, data in changes:
            await self._record(level, event, message, job=job, node=name, **data)
        for event in body.get("events") or []:
            if isinstance(event, dict) and isinstance(event.get("message"), str):
                said = event.get("level")
                await self._record(
                    said if said in {"info", "warn", "error"} else "info",
                    str(event.get("event") or "mirror"),
                    event["message"],
                    job=job,
                    node=name,
                    key=str(event.get("key") or ""),
                )

    # -- cache and uncache (owner or staff; the caller has checked who may see the file)

    async def uncache(self, blob_id: int, owner_id: int | None = None) -> None:
        """Release a blob's local copies; ``owner_id`` (None: staff) must be its only owner."""
        released = await self._db.run(tierstore.uncache, blob_id, self._clock.seconds(), owner_id)
        await self._record("info", "uncache", f"blob {blob_id} uncached: kept only in S3",
                           blob=blob_id, replicas=released)  # fmt: skip

    async def cache(self, blob_id: int) -> str:
        """Queue a restore from S3 (a second request joins the first); returns the state."""
        state, queued = await self._db.run(tierstore.cache, blob_id, self._clock.seconds())
        if queued:
            await self._record("info", "restore", f"restore of blob {blob_id} from S3 queued",
                               blob=blob_id)  # fmt: skip
        return str(state)

    async def state_of(self, blob_id: int) -> str | None:
        return await self._db.run(
            lambda txn: txn.scalar("SELECT remote_state FROM blobs WHERE id = ?", (blob_id,))
        )

    async def view(self, blob_id: int) -> dict[str, Any]:
        """What the file detail shows about the remote tier for one blob."""
        return await self._db.run(tierstore.remote_view, blob_id)

    # -- S3 objects of deleted blobs

    async def clean_once(self) -> dict[str, int]:
        """Remove due S3 objects of deleted blobs; failures wait longer each time."""
        settings = await self._active()
        if settings is None:
            return {"removed": 0, "failed": 0}
        due = await self._db.run(tierstore.due_deletions, self._clock.seconds())
        removed = failed = 0
        client: Any = None  # one boto3 client per pass, made only when there is work
        for key, sha256, attempts in due:
            if not await self._db.run(tierstore.still_unused, key, sha256):
                continue
            try:
                if client is None:
                    client = await deferToThreadPool(
                        self._threads, self._pool, make_client, settings, max_pool_connections=1
                    )
                await deferToThreadPool(
                    self._threads, self._pool, client.delete_object, Bucket=settings.bucket, Key=key
                )
            except Exception as exc:
                failed += 1
                now = self._clock.seconds()
                await self._db.run(
                    tierstore.deletion_failed, key, now + retry_delay(attempts + 1), str(exc)[:300]
                )
                log.warn("removing {key} from S3 failed: {exc}", key=key, exc=exc)
                continue
            removed += 1
            await self._db.run(tierstore.deletion_done, key, sha256)
            await self._record("info", "s3-delete", f"removed {key} from S3", key=key)
        return {"removed": removed, "failed": failed}
