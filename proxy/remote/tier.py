"""The proxy's half of the remote tier: who mirrors what, cache and uncache, S3 clean-up.

The proxy decides, the nodes do the work. Each ``sync_once`` pass (the ``mirror-sync`` job):

1. **Assigns** every blob still to be mirrored to exactly one responsible node among those
   holding a confirmed replica (the least loaded one); a blob whose node is lost past the
   grace period, or no longer holds a copy, is reassigned.
2. **Sends** each node that answers its complete want-list over the signed internal channel
   (``POST /internal/mirror/sync``): the active S3 connection (secret sealed with a key
   derived from the cluster secret), the blobs it must mirror and the blobs it must restore
   (with every part's offset, size and sha256).
3. **Records** what the node reports: per-part state into ``blob_parts``, a blob that is
   completed and verified in S3 becomes ``mirrored``; a restored blob becomes a confirmed
   replica on that node, and the usual replication brings the count back to ``replicas``;
   a failed restore leaves the blob ``remote`` with the node's reason, so nothing wrong is
   ever served. The nodes' mirror loops show up as jobs, their events in the system log.

A blob's ``remote_state``: ``local`` (not yet mirrored) -> ``mirroring`` -> ``mirrored``
(verified in S3, local copies kept) -> ``remote`` (uncached: only in S3) -> ``restoring``
-> ``mirrored`` again. ``lost`` is set by a disaster-recovery restore for a blob whose object
is not in the bucket.

S3 objects of deleted blobs are queued in ``s3_deletions`` and removed by the proxy itself
(``clean_once``), retried with growing waits while S3 is away; content-addressing means an
object is only removed while no blob with that sha256 exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from common.db import Database, Txn
from common.errors import Conflict
from common.s3 import S3Settings, make_client, settings_to_wire
from common.signing import replica_key, valid_replica_key
from proxy.cluster import nodestore
from proxy.cluster.client import NodeClient, NodeError
from proxy.cluster.nodestore import CONFIRMED, UP, Node
from proxy.cluster.placement import choose_nodes
from proxy.cluster.replication import candidates, leaving_nodes, lost_nodes, retry_delay

log = Logger()

LOCAL, MIRRORING, MIRRORED, REMOTE, RESTORING, LOST = (
    "local", "mirroring", "mirrored", "remote", "restoring", "lost",
)  # fmt: skip
NOT_HERE = (REMOTE, RESTORING, LOST)  # states in which no node holds the content
SYNC_TIMEOUT = 30.0


class EventLog(Protocol):
    """What this module needs of the system log (``proxy.ops.systemlog.SystemLog``)."""

    async def record(
        self, level: str, event: str, message: str, *, job: str = "", **data: Any
    ) -> None: ...


class JobReports(Protocol):
    """What this module needs of the job scheduler (``proxy.ops.jobs.JobScheduler``)."""

    def report_remote(self, name: str, job: dict[str, Any]) -> None: ...

    def interval_of(self, name: str) -> float | None: ...


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


def mirror_job_name(node: str) -> str:
    return f"mirror@{node}"


def _blob_id_of(key: object) -> int | None:
    if not isinstance(key, str) or not valid_replica_key(key):
        return None
    return int(key.partition("-")[0])


class RemoteTier:
    """Mirror assignment and node sync, cache/uncache, and removal of unused S3 objects."""

    def __init__(
        self,
        *,
        db: Database,
        clock: IReactorTime,
        client: NodeClient,
        active: Callable[[], Awaitable[S3Settings | None]],
        cluster_secret: str,
        grace: float,
        threads: IReactorThreads,
        pool: ThreadPool,
        events: EventLog | None = None,
        jobs: JobReports | None = None,
        restore_retry_after: int = 30,
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
            work = await self._db.run(self._plan, self._clock.seconds(), settings is not None)
            wire = settings_to_wire(settings, self._secret) if settings is not None else None
            results = await DeferredList(
                [ensureDeferred(self._sync_node(w, wire)) for w in work], consumeErrors=True
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

    def _plan(self, txn: Txn, now: float, connected: bool) -> list[NodeWork]:
        nodes = nodestore.list_nodes(txn)
        up = {n.name: n for n in nodes if n.status == UP}
        lost = lost_nodes(nodes, now, self._grace)
        leaving = leaving_nodes(nodes, now, self._grace)
        work = {name: NodeWork(node, [], []) for name, node in up.items()}
        if connected:
            self._assign(txn, up, lost, leaving, work)
        self._plan_restores(txn, nodes, lost, work)
        return list(work.values())

    def _assign(
        self,
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

    def _plan_restores(
        self, txn: Txn, nodes: list[Node], lost: set[str], work: dict[str, NodeWork]
    ) -> None:
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
                    "SELECT idx, start, size, sha256 FROM blob_parts WHERE blob_id = ?"
                    " ORDER BY idx",
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

    async def _sync_node(self, work: NodeWork, connection: dict[str, Any] | None) -> bool:
        name = work.node.name
        job = mirror_job_name(name)
        payload = {
            "connection": connection,
            "mirror_interval": self._jobs.interval_of(job) if self._jobs else None,
            "mirror": [t.wire() for t in work.mirror],
            "restore": [{**t.wire(), "parts": parts} for t, parts in work.restore],
        }
        try:
            status, body = await self._client.call(
                "POST", work.node.url, "/internal/mirror/sync", payload, timeout=SYNC_TIMEOUT
            )
            if status != 200 or not isinstance(body, dict):
                detail = body.get("detail") if isinstance(body, dict) else None
                raise NodeError(f"mirror sync answered {status}: {detail}", status)
        except Exception as exc:
            log.warn("mirror sync with {node} failed: {exc}", node=name, exc=exc)
            return False
        if self._jobs is not None and isinstance(body.get("job"), dict):
            self._jobs.report_remote(job, {**body["job"], "where": name})
        changes = await self._db.run(self._ingest, name, work, body, self._clock.seconds())
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
        return True

    def _ingest(
        self, txn: Txn, node: str, work: NodeWork, body: dict[str, Any], now: float
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
            self._store_parts(txn, blob_id, item.get("parts"))
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

    @staticmethod
    def _store_parts(txn: Txn, blob_id: int, parts: object) -> None:
        if not isinstance(parts, list):
            return
        txn.execute("DELETE FROM blob_parts WHERE blob_id = ?", (blob_id,))
        for part in parts:
            if not isinstance(part, dict):
                continue
            index, start, size = part.get("index"), part.get("offset"), part.get("size")
            digest, state = part.get("sha256"), part.get("remote_state")
            if not all(
                isinstance(v, int) and not isinstance(v, bool) for v in (index, start, size)
            ):
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

    # -- cache and uncache (owner or staff; the caller has checked who may see the file)

    async def uncache(self, blob_id: int) -> None:
        released = await self._db.run(self._uncache_txn, blob_id, self._clock.seconds())
        await self._record("info", "uncache", f"blob {blob_id} uncached: kept only in S3",
                           blob=blob_id, replicas=released)  # fmt: skip

    @staticmethod
    def _uncache_txn(txn: Txn, blob_id: int, now: float) -> int:
        row = txn.one(
            "SELECT sha256, remote_state, remote_verified, local FROM blobs WHERE id = ?"
            + txn.for_update,
            (blob_id,),
        )
        if row is None:
            raise Conflict("This file's content is gone")
        sha256, state, verified, local = row
        if state == REMOTE:
            return 0  # already uncached: nothing to do
        if state != MIRRORED or not int(verified):
            raise Conflict(
                "This file is not mirrored to S3 and verified yet, so its local copies are"
                f" kept (remote_state: {state})",
                remote_state=state,
            )
        if int(local):
            raise Conflict(
                "This file is still being placed on storage nodes; uncache it once that is done",
                remote_state=state,
            )
        replicas = nodestore.replicas_of(txn, [blob_id])[blob_id]
        for replica in replicas:
            nodestore.drop_replica(txn, blob_id, replica.node, replica_key(blob_id, sha256))
        txn.execute(
            "UPDATE blobs SET remote_state = ?, mirror_node = NULL, restore_detail = ''"
            " WHERE id = ?",
            (REMOTE, blob_id),
        )
        return len(replicas)

    async def cache(self, blob_id: int) -> str:
        """Queue a restore from S3 (a second request joins the first); returns the state."""
        state, queued = await self._db.run(self._cache_txn, blob_id, self._clock.seconds())
        if queued:
            await self._record("info", "restore", f"restore of blob {blob_id} from S3 queued",
                               blob=blob_id)  # fmt: skip
        return str(state)

    @staticmethod
    def _cache_txn(txn: Txn, blob_id: int, now: float) -> tuple[str, bool]:
        row = txn.one("SELECT remote_state FROM blobs WHERE id = ?" + txn.for_update, (blob_id,))
        if row is None:
            raise Conflict("This file's content is gone")
        state = row[0]
        if state == LOST:
            raise Conflict("This file's content is in neither a node nor the S3 bucket")
        if state != REMOTE:
            return state, False  # local, mirroring, mirrored: cached; restoring: joined
        txn.execute(
            "UPDATE blobs SET remote_state = ?, restore_requested_at = ?, restore_node = NULL,"
            " parts_restored = 0, restore_detail = '' WHERE id = ?",
            (RESTORING, now, blob_id),
        )
        return RESTORING, True

    async def state_of(self, blob_id: int) -> str | None:
        return await self._db.run(
            lambda txn: txn.scalar("SELECT remote_state FROM blobs WHERE id = ?", (blob_id,))
        )

    async def view(self, blob_id: int) -> dict[str, Any]:
        """What the file detail shows about the remote tier for one blob."""
        return await self._db.run(remote_view, blob_id)

    # -- S3 objects of deleted blobs

    async def clean_once(self) -> dict[str, int]:
        """Remove due S3 objects of deleted blobs; failures wait longer each time."""
        settings = await self._active()
        if settings is None:
            return {"removed": 0, "failed": 0}
        due = await self._db.run(_due_deletions, self._clock.seconds())
        removed = failed = 0
        client: Any = None  # one boto3 client per pass, made only when there is work
        for key, sha256, attempts in due:
            if not await self._db.run(_still_unused, key, sha256):
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
                    _deletion_failed, key, now + retry_delay(attempts), str(exc)[:300]
                )
                log.warn("removing {key} from S3 failed: {exc}", key=key, exc=exc)
                continue
            removed += 1
            await self._db.run(_deletion_done, key, sha256)
            await self._record("info", "s3-delete", f"removed {key} from S3", key=key)
        return {"removed": removed, "failed": failed}


def _due_deletions(txn: Txn, now: float) -> list[tuple[str, str, int]]:
    rows = txn.all(
        "SELECT object_key, sha256, attempts FROM s3_deletions WHERE next_attempt_at <= ?"
        " ORDER BY next_attempt_at LIMIT 100",
        (now,),
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


def _still_unused(txn: Txn, key: str, sha256: str) -> bool:
    """Whether the object may go: no blob has that content again (if one has, the queued
    deletion is dropped and the object stays for the new blob)."""
    if txn.scalar("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,)) is None:
        return True
    txn.execute("DELETE FROM s3_deletions WHERE object_key = ?", (key,))
    return False


def _deletion_failed(txn: Txn, key: str, retry_at: float, detail: str) -> None:
    txn.execute(
        "UPDATE s3_deletions SET attempts = attempts + 1, next_attempt_at = ?, detail = ?"
        " WHERE object_key = ?",
        (retry_at, detail, key),
    )


def _deletion_done(txn: Txn, key: str, sha256: str) -> None:
    txn.execute("DELETE FROM s3_deletions WHERE object_key = ?", (key,))
    # The same content may have been uploaded again while the object was being removed: its
    # mirror (perhaps satisfied by the object we just removed) must be made again.
    txn.execute(
        "UPDATE blobs SET remote_state = ?, remote_verified = 0, mirror_node = NULL"
        " WHERE sha256 = ? AND remote_state IN (?, ?)",
        (LOCAL, sha256, MIRRORING, MIRRORED),
    )


def remote_view(txn: Txn, blob_id: int) -> dict[str, Any]:
    row = txn.one(
        "SELECT remote_state, remote_verified, mirror_node, mirror_detail, restore_node,"
        " parts_restored, restore_detail FROM blobs WHERE id = ?",
        (blob_id,),
    )
    if row is None:
        return {"remote_state": LOST, "parts": []}
    state, verified, mirror_node, mirror_detail, restore_node, restored, restore_detail = row
    parts = [
        {"index": int(i), "offset": int(s), "size": int(z), "sha256": h, "remote_state": rs}
        for i, s, z, h, rs in txn.all(
            "SELECT idx, start, size, sha256, remote_state FROM blob_parts WHERE blob_id = ?"
            " ORDER BY idx",
            (blob_id,),
        )
    ]
    return {
        "remote_state": state,
        "remote_verified": bool(verified),
        "mirror_node": mirror_node,
        "mirror_detail": mirror_detail,
        "parts": parts,
        "restore": {
            "node": restore_node,
            "parts_restored": int(restored),
            "parts_total": len(parts),
            "detail": restore_detail,
        },
    }
