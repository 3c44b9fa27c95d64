"""One ``GET /api/events`` response: a user's events as server-sent events, for as long as
the client stays.

The stream is a push producer on its request. It keeps nothing but its cursor: it reads at
most one batch from the table, writes it, and reads on only while the transport is not paused
and there is more (or news). A client that stops reading pauses the transport, so the stream
stops reading too and stays behind in the table; if pruning passes its cursor, the next read
is a reset. Memory per stream is one batch and the transport's buffer, whatever is recorded.

Every ``keepalive`` seconds a comment keeps proxies from closing the idle connection. When
the client goes away, the timers stop and the stream leaves the hub.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer  # type: ignore[import-untyped]

from proxy.events import kinds, sse
from proxy.events.eventstore import Slice
from proxy.events.hub import EventHub

log = Logger()

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}


def encode(found: Slice) -> bytes:
    """What a read writes to the stream: its events, or a reset and the new position."""
    if found.reset:
        return sse.json_message({}, event=kinds.RESET) + sse.cursor(found.cursor)
    return b"".join(
        sse.json_message(event.data, event=event.type, id=event.seq) for event in found.events
    )


@implementer(IPushProducer)
class EventStream:
    def __init__(self, hub: EventHub, request: Request, user_id: int, since: int | None) -> None:
        self._hub = hub
        self._request = request
        self.user_id = user_id
        self.cursor = since  # None: start at the newest event, once read
        self.parked = False
        self._pending = True  # read at once
        self._paused = False
        self._reading = False
        self._over = False
        self._done: Deferred[None] = Deferred(lambda _: self.close())
        self._keepalive = LoopingCall(self._keep_alive)
        self._keepalive.clock = hub.clock

    def start(self) -> Deferred[None]:
        """Answer the request with the stream; fires when the stream is over."""
        request = self._request
        request.setResponseCode(200)
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        request.notifyFinish().addBoth(self._finished)
        request.registerProducer(self, True)  # type: ignore[no-untyped-call]
        self._write(sse.comment("connected"))  # the headers go out now, not at the first event
        self._keepalive.start(self._hub.keepalive, now=False)
        self._hub.join(self)  # before the first read: a wake during it is not lost
        self._pump()
        return self._done

    # -- IPushProducer: the transport's pace

    def pauseProducing(self) -> None:
        self._paused = True
        self._park_if_idle()

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._end(finish=False)

    # -- the hub's side

    def woken(self) -> None:
        self._pending = True
        self._pump()

    def close(self) -> None:
        """End the stream from this side (the proxy is stopping, or the route was cancelled)."""
        self._end(finish=True)

    # -- reading and writing

    def _pump(self) -> None:
        if self._reading or self._over:
            return
        if self._paused or not self._pending:
            self._park_if_idle()
            return
        self._reading = True
        self.parked = False
        ensureDeferred(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending and not self._paused and not self._over:
                self._pending = False
                await self._read_once()
        except Exception:
            log.failure("reading events for user {user} failed", user=self.user_id)
        finally:
            self._reading = False
            self._park_if_idle()

    async def _read_once(self) -> None:
        if self.cursor is None:
            newest = await self._hub.head(self.user_id)
            if not self._over:
                self.cursor = newest
                self._write(sse.cursor(newest))  # a reconnect resumes from here
            return
        found = await self._hub.read(self.user_id, self.cursor)
        if self._over:
            return
        self._write(encode(found))
        self.cursor = found.cursor
        if len(found.events) >= self._hub.batch:
            self._pending = True  # there may be more; read on unless paused meanwhile

    def _write(self, data: bytes) -> None:
        if data and not self._over:
            self._request.write(data)

    def _keep_alive(self) -> None:
        if not self._paused:  # a paused transport is not idle, and must not grow
            self._write(sse.KEEP_ALIVE)

    def _park_if_idle(self) -> None:
        idle = not self._reading and not self._over and (self._paused or not self._pending)
        if idle and not self.parked:
            self.parked = True
            self._hub.parked(self)

    # -- the end

    def _finished(self, _: object) -> None:
        """The response is over: finished here, or the client went away."""
        self._end(finish=False)

    def _end(self, *, finish: bool) -> None:
        if self._over:
            return
        self._over = True
        self.parked = False
        if self._keepalive.running:
            self._keepalive.stop()
        self._hub.leave(self)
        request = self._request  # a finished request has no channel attribute at all
        if getattr(request, "producer", None) is not None:  # also when the client went away,
            if getattr(request, "channel", None) is not None:  # else finish() would raise
                request.unregisterProducer()  # type: ignore[no-untyped-call]
            else:  # the channel is gone already: only the request's own record is left
                request.producer = None
        if finish and getattr(request, "channel", None) is not None and not request.finished:
            request.finish()  # type: ignore[no-untyped-call]
        if not self._done.called:
            self._done.callback(None)
