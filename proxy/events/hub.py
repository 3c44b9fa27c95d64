"""The events hub: readers of each user's feed, woken when it grows; the long poll; pruning.

The database is the buffer. A reader (an SSE stream, a waiting long poll) keeps only its
cursor and reads at most ``batch`` events at a time from the table. It is woken two ways:

- at once, in this process, by the code that committed events (``wake``, reactor thread);
- every ``poll_interval``, by one query for the newest id of every user someone here is
  reading, so events recorded by another proxy sharing the database arrive too.

Pruning drops events older than the retention; a cursor that falls behind what is kept is
answered with a reset rather than a silent gap. Time is read from an injected clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from common.db import Database
from proxy.events import eventstore
from proxy.events.eventstore import Slice

log = Logger()


class Reader(Protocol):
    """One open view of a user's feed, as the hub sees it."""

    user_id: int
    cursor: int | None  # the newest id it has; None until it knows where it starts
    parked: bool  # waiting for news: not reading, nothing left to read (or paused)

    def woken(self) -> None: ...

    def close(self) -> None: ...


class EventHub:
    def __init__(
        self,
        db: Database,
        clock: IReactorTime,
        *,
        poll_interval: float = 2.0,
        keepalive: float = 15.0,
        batch: int = 100,
    ) -> None:
        self._db = db
        self.clock = clock
        self.poll_interval = poll_interval
        self.keepalive = keepalive
        self.batch = batch
        self._readers: dict[int, set[Reader]] = {}
        self._settling: dict[int, list[Deferred[None]]] = {}
        self._loop: LoopingCall | None = None
        self._closed = False

    # -- readers

    def join(self, reader: Reader) -> None:
        if self._closed:  # the proxy is stopping: no new readers
            reader.close()
            return
        self._readers.setdefault(reader.user_id, set()).add(reader)
        if self._loop is None:
            self._loop = LoopingCall(lambda: ensureDeferred(self._tick()))
            self._loop.clock = self.clock
            self._loop.start(self.poll_interval, now=False)

    def leave(self, reader: Reader) -> None:
        readers = self._readers.get(reader.user_id, set())
        readers.discard(reader)
        if not readers:
            self._readers.pop(reader.user_id, None)
        if not self._readers and self._loop is not None:
            # A fresh LoopingCall next time: a tick still running belongs to this one.
            self._loop.stop()
            self._loop = None

    def wake(self, user_ids: Iterable[int]) -> None:
        """Events of these users were committed: their readers here read now."""
        for user_id in set(user_ids):
            for reader in list(self._readers.get(user_id, ())):
                reader.woken()

    def parked(self, reader: Reader) -> None:
        """A reader has caught up (or is paused): fire ``settled`` waiters if all have."""
        self._check_settled(reader.user_id)

    def settled(self, user_id: int) -> Deferred[None]:
        """Fires once this user has a reader here and every one of them is waiting for news
        (tests use it to know that a stream has written all it had)."""
        waiter: Deferred[None] = Deferred()
        self._settling.setdefault(user_id, []).append(waiter)
        self._check_settled(user_id)
        return waiter

    def _check_settled(self, user_id: int) -> None:
        readers = self._readers.get(user_id, set())
        if readers and all(r.parked for r in readers):
            for waiter in self._settling.pop(user_id, []):
                waiter.callback(None)

    async def _tick(self) -> None:
        """Wake every reader whose user has events it has not read (from any proxy). Never
        raises: a failed tick is logged, and the loop goes on."""
        try:
            await self._poll()
        except Exception:
            log.failure("looking for new events failed; trying again next tick")

    async def _poll(self) -> None:
        users = sorted(self._readers)
        if not users:
            return
        newest = await self._db.run(eventstore.heads, users)
        for user_id in users:
            for reader in list(self._readers.get(user_id, ())):
                if reader.cursor is not None and newest.get(user_id, 0) != reader.cursor:
                    reader.woken()

    # -- reading

    async def read(self, user_id: int, since: int) -> Slice:
        return await self._db.run(eventstore.read_since, user_id, since, self.batch)

    async def head(self, user_id: int) -> int:
        return await self._db.run(eventstore.head, user_id)

    async def changes(self, user_id: int, since: int | None, timeout: float) -> Slice:
        """The long poll: events after ``since``, waiting up to ``timeout`` seconds for one.

        Without ``since``, no events and the newest id: where a new client starts.
        """
        deadline = self.clock.seconds() + timeout
        if since is None:
            newest = await self.head(user_id)
            return Slice((), newest, False, newest)
        poll = _Poll(self, user_id, since)
        self.join(poll)  # before the first read: a wake during it is not lost
        try:
            found = await self.read(user_id, since)
            while not (found.events or found.reset or self._closed):
                left = deadline - self.clock.seconds()
                if left <= 0:
                    break
                await poll.wait(left)
                found = await self.read(user_id, since)
            return found
        finally:
            poll.close()
            self.leave(poll)

    # -- upkeep

    async def prune(self, retention: float) -> dict[str, int]:
        """Drop events older than ``retention`` seconds, user by user; how many went."""
        before = self.clock.seconds() - retention
        pruned = 0
        seen: set[int] = set()
        while True:
            users = [
                u
                for u in await self._db.run(eventstore.users_with_events_before, before)
                if u not in seen
            ]
            if not users:
                break
            for user_id in users:
                pruned += await self._db.run(eventstore.prune_user, user_id, before)
            seen.update(users)
        self.wake(seen)  # readers left behind learn it (a reset) now
        return {"pruned_events": pruned, "users": len(seen)}

    def close(self) -> None:
        """End every stream and long poll (the proxy is stopping)."""
        self._closed = True
        for readers in list(self._readers.values()):
            for reader in list(readers):
                reader.close()
        if self._loop is not None:
            self._loop.stop()
            self._loop = None


class _Poll:
    """A long poll waiting for news: woken by the hub, or given up at its deadline."""

    def __init__(self, hub: EventHub, user_id: int, since: int) -> None:
        self._hub = hub
        self.user_id = user_id
        self.cursor: int | None = since
        self.parked = False
        self._news = False
        self._signal: Deferred[None] | None = None
        self._timer: IDelayedCall | None = None

    def woken(self) -> None:
        if self._signal is not None:
            self._fire()
        else:
            self._news = True  # it is reading: it reads again before waiting

    def close(self) -> None:
        self._fire()

    def wait(self, seconds: float) -> Deferred[None]:
        if self._news:
            self._news = False
            return succeed(None)
        # Cancelled (the client went away): only the timer goes; the poll ends with it.
        signal: Deferred[None] = Deferred(lambda _: self._stop_timer())
        self._signal = signal
        self._timer = self._hub.clock.callLater(seconds, self._fire)
        self.parked = True
        self._hub.parked(self)  # may run a waiter at once, which may even fire the signal
        return signal

    def _fire(self) -> None:
        self.parked = False
        self._stop_timer()
        signal, self._signal = self._signal, None
        if signal is not None and not signal.called:
            signal.callback(None)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
