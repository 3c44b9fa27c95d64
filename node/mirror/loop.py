"""The node's S3 mirror loop: upload the blobs the proxy assigns, restore the ones it asks for.

The proxy sends the node its whole want-list (``sync``); the node keeps it durably
(``node.mirror.state``) and works through it in passes driven by a ``LoopingCall``:

- **Mirror** a blob as an S3 multipart upload to ``<prefix>/<sha256>``: accept an object that
  is already there with the same content (content-addressed), else open an upload (or resume
  the one on record: ListParts says which parts S3 already holds, so a restart or an outage
  never starts over), upload the missing parts a few at a time, each with its sha256 and its
  md5 checked against the returned ETag, complete, and check the object (size, metadata,
  multipart ETag, SHA256 checksum) before calling it ``mirrored``. Meanwhile the whole local
  replica is hashed once, so content that rotted on this disk is never mirrored as good.
- **Restore** a blob with ranged GETs of its parts into ``incoming/<key>``, each part's
  sha256 checked against the proxy's; the whole file is then confirmed like a pushed replica.
  A part that does not match fails the restore for good (while it stays listed): S3's copy is
  damaged, and retrying would not repair it.
- **Drop** what is no longer wanted: abort the multipart upload (and check S3 forgot it), or
  remove the partial restore.

A failure never escapes a pass: the blob goes back to ``pending`` (or ``failed``) with its
attempts counted and a growing wait before the next try. boto3 calls and file I/O run on a
bounded thread pool; the reactor thread only decides.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from botocore.exceptions import ClientError
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredSemaphore,
    ensureDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from common.durable import fsync_dir
from common.errors import ApiError
from common.s3 import S3Settings, make_client
from node.config import NodeConfig
from node.mirror.bandwidth import TokenBucket
from node.mirror.s3blob import (
    ListedPart,
    LocalChanged,
    Mismatch,
    RemoteBlobs,
    UploadGone,
    check_object,
    claims_blob,
    describe,
    hash_file,
    listed_matches,
)
from node.mirror.state import (
    FAILED,
    MIRROR,
    MIRRORED,
    PENDING,
    RESTORED,
    RESTORING,
    UPLOADED,
    UPLOADING,
    Blob,
    MirrorRecord,
    Part,
    Record,
    RestoreRecord,
    StateDir,
    encode,
    kind_of,
    layout_of,
    plan_parts,
    retry_delay,
)
from node.mirror.wire import RestoreWant, WantList
from node.replicas.store import Expected, Replicas

log = Logger()

P = ParamSpec("P")
R = TypeVar("R")
MAX_EVENTS = 1000
ClientFactory = Callable[[S3Settings], Any]


@dataclass(frozen=True)
class MirrorSettings:
    interval: float = 5.0
    part_size: int = 8 * 2**20
    parts_in_flight: int = 4
    bandwidth: int = 0  # bytes per second for all transfers together; 0: no limit
    retry_base: float = 5.0
    retry_max: float = 600.0
    restore_parts_in_flight: int = 4
    list_page_size: int = 1000  # ListParts MaxParts (S3's largest page)

    @property
    def threads(self) -> int:
        """Worker threads: every part in flight, plus room for the steps between them."""
        return self.parts_in_flight + self.restore_parts_in_flight + 4

    @classmethod
    def from_config(cls, config: NodeConfig) -> MirrorSettings:
        return cls(
            interval=config.mirror_interval,
            part_size=config.mirror_part_size,
            parts_in_flight=config.mirror_parts_in_flight,
            bandwidth=config.mirror_bandwidth,
            retry_max=config.mirror_retry_max,
            restore_parts_in_flight=config.restore_parts_in_flight,
        )


class NotHeld(Exception):
    """This node has no confirmed replica of a blob it was asked to mirror."""


class PartCorrupt(Exception):
    """A part fetched from S3 does not have the sha256 the proxy recorded for it."""


class Interrupted(Exception):
    """The blob was dropped from the want-list, or the node is stopping, mid-way."""


class MirrorEngine:
    """The mirror and restore work of one node.

    ``sync(want)`` replaces the want-list and answers with the state of everything on it;
    ``run_once()`` is one pass (the ``LoopingCall`` calls it every ``interval`` seconds; a
    call while a pass runs waits for that pass instead of starting another).
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        threads: IReactorThreads,
        pool: ThreadPool,
        replicas: Replicas,
        state: StateDir,
        settings: MirrorSettings,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self._clock = clock
        self._threads = threads
        self._pool = pool
        self._replicas = replicas
        self._state = state
        self.settings = settings
        self._client_factory = client_factory or (
            lambda s: make_client(s, max_pool_connections=settings.threads)
        )
        self.throttle = TokenBucket(settings.bandwidth)
        self.interval = settings.interval
        self._mirrors: dict[str, MirrorRecord] = {}
        self._restores: dict[str, RestoreRecord] = {}
        self._connection: S3Settings | None = None
        self._remote: RemoteBlobs | None = None
        self._active: set[str] = set()
        self._events: list[dict[str, Any]] = []
        self._stopping = False
        self._pass: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []
        self._persisting: set[tuple[str, str]] = set()
        self._persist_waiters: dict[tuple[str, str], list[Deferred[None]]] = {}
        self._loop = LoopingCall(self.run_once)
        self._loop.clock = clock
        self.last_run: float | None = None
        self.last_duration: float | None = None
        self.last_ok: bool | None = None
        self.last_result = ""

    # -- life

    async def start(self) -> None:
        """Load the records kept on disk and start the loop (its first pass one interval on)."""
        await self._io(self._state.create)
        mirrors, restores = await self._io(self._state.load)
        self._mirrors = {r.blob.key: r for r in mirrors}
        self._restores = {r.blob.key: r for r in restores}
        self._loop.start(self.interval, now=False)

    async def stop(self) -> None:
        """Stop the loop and wake throttled transfers; wait for the current pass to end."""
        self._stopping = True
        if self._loop.running:
            self._loop.stop()
        self.throttle.close()
        if self._pass is not None:
            await self.run_once()

    # -- the proxy's sync

    async def sync(self, want: WantList) -> dict[str, Any]:
        """Replace the want-list with ``want``, keep it durably, and report on all of it."""
        if want.connection != self._connection:
            self._connection, self._remote = want.connection, None
        if want.interval is not None and want.interval != self.interval:
            self.set_interval(want.interval)
        changed = self._want_mirrors(want.mirror) + self._want_restores(want.restore)
        await DeferredList(
            [ensureDeferred(self._persist(record)) for record in changed], consumeErrors=True
        )
        if self._loop.running and self._pass is None and self._has_due_work():
            self.run_once()  # new work starts now, not one interval later
        return self.report(drain=True)

    def _want_mirrors(self, blobs: tuple[Blob, ...]) -> list[Record]:
        """Take ``blobs`` as the blobs to mirror; the records that changed."""
        changed: list[Record] = []
        wanted = {blob.key for blob in blobs}
        for key, old in self._mirrors.items():
            if key not in wanted and not old.dropped:
                old.dropped, old.attempts, old.next_attempt_at = True, 0, 0.0
                changed.append(old)
        for blob in blobs:
            record = self._mirrors.get(blob.key)
            if record is not None and record.blob == blob:
                if record.dropped:
                    record.dropped = False
                    changed.append(record)
                continue
            if record is not None and blob.key in self._active:
                record.dropped = True  # the running upload stops; the new record waits
            self._mirrors[blob.key] = MirrorRecord(blob)
            changed.append(self._mirrors[blob.key])
        return changed

    def _want_restores(self, items: tuple[RestoreWant, ...]) -> list[Record]:
        """Take ``items`` as the blobs to restore; the records that changed."""
        changed: list[Record] = []
        wanted = {item.blob.key for item in items}
        for key, old in self._restores.items():
            if key not in wanted and not old.dropped:
                old.dropped = True
                changed.append(old)
        for item in items:
            record = self._restores.get(item.blob.key)
            if record is not None and record.blob == item.blob and _layout(record) == item.parts:
                if record.dropped:
                    record.dropped = False
                    changed.append(record)
                continue
            if record is not None and item.blob.key in self._active:
                record.dropped = True  # the running restore stops; the new record waits
            self._restores[item.blob.key] = RestoreRecord(
                item.blob, [replace(p) for p in item.parts]
            )
            changed.append(self._restores[item.blob.key])
        return changed

    def set_interval(self, seconds: float) -> None:
        """Run passes every ``seconds`` from now on (the next one within that time)."""
        self.interval = seconds
        self._loop.interval = seconds
        call = self._loop.call
        if call is not None and call.active() and call.getTime() > self._clock.seconds() + seconds:
            call.reset(seconds)

    def report(self, *, drain: bool = False) -> dict[str, Any]:
        """The sync answer: every wanted blob's state, the loop as a job, and new events."""
        events = self._events
        if drain:
            self._events = []
        return {
            "mirror": [_mirror_view(r) for r in self._mirrors.values() if not r.dropped],
            "restore": [_restore_view(r) for r in self._restores.values() if not r.dropped],
            "job": self.job(),
            "events": list(events),
        }

    def job(self) -> dict[str, Any]:
        call = self._loop.call
        return {
            "name": "mirror",
            "interval": self.interval,
            "running": self._pass is not None,
            "last_run": self.last_run,
            "last_duration": self.last_duration,
            "last_ok": self.last_ok,
            "last_result": self.last_result,
            "next_run": call.getTime() if call is not None and call.active() else None,
        }

    # -- passes

    def run_once(self) -> Deferred[None]:
        """One pass over the want-list; while one runs, a Deferred for its end instead."""
        if self._pass is not None:
            waiter: Deferred[None] = Deferred()
            self._waiters.append(waiter)
            return waiter
        if self._stopping:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._waiters.append(done)  # first: a pass with nothing to wait for ends at once
        running = ensureDeferred(self._run_pass())
        if not running.called:
            self._pass = running
        running.addBoth(self._pass_ended)
        return done

    def _pass_ended(self, result: object) -> None:
        self._pass = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _run_pass(self) -> None:
        started = self._clock.seconds()
        self.last_run = started
        try:
            await self._forget_dropped_locally()
            remote = await self._remote_blobs()
            if remote is None:
                ok, result = True, "idle: no S3 connection"
            else:
                tally: dict[str, int] = {}
                await DeferredList(
                    [
                        ensureDeferred(self._mirror_all(remote, tally)),
                        ensureDeferred(self._restore_all(remote, tally)),
                    ],
                    consumeErrors=True,
                    fireOnOneErrback=False,
                )
                self._count_waiting(tally)
                ok = not any(tally.get(k) for k in ("failed", "retry", "waiting"))
                result = _summary(tally)
        except Exception as exc:  # a pass never raises: the loop must keep running
            log.failure("mirror pass failed")
            ok, result = False, f"error: {describe(exc)}"
        self.last_ok, self.last_result = ok, result
        self.last_duration = self._clock.seconds() - started

    def _count_waiting(self, tally: dict[str, int]) -> None:
        """Blobs waiting to try again after an earlier pass's failure."""
        now = self._clock.seconds()
        records: list[Record] = [*self._mirrors.values(), *self._restores.values()]
        waiting = sum(
            1
            for r in records
            if r.attempts and r.next_attempt_at > now and r.state in (PENDING, FAILED, RESTORING)
        )
        waiting -= tally.get("retry", 0) + tally.get("failed", 0)  # those failed just now
        if waiting > 0:
            tally["waiting"] = waiting

    async def _remote_blobs(self) -> RemoteBlobs | None:
        settings = self._connection
        if settings is None:
            return None
        if self._remote is None or self._remote.settings != settings:
            client = await self._io(self._client_factory, settings)
            if settings != self._connection:  # replaced while the client was made
                return None
            self._remote = RemoteBlobs(
                client, settings, self.throttle, page_size=self.settings.list_page_size
            )
        return self._remote

    def _has_due_work(self) -> bool:
        for mirror in self._mirrors.values():
            if self._due(mirror) and (mirror.dropped or mirror.state != MIRRORED):
                return True
        return any(
            self._due(r) and (r.dropped or r.state == RESTORING) for r in self._restores.values()
        )

    def _due(self, record: Record) -> bool:
        return record.next_attempt_at <= self._clock.seconds() and not self._stopping

    # -- mirror

    async def _mirror_all(self, remote: RemoteBlobs, tally: dict[str, int]) -> None:
        for key in list(self._mirrors):
            record = self._mirrors.get(key)
            if record is None or key in self._active or not self._due(record):
                continue
            if record.dropped:
                await self._abort(remote, record, tally)
                continue
            if record.state == MIRRORED:
                if record.target == remote.target(record.blob):
                    continue
                record.state, record.verified = PENDING, False  # another bucket now
            await self._mirror(remote, record, tally)

    async def _mirror(
        self, remote: RemoteBlobs, record: MirrorRecord, tally: dict[str, int]
    ) -> None:
        key = record.blob.key
        self._active.add(key)
        record.state, record.detail = UPLOADING, ""
        try:
            accepted = await self._upload(remote, record)
        except Exception as exc:
            self._mirror_failed(record, exc, tally)
        else:
            record.state, record.verified, record.detail = MIRRORED, True, ""
            record.next_attempt_at = 0.0
            tally["mirrored"] = tally.get("mirrored", 0) + 1
            how = "was already in S3 with the same content" if accepted else "is mirrored to S3"
            self._event(
                "info",
                "mirror.completed",
                f"blob {key} {how} ({record.blob.size} "
                f"bytes in {len(record.parts)} parts, verified)",
                key,
            )
        finally:
            self._active.discard(key)
            await self._persist_quietly(record)

    def _mirror_failed(self, record: MirrorRecord, exc: Exception, tally: dict[str, int]) -> None:
        for part in record.parts:
            if part.remote_state == UPLOADING:
                part.remote_state = PENDING
        key = record.blob.key
        if isinstance(exc, Interrupted) or self._stopping:  # not the blob's fault: no backoff
            record.state, record.detail = PENDING, "interrupted: the node is stopping"
            if isinstance(exc, Interrupted):
                record.detail = str(exc)
            return
        record.attempts += 1
        wait = retry_delay(record.attempts, self.settings.retry_base, self.settings.retry_max)
        record.next_attempt_at = self._clock.seconds() + wait
        gone = isinstance(exc, (NotHeld, LocalChanged))
        record.state = FAILED if gone else PENDING
        record.detail = f"{describe(exc)} (attempt {record.attempts}; next try in {wait:g} s)"
        tally["failed" if gone else "retry"] = tally.get("failed" if gone else "retry", 0) + 1
        self._event(
            "error" if gone else "warn",
            "mirror.failed",
            f"mirror of blob {key} failed: {record.detail}",
            key,
        )

    async def _upload(self, remote: RemoteBlobs, record: MirrorRecord) -> bool:
        """Mirror one blob, resuming what is on record; True if S3 already had it."""
        blob = record.blob
        path = self._replicas.store.path(blob.key)
        try:
            size = (await self._io(os.stat, path)).st_size
        except FileNotFoundError:
            raise NotHeld(f"this node holds no replica {blob.key}") from None
        if size != blob.size:
            raise LocalChanged(f"replica {blob.key} has {size} bytes, not {blob.size}")
        target = remote.target(blob)
        listed: dict[int, ListedPart] = {}
        if record.target != target:
            record.target, record.upload_id, record.parts = target, None, []
        if record.upload_id is not None and not record.parts:  # a record cut short: resume
            record.parts = plan_parts(blob.size, record.part_size or self.settings.part_size)
        if record.upload_id is not None:
            try:
                listed = await self._io(remote.list_parts, target.object_key, record.upload_id)
            except UploadGone:
                self._event(
                    "info",
                    "mirror.restarted",
                    f"S3 no longer knows the upload of blob {blob.key}: starting a new one",
                    blob.key,
                )
                record.upload_id = None
        if record.upload_id is None:
            if await self._accept_existing(remote, record, path):
                return True
            record.parts = plan_parts(blob.size, self.settings.part_size)
            record.part_size = record.parts[0].size
            record.upload_id = await self._io(remote.create_upload, target.object_key, blob)
            self._event(
                "info",
                "mirror.started",
                f"mirroring blob {blob.key} to S3 in {len(record.parts)} parts",
                blob.key,
            )
            await self._persist(record)
        await self._reconcile(record, listed, path)
        whole = ensureDeferred(self._io(hash_file, path))
        try:
            await self._upload_parts(remote, record, path)
        finally:
            hashes = await whole
        if (hashes.md5, hashes.sha256) != (blob.md5, blob.sha256):
            await self._quarantine(blob)
            raise LocalChanged(
                f"replica {blob.key} no longer has its md5 and sha256: not "
                "mirrored (quarantined for the proxy's scrub)"
            )
        upload_id = record.upload_id
        assert upload_id is not None
        await self._io(remote.complete, target.object_key, upload_id, record.parts)
        record.upload_id = None  # completed: S3 forgets the upload
        await self._persist(record)
        found = await self._io(remote.head, target.object_key)
        problem = check_object(found, blob, record.parts)
        if problem is not None:
            raise Mismatch(f"the completed object failed its check: {problem}")
        return False

    async def _accept_existing(self, remote: RemoteBlobs, record: MirrorRecord, path: Path) -> bool:
        """True if the object is already in S3 with this blob's content (then nothing is sent).

        Its size and metadata must match, and its ETag the one this replica's parts give in
        the object's own part layout."""
        blob = record.blob
        assert record.target is not None
        found = await self._io(remote.head, record.target.object_key)
        if found is None or not claims_blob(found, blob):
            return False  # none, or not ours: a new upload replaces it
        count = int(found.etag.rpartition("-")[2]) if "-" in found.etag else 1
        first = blob.size
        if count > 1:
            try:
                first = await self._io(remote.first_part_size, record.target.object_key)
            except ClientError:
                return False  # a server that cannot say: upload it again to be sure
        layout = layout_of(blob.size, first, count)
        if layout is None:
            return False
        hashes = await self._io(hash_file, path, layout)
        if (hashes.md5, hashes.sha256) != (blob.md5, blob.sha256):
            await self._quarantine(blob)
            raise LocalChanged(f"replica {blob.key} no longer has its md5 and sha256")
        for part, (md5, sha256) in zip(layout, hashes.parts, strict=True):
            part.md5, part.sha256, part.remote_state = md5, sha256, UPLOADED
        if check_object(found, blob, layout) is not None:
            return False
        record.parts, record.part_size = layout, layout[0].size
        return True

    async def _reconcile(
        self, record: MirrorRecord, listed: dict[int, ListedPart], path: Path
    ) -> None:
        """Count a part S3 lists as uploaded only if it is this replica's part (size, md5,
        sha256); parts hashed in an earlier life are hashed again only when S3 lists them."""
        unknown = [p for p in record.parts if p.index in listed and p.md5 is None]
        if unknown:
            hashes = await self._io(hash_file, path, unknown)
            for part, (md5, sha256) in zip(unknown, hashes.parts, strict=True):
                part.md5, part.sha256 = md5, sha256
        for part in record.parts:
            seen = listed.get(part.index)
            part.remote_state = (
                UPLOADED if seen is not None and listed_matches(seen, part) else PENDING
            )
        await self._persist(record)

    async def _upload_parts(self, remote: RemoteBlobs, record: MirrorRecord, path: Path) -> None:
        assert record.target is not None and record.upload_id is not None
        object_key, upload_id = record.target.object_key, record.upload_id
        failures: list[Exception] = []

        async def one(part: Part) -> None:
            if failures or self._stopping or record.dropped:
                return
            part.remote_state = UPLOADING
            try:
                md5, sha256 = await self._io(remote.upload_part, object_key, upload_id, part, path)
            except Exception as exc:
                part.remote_state = PENDING
                failures.append(exc)
                return
            part.md5, part.sha256, part.remote_state = md5, sha256, UPLOADED
            await self._persist_quietly(record)

        limit = DeferredSemaphore(self.settings.parts_in_flight)
        todo = [p for p in record.parts if p.remote_state != UPLOADED]
        await DeferredList([limit.run(one, p) for p in todo], consumeErrors=True)
        if failures:
            raise failures[0]
        if self._stopping or record.dropped:
            raise Interrupted(
                "interrupted: " + ("the node is stopping" if self._stopping else "no longer wanted")
            )

    async def _abort(
        self, remote: RemoteBlobs, record: MirrorRecord, tally: dict[str, int]
    ) -> None:
        """Abort a dropped blob's upload, check S3 forgot it, and forget the blob."""
        key = record.blob.key
        target, upload_id = record.target, record.upload_id
        if target is not None and upload_id is not None:
            if target != remote.target(record.blob):
                self._event(
                    "warn",
                    "mirror.aborted",
                    f"blob {key} is no longer wanted; its "
                    f"upload in bucket {target.bucket} is left to that bucket's "
                    "lifecycle rules (another connection is active)",
                    key,
                )
            else:
                try:
                    await self._io(remote.abort, target.object_key, upload_id)
                except Exception as exc:
                    record.attempts += 1
                    wait = retry_delay(
                        record.attempts, self.settings.retry_base, self.settings.retry_max
                    )
                    record.next_attempt_at = self._clock.seconds() + wait
                    record.detail = f"abort failed: {describe(exc)}"
                    tally["retry"] = tally.get("retry", 0) + 1
                    reason = f"{describe(exc)}; next try in {wait:g} s"
                    self._event(
                        "warn",
                        "mirror.aborted",
                        f"abort of blob {key}'s upload failed: {reason}",
                        key,
                    )
                    await self._persist_quietly(record)
                    return
                self._event(
                    "info",
                    "mirror.aborted",
                    f"blob {key} is no longer wanted: its "
                    "multipart upload is aborted (S3 no longer lists it)",
                    key,
                )
        tally["aborted"] = tally.get("aborted", 0) + 1
        await self._forget(record)

    async def _quarantine(self, blob: Blob) -> None:
        try:
            await self._replicas.verify(blob.key, Expected(blob.size, blob.sha256))
        except ApiError:
            pass  # quarantined (Conflict) or gone (NotFound): the proxy's scrub finds out

    # -- restore

    async def _restore_all(self, remote: RemoteBlobs, tally: dict[str, int]) -> None:
        for key in list(self._restores):
            record = self._restores.get(key)
            if record is None or record.dropped or key in self._active:
                continue
            if record.state != RESTORING or not self._due(record):
                continue
            await self._restore(remote, record, tally)

    async def _restore(
        self, remote: RemoteBlobs, record: RestoreRecord, tally: dict[str, int]
    ) -> None:
        blob = record.blob
        self._active.add(blob.key)
        try:
            await self._fetch(remote, record)
            # Only now does it take the replica's name in incoming/: a replica deletion the
            # proxy queued before this restore (an uncache) cannot remove the parts on the way.
            await self._io(
                _move_into, self._partial_path(blob.key), self._replicas.store.incoming / blob.key
            )
            await self._replicas.confirm(blob.key, Expected(blob.size, blob.sha256, blob.md5))
        except (PartCorrupt, ApiError) as exc:
            record.state = FAILED
            record.detail = str(exc.detail if isinstance(exc, ApiError) else exc)
            await self._remove_partial(record)
            tally["failed"] = tally.get("failed", 0) + 1
            self._event(
                "error",
                "restore.failed",
                f"restore of blob {blob.key} failed: {record.detail}; nothing was kept",
                blob.key,
            )
        except Exception as exc:
            if isinstance(exc, Interrupted) or self._stopping:  # not the blob's fault
                record.detail = str(exc) if isinstance(exc, Interrupted) else "interrupted"
                return
            record.attempts += 1
            wait = retry_delay(record.attempts, self.settings.retry_base, self.settings.retry_max)
            record.next_attempt_at = self._clock.seconds() + wait
            record.detail = f"{describe(exc)} (attempt {record.attempts}; next try in {wait:g} s)"
            tally["retry"] = tally.get("retry", 0) + 1
            self._event(
                "warn",
                "restore.retry",
                f"restore of blob {blob.key} paused: {record.detail}",
                blob.key,
            )
        else:
            record.state, record.detail = RESTORED, ""
            tally["restored"] = tally.get("restored", 0) + 1
            what = f"{blob.size} bytes, {len(record.parts)} parts verified"
            self._event(
                "info",
                "restore.completed",
                f"blob {blob.key} is restored from S3 ({what})",
                blob.key,
            )
        finally:
            self._active.discard(blob.key)
            await self._persist_quietly(record)

    async def _fetch(self, remote: RemoteBlobs, record: RestoreRecord) -> None:
        """Every part not yet written, a few at a time, each checked against its sha256."""
        blob = record.blob
        if await self._io(self._replicas.store.path(blob.key).exists):
            return  # already confirmed here: confirm answers as before
        object_key = remote.settings.object_key(blob.sha256)
        fd, kept = await self._io(_open_partial, self._partial_path(blob.key), blob.size)
        if not kept:  # the partial file is new (or was not the right size): start over
            for part in record.parts:
                part.done = False
        failures: list[Exception] = []

        async def one(part: Any) -> None:
            if failures or self._stopping or record.dropped:
                return
            try:
                sha256 = await self._io(remote.download_part, object_key, part, fd)
            except Exception as exc:
                failures.append(exc)
                return
            if sha256 != part.sha256:
                failures.append(
                    PartCorrupt(
                        f"part {part.index} (bytes {part.offset}-{part.offset + part.size - 1}) "
                        f"from S3 has sha256 {sha256}, not {part.sha256}: the copy in S3 is damaged"
                    )
                )
                return
            part.done = True
            await self._persist_quietly(record)

        try:
            limit = DeferredSemaphore(self.settings.restore_parts_in_flight)
            todo = [p for p in record.parts if not p.done]
            await DeferredList([limit.run(one, p) for p in todo], consumeErrors=True)
        finally:
            await self._io(os.close, fd)
        corrupt = [f for f in failures if isinstance(f, PartCorrupt)]
        if corrupt or failures:
            raise (corrupt or failures)[0]
        if self._stopping or record.dropped:
            raise Interrupted(
                "interrupted: " + ("the node is stopping" if self._stopping else "no longer wanted")
            )

    async def _remove_partial(self, record: RestoreRecord) -> None:
        for part in record.parts:
            part.done = False
        await self._io(_unlink, self._partial_path(record.blob.key))
        await self._io(_unlink, self._replicas.store.incoming / record.blob.key)

    def _partial_path(self, key: str) -> Path:
        """Where a restore writes its parts: beside incoming/'s replicas, under its own name."""
        return self._replicas.store.incoming / f"{key}.restoring"

    # -- dropped without S3

    async def _forget_dropped_locally(self) -> None:
        """Forget dropped blobs that need no S3 call: restores (their partial file is removed)
        and mirrors without an open upload."""
        for restore in [r for r in self._restores.values() if r.dropped]:
            if restore.blob.key in self._active:
                continue
            if restore.state != RESTORED:
                try:
                    await self._remove_partial(restore)
                except OSError as exc:
                    log.warn(
                        "cannot remove the partial restore of {key}: {exc}",
                        key=restore.blob.key,
                        exc=exc,
                    )
                    continue
            await self._forget(restore)
        for mirror in [m for m in self._mirrors.values() if m.dropped and m.upload_id is None]:
            if mirror.blob.key not in self._active:
                await self._forget(mirror)

    async def _forget(self, record: Record) -> None:
        table: dict[str, Any] = (
            self._mirrors if isinstance(record, MirrorRecord) else self._restores
        )
        if table.get(record.blob.key) is record:
            del table[record.blob.key]
        await self._persist_quietly(record)

    # -- keeping records

    async def _persist(self, record: Record) -> None:
        """Write the record's current state (or remove its file once it is forgotten).

        Writes of one record are serialised and coalesced: a caller waits for a write that
        began after its call, and many part completions during one write make one more."""
        slot = (kind_of(record), record.blob.key)
        waiter: Deferred[None] = Deferred()
        self._persist_waiters.setdefault(slot, []).append(waiter)
        if slot not in self._persisting:
            self._persisting.add(slot)
            ensureDeferred(self._persist_loop(slot))
        await waiter

    async def _persist_loop(self, slot: tuple[str, str]) -> None:
        kind, key = slot
        try:
            while waiters := self._persist_waiters.pop(slot, None):
                table: dict[str, Any] = self._mirrors if kind == MIRROR else self._restores
                current: Record | None = table.get(key)
                error: Exception | None = None
                try:
                    if current is None:
                        await self._io(self._state.remove, kind, key)
                    else:
                        await self._io(self._state.write, kind, key, encode(current))
                except Exception as exc:
                    error = exc
                for waiter in waiters:
                    if error is None:
                        waiter.callback(None)
                    else:
                        waiter.errback(error)
        finally:
            self._persisting.discard(slot)

    async def _persist_quietly(self, record: Record) -> None:
        try:
            await self._persist(record)
        except Exception:
            log.failure("cannot save the mirror state of {key}", key=record.blob.key)

    # -- plumbing

    def _event(self, level: str, event: str, message: str, key: str) -> None:
        self._events.append(
            {
                "at": self._clock.seconds(),
                "level": level,
                "event": event,
                "message": message,
                "key": key,
            }
        )
        del self._events[:-MAX_EVENTS]
        emit = {"info": log.info, "warn": log.warn, "error": log.error}[level]
        emit("{event}: {message}", event=event, message=message)

    def _io(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Deferred[R]:
        return deferToThreadPool(self._threads, self._pool, function, *args, **kwargs)


# ---------------------------------------------------------------- helpers


def _layout(record: RestoreRecord) -> tuple[Any, ...]:
    return tuple(replace(p, done=False) for p in record.parts)


def _mirror_view(record: MirrorRecord) -> dict[str, Any]:
    return {
        "key": record.blob.key,
        "state": record.state,
        "verified": record.verified,
        "parts": [
            {
                "index": p.index,
                "offset": p.offset,
                "size": p.size,
                "sha256": p.sha256,
                "remote_state": p.remote_state,
            }
            for p in record.parts
        ],
        "detail": record.detail,
        "attempts": record.attempts,
    }


def _restore_view(record: RestoreRecord) -> dict[str, Any]:
    return {
        "key": record.blob.key,
        "state": record.state,
        "parts_restored": record.parts_restored,
        "parts_total": len(record.parts),
        "detail": record.detail,
    }


def _summary(tally: dict[str, int]) -> str:
    words = [
        f"{tally[k]} {k}"
        for k in ("mirrored", "restored", "aborted", "retry", "failed", "waiting")
        if tally.get(k)
    ]
    return ", ".join(words) or "nothing to do"


def _open_partial(path: Path, size: int) -> tuple[int, bool]:
    """The restore's file in ``incoming/``, sized (sparse) so parts land at their offsets;
    and whether it was there already with that size (so parts written before are kept)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    try:
        kept = os.fstat(fd).st_size == size and size > 0
        if not kept:
            os.ftruncate(fd, 0)
            os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd, kept


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _move_into(partial: Path, target: Path) -> None:
    """Give a fully fetched restore the replica's name in incoming/ (a rename, made durable)."""
    if partial.exists():
        os.replace(partial, target)
        fsync_dir(target.parent)
