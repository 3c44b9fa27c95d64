"""One stretch of a file sent as a response body with ``os.sendfile``, straight from the page
cache to the socket: no read into Python, no copy through Twisted's write buffer.

Only for a response on a plain TCP connection (``sendfile_socket`` says whether it is one);
TLS, HTTP/2 and anything else keep ``common.fileserve``'s reading producer. The socket is
non-blocking, so ``os.sendfile`` sends what fits and then raises ``BlockingIOError``; the
producer then waits for the transport to say it can write again. The wait uses the
transport's own machinery: the HTTP channel is the transport's streaming producer, and a
transport whose producer is marked paused resumes it (the channel, which resumes this
producer) as soon as its buffer is empty and the socket writable. So every send starts with
nothing buffered in Twisted, and the bytes stay in order: headers first, then the body.
"""

from __future__ import annotations

import os
import socket
from typing import BinaryIO

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer  # type: ignore[import-untyped]

TURN_BYTES = 16 * 1024 * 1024
"""The most one reactor turn sends before it lets other connections have theirs."""
SENDFILE = hasattr(os, "sendfile")
"""Whether this platform has ``os.sendfile`` at all (tests turn it off to check the fallback)."""

_log = Logger()


def sendfile_socket(request: Request) -> tcp.Connection | None:
    """The plain TCP transport ``request``'s body can be sent to with ``os.sendfile``, if any.

    None for TLS (the bytes must pass through the TLS layer), for HTTP/2 (a stream is not a
    socket), for a chunked response (the body needs framing), and whenever the transport is
    not wired the way ``SendfileProducer`` relies on: the HTTP channel as its streaming
    producer.
    """
    channel = request.channel
    if not SENDFILE or channel is None or getattr(request, "chunked", False):
        return None
    transport = getattr(channel, "transport", None)
    if not isinstance(transport, tcp.Connection) or transport is not request.transport:
        return None
    if ISSLTransport.providedBy(transport) or getattr(transport, "TLS", False):
        return None
    if transport.producer is not channel or not transport.streamingProducer:
        return None
    return transport


@implementer(IPushProducer)
class SendfileProducer:
    """Sends ``length`` bytes of ``file`` from ``offset`` as ``request``'s body, then finishes it.

    ``start`` writes the headers and returns a Deferred that fires with None once the
    response is over (sent, or abandoned because the client left or the file is shorter than
    promised: then the connection is aborted and the fault logged); it never fails. The
    producer closes ``file`` on every path.
    """

    def __init__(
        self,
        request: Request,
        transport: tcp.Connection,
        file: BinaryIO,
        path: str,
        offset: int,
        length: int,
    ) -> None:
        self._request = request
        self._transport = transport
        self._channel = request.channel
        self._file = file
        self._path = path
        self._offset = offset
        self._left = length
        self._paused = False
        self._done: Deferred[None] = Deferred(lambda _: self._abort())

    def start(self) -> Deferred[None]:
        self._request.notifyFinish().addBoth(self._over)
        self._cork(True)
        self._request.registerProducer(self, True)  # type: ignore[no-untyped-call]
        self._request.write(b"")  # type: ignore[no-untyped-call]  # the headers, buffered
        if self._left == 0:
            self._finish()
        else:
            self._when_writable()
        return self._done

    # -- IPushProducer, called by the HTTP channel

    def resumeProducing(self) -> None:
        self._paused = False
        self._send()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        """The connection is gone: stop. ``_over`` fires ``done`` when Twisted says so."""
        self._file.close()

    # -- sending

    def _send(self) -> None:
        if self._file.closed or self._paused:
            return
        if not _nothing_buffered(self._transport):
            self._when_writable()
            return
        socket_fd, file_fd = self._transport.fileno(), self._file.fileno()
        turn = TURN_BYTES
        while self._left and turn:
            try:
                sent = os.sendfile(socket_fd, file_fd, self._offset, min(self._left, turn))
            except BlockingIOError:
                break
            except ConnectionError:  # the client left (EPIPE, ECONNRESET): nothing to log
                self._abort()
                return
            except OSError as problem:  # the disk failed
                self._give_up("cannot send", problem)
                return
            if sent == 0:
                end = self._offset + self._left
                self._give_up("it is shorter than its size", f"ends at {self._offset}, not {end}")
                return
            self._offset += sent
            self._left -= sent
            turn -= min(sent, turn)
            self._request.sentLength += sent
        if self._left:
            self._progress()
            self._when_writable()
        else:
            self._finish()

    def _when_writable(self) -> None:
        """Have the transport resume the channel, and so this producer, once it can write."""
        self._transport.producerPaused = True
        self._transport.startWriting()

    def _progress(self) -> None:
        reset = getattr(self._channel, "resetTimeout", None)
        if reset is not None:  # bytes left without passing channel.write: not idle
            reset()

    def _finish(self) -> None:
        self._progress()
        self._file.close()
        self._request.unregisterProducer()  # type: ignore[no-untyped-call]
        self._request.finish()  # type: ignore[no-untyped-call]
        self._cork(False)

    def _cork(self, on: bool) -> None:
        """TCP_CORK while the body goes out: the kernel sends only full segments (the headers
        ride with the first bytes of the file), as nginx's ``tcp_nopush``; uncorking at the
        end sends the tail at once."""
        try:
            self._transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))
        except (OSError, AttributeError):  # not Linux, or the connection is gone
            pass

    def _give_up(self, why: str, problem: object) -> None:
        _log.error(
            "Aborting download of {path}: {why}: {problem}",
            path=self._path,
            why=why,
            problem=problem,
        )
        self._abort()

    def _abort(self) -> None:
        """Give up on the response: the client sees the connection break, not a short body."""
        if self._file.closed:
            return
        self._file.close()
        self._request.unregisterProducer()  # type: ignore[no-untyped-call]
        self._transport.abortConnection()

    def _over(self, result: object) -> None:
        self._file.close()
        if not self._done.called:
            self._done.callback(None)


def _nothing_buffered(transport: tcp.Connection) -> bool:
    """Whether Twisted holds no bytes for the socket (else a sendfile would overtake them)."""
    pending = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return pending <= 0 and not getattr(transport, "_tempDataLen", 0)
