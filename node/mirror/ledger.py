"""The mirror's books: kept by the engine (``node.mirror.loop``), shared with both sides.

A ``Ledger`` holds every wanted blob's record (mirrors and restores, by blob key), the blobs
being worked on right now, and whether the node is stopping; it keeps each record's durable
copy in the mirror's journal (``node.mirror.journal``, one SQLite file), collects the events
the proxy's next sync reports, and puts off a failed blob's next attempt. The upload side
(``node.mirror.upload``) and the restore side (``node.mirror.restore``) work through it.
``Threads`` runs the blocking steps (boto3, file I/O, hashing, the journal's SQLite) on the
mirror's own bounded pool; the reactor thread decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from common.backoff import retry_delay
from node.mirror.journal import Journal, Write
from node.mirror.settings import MirrorSettings
from node.mirror.state import MIRROR, MirrorRecord, Record, RestoreRecord, encode, kind_of

log = Logger()

P = ParamSpec("P")
R = TypeVar("R")
MAX_EVENTS = 1000


class Interrupted(Exception):
    """The blob was dropped from the want-list, or the node is stopping, mid-way."""


def interrupted(stopping: bool) -> Interrupted:
    """Why a transfer ended early when none of its steps failed."""
    return Interrupted(
        "interrupted: " + ("the node is stopping" if stopping else "no longer wanted")
    )


@dataclass(frozen=True)
class Threads:
    """Runs a blocking function on the mirror's thread pool; a Deferred for its result."""

    reactor: IReactorThreads
    pool: ThreadPool

    def __call__(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Deferred[R]:
        return deferToThreadPool(self.reactor, self.pool, function, *args, **kwargs)


class Ledger:
    """The records of one node's mirror work, in memory and on disk, and what happened to them.

    In memory, per blob: its record (the want-list entry, the upload id and target, and per
    part its offset, size, two hex hashes and state): about 0.8 kB for a one-part blob
    (tracemalloc, 10,000 records), some 350 bytes more per further part; so 100,000 one-part
    blobs hold some 80 MB. The journal is the durable copy; the engine
    decides from the records in memory."""

    def __init__(
        self, clock: IReactorTime, io: Threads, state: Journal, settings: MirrorSettings
    ) -> None:
        self._clock = clock
        self._io = io
        self._state = state
        self._settings = settings
        self.mirrors: dict[str, MirrorRecord] = {}
        self.restores: dict[str, RestoreRecord] = {}
        self.active: set[str] = set()  # keys of the blobs being uploaded or restored now
        self.stopping = False
        self._events: list[dict[str, Any]] = []
        self._persisting: set[tuple[str, str]] = set()
        self._persist_waiters: dict[tuple[str, str], list[Deferred[None]]] = {}
        self.state_id = ""  # the journal's id: a new one means the want-list was lost
        self.cursor: int | None = None  # the proxy's newest change recorded in the journal
        # Record changes are numbered (in memory, per run) so a sync reports only the records
        # changed since the answer the proxy last recorded; a new run reports everything.
        self.report_id = uuid.uuid4().hex
        self.changes = 0
        self._touched: dict[tuple[str, str], int] = {}

    async def load(self) -> None:
        """Read the records kept on disk (creating the journal if need be)."""
        await self._io(self._state.create)
        mirrors, restores = await self._io(self._state.load)
        self.state_id, self.cursor = await self._io(self._state.identity)
        self.mirrors = {r.blob.key: r for r in mirrors}
        self.restores = {r.blob.key: r for r in restores}

    # -- retries

    def back_off(self, record: Record) -> float:
        """Count a failed attempt and put off the next one; the wait in seconds."""
        record.attempts += 1
        wait = retry_delay(record.attempts, self._settings.retry_base, self._settings.retry_max)
        record.next_attempt_at = self._clock.seconds() + wait
        return wait

    # -- events

    def event(self, level: str, event: str, message: str, key: str) -> None:
        """Log ``message`` and keep it (the newest ``MAX_EVENTS``) for the next sync."""
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

    def events(self, *, drain: bool = False) -> list[dict[str, Any]]:
        """The events kept so far; with ``drain``, they are no longer kept."""
        events = self._events
        if drain:
            self._events = []
        return list(events)

    # -- what changed since a report

    def touch(self, record: Record) -> None:
        """Number a change of ``record`` (or a reason to report it again)."""
        self.changes += 1
        self._touched[(kind_of(record), record.blob.key)] = self.changes

    def changed_since(self, record: Record, change: int) -> bool:
        return self._touched.get((kind_of(record), record.blob.key), 0) > change

    # -- keeping records

    async def forget(self, record: Record) -> None:
        """Take the record off its table (if it is still the one there) and off the disk."""
        table: dict[str, Any] = self.mirrors if isinstance(record, MirrorRecord) else self.restores
        if table.get(record.blob.key) is record:
            del table[record.blob.key]
        await self.persist_quietly(record)
        if record.blob.key not in table:
            self._touched.pop((kind_of(record), record.blob.key), None)

    async def persist(self, record: Record) -> None:
        """Write the record's current state (or remove its file once it is forgotten).

        Writes of one record are serialised and coalesced: a caller waits for a write that
        began after its call, and many part completions during one write make one more."""
        slot = (kind_of(record), record.blob.key)
        self.touch(record)
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
                table: dict[str, Any] = self.mirrors if kind == MIRROR else self.restores
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

    async def persist_all(self, records: list[Record], cursor: int | None) -> None:
        """Write every record's current state and the proxy's ``cursor`` (if not None) in one
        transaction: a sync's thousands of new blobs are one commit, not one each. A record
        whose own write is under way is written by that write first; the cursor is recorded
        only once every record is."""
        for record in records:
            self.touch(record)
        slots = {(kind_of(r), r.blob.key) for r in records}
        busy = [r for r in records if (kind_of(r), r.blob.key) in self._persisting]
        for record in busy:
            await self.persist(record)
        slots -= self._persisting
        self._persisting |= slots
        try:
            writes: list[Write] = []
            for kind, key in sorted(slots):
                table: dict[str, Any] = self.mirrors if kind == MIRROR else self.restores
                current: Record | None = table.get(key)
                writes.append((kind, key, None if current is None else encode(current)))
            await self._io(self._state.apply, writes, cursor)
            if cursor is not None:
                self.cursor = cursor
        finally:
            self._persisting -= slots
            for slot in slots & set(self._persist_waiters):
                self._persisting.add(slot)  # a write asked for meanwhile runs now
                ensureDeferred(self._persist_loop(slot))

    async def persist_quietly(self, record: Record) -> None:
        """``persist``, with a failure logged rather than raised."""
        try:
            await self.persist(record)
        except Exception:
            log.failure("cannot save the mirror state of {key}", key=record.blob.key)
