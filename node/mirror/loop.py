"""The node's S3 mirror loop: upload the blobs the proxy assigns, restore the ones it asks for.

The proxy sends the node its want-list, whole or as the changes since the node's cursor
(``sync``, ``node.mirror.wire``); the node keeps it durably (``node.mirror.ledger``, its
journal ``node.mirror.journal``) and works through it in passes driven by a
``LoopingCall``. Each pass, for every blob that is due:

- **Mirror** it to S3 as a multipart upload, resumable and verified (``node.mirror.upload``).
- **Restore** it from S3 into ``incoming/``, each part verified (``node.mirror.restore``).
- **Drop** what is no longer wanted: abort the multipart upload (and check S3 forgot it), or
  remove the partial restore.

A failure never escapes a pass: the blob goes back to ``pending`` (or ``failed``) with its
attempts counted and a growing wait before the next try. boto3 calls and file I/O run on a
bounded thread pool; the reactor thread only decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from common.s3 import S3Settings, make_client
from node.mirror import wanting
from node.mirror.bandwidth import TokenBucket
from node.mirror.journal import Journal
from node.mirror.ledger import Ledger, Threads
from node.mirror.restore import Restorer
from node.mirror.s3blob import RemoteBlobs, describe
from node.mirror.settings import MirrorSettings
from node.mirror.state import (
    FAILED,
    MIRRORED,
    PENDING,
    RESTORED,
    RESTORING,
    MirrorRecord,
    Record,
    RestoreRecord,
)
from node.mirror.upload import Uploader
from node.mirror.wire import WantList
from node.replicas.store import Replicas

__all__ = ["ClientFactory", "MirrorEngine", "MirrorSettings"]

log = Logger()

ClientFactory = Callable[[S3Settings], Any]


class MirrorEngine:
    """The mirror and restore work of one node.

    ``sync(want)`` replaces the want-list (or changes it by a delta) and answers with the
    state of everything on it;
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
        state: Journal,
        settings: MirrorSettings,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self._clock = clock
        self._io = Threads(threads, pool)
        self._replicas = replicas
        self.settings = settings
        self._client_factory = client_factory or (
            lambda s: make_client(s, max_pool_connections=settings.threads)
        )
        self.throttle = TokenBucket(settings.bandwidth)
        self.interval = settings.interval
        self._ledger = Ledger(clock, self._io, state, settings)
        self._uploader = Uploader(self._ledger, self._io, replicas, settings)
        self._restorer = Restorer(self._ledger, self._io, replicas, settings)
        self._connection: S3Settings | None = None
        self._remote: RemoteBlobs | None = None
        self._pass: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []
        self._loop = LoopingCall(self.run_once)
        self._loop.clock = clock
        self.last_run: float | None = None
        self.last_duration: float | None = None
        self.last_ok: bool | None = None
        self.last_result = ""

    # -- life

    async def start(self) -> None:
        """Load the records kept on disk and start the loop (its first pass one interval on)."""
        await self._ledger.load()
        self._loop.start(self.interval, now=False)

    async def stop(self) -> None:
        """Stop the loop and wake throttled transfers; wait for the current pass to end."""
        self._ledger.stopping = True
        if self._loop.running:
            self._loop.stop()
        self.throttle.close()
        if self._pass is not None:
            await self.run_once()

    # -- the proxy's sync

    async def sync(self, want: WantList) -> dict[str, Any]:
        """Take ``want`` (the whole want-list, or a delta the journal can take,
        ``node.mirror.wanting``), keep it durably with its cursor, and report on the wanted
        blobs (with a delta, those changed since the answer the proxy says it recorded)."""
        if want.connection != self._connection:
            self._connection, self._remote = want.connection, None
        if want.interval is not None and want.interval != self.interval:
            self.set_interval(want.interval)
        applied = wanting.takes(self._ledger, want)
        if applied:
            try:
                await self._ledger.persist_all(
                    wanting.take(self._ledger, want), want.cursor.to if want.cursor else None
                )
            except Exception:
                log.failure("cannot save the mirror's want-list")
                applied = False
        if self._loop.running and self._pass is None and self._has_due_work():
            self.run_once()  # new work starts now, not one interval later
        reported = want.reported
        since = None
        if not want.complete and reported is not None and reported[0] == self._ledger.report_id:
            since = reported[1]
        report = self.report(drain=True, since=since)
        report["cursor"] = {"state": self._ledger.state_id, "at": self._ledger.cursor}
        report["applied"] = applied
        report["reported"] = {"boot": self._ledger.report_id, "at": self._ledger.changes}
        return report

    def set_interval(self, seconds: float) -> None:
        """Run passes every ``seconds`` from now on (the next one within that time)."""
        self.interval = seconds
        self._loop.interval = seconds
        call = self._loop.call
        if call is not None and call.active() and call.getTime() > self._clock.seconds() + seconds:
            call.reset(seconds)

    def report(self, *, drain: bool = False, since: int | None = None) -> dict[str, Any]:
        """The sync answer: every wanted blob's state (only those changed after the change
        numbered ``since``, if given), the loop as a job, and new events."""
        events = self._ledger.events(drain=drain)
        ledger = self._ledger

        def told(record: Record) -> bool:
            return not record.dropped and (since is None or ledger.changed_since(record, since))

        return {
            "mirror": [_mirror_view(r) for r in ledger.mirrors.values() if told(r)],
            "restore": [_restore_view(r) for r in ledger.restores.values() if told(r)],
            "job": self.job(),
            "events": events,
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
        if self._ledger.stopping:
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
        records: list[Record] = [*self._ledger.mirrors.values(), *self._ledger.restores.values()]
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
        for mirror in self._ledger.mirrors.values():
            if self._due(mirror) and (mirror.dropped or mirror.state != MIRRORED):
                return True
        return any(
            self._due(r) and (r.dropped or r.state == RESTORING)
            for r in self._ledger.restores.values()
        )

    def _due(self, record: Record) -> bool:
        return record.next_attempt_at <= self._clock.seconds() and not self._ledger.stopping

    # -- the work of a pass

    async def _mirror_all(self, remote: RemoteBlobs, tally: dict[str, int]) -> None:
        for key in list(self._ledger.mirrors):
            record = self._ledger.mirrors.get(key)
            if record is None or key in self._ledger.active or not self._due(record):
                continue
            if record.dropped:
                await self._uploader.abort(remote, record, tally)
                continue
            if record.state == MIRRORED:
                if record.target == remote.target(record.blob):
                    continue
                record.state, record.verified = PENDING, False  # another bucket now
            await self._uploader.mirror(remote, record, tally)

    async def _restore_all(self, remote: RemoteBlobs, tally: dict[str, int]) -> None:
        for key in list(self._ledger.restores):
            record = self._ledger.restores.get(key)
            if record is None or record.dropped or key in self._ledger.active:
                continue
            if record.state != RESTORING or not self._due(record):
                continue
            await self._restorer.restore(remote, record, tally)

    # -- dropped without S3

    async def _forget_dropped_locally(self) -> None:
        """Forget dropped blobs that need no S3 call: restores (their partial file is removed)
        and mirrors without an open upload."""
        for restore in [r for r in self._ledger.restores.values() if r.dropped]:
            if restore.blob.key in self._ledger.active:
                continue
            if restore.state != RESTORED:
                try:
                    await self._restorer.remove_partial(restore)
                except OSError as exc:
                    log.warn(
                        "cannot remove the partial restore of {key}: {exc}",
                        key=restore.blob.key,
                        exc=exc,
                    )
                    continue
            await self._ledger.forget(restore)
        for mirror in [
            m for m in self._ledger.mirrors.values() if m.dropped and m.upload_id is None
        ]:
            if mirror.blob.key not in self._ledger.active:
                await self._ledger.forget(mirror)


# ---------------------------------------------------------------- helpers


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
