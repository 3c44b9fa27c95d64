"""A TCP relay for tests of bad links: between a client and a server on 127.0.0.1, it can
limit the bandwidth each way, reset every connection after so many bytes upstream or stall it
(nothing more goes either way, as through a link that hangs), and it counts what the client
sent. Blocking threads, like ``tests/proc.py``.

    with Relay(proxy.port, rate=5 * MiB, reset_every=3 * MiB) as relay:
        run_client(f"http://127.0.0.1:{relay.port}")
        relay.sent  # bytes the client sent through it
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from types import TracebackType

_PIECE = 64 * 1024


class Relay:
    def __init__(
        self,
        target_port: int,
        *,
        rate: float | None = None,
        reset_every: int | None = None,
        down_rate: float | None = None,
        stall_after: int | None = None,
    ) -> None:
        self.target_port = target_port
        self.rate = rate  # bytes per second, client to server; None: as fast as it goes
        self.down_rate = down_rate  # the same, server to client
        self.reset_every = reset_every  # bytes per connection, client to server, then RST
        # Bytes per connection, client to server, after which nothing more is passed on either
        # way; what the client sends is swallowed until it gives up and closes, and then the
        # server's side is reset (so the server lets go of the upload at once).
        self.stall_after = stall_after
        self.stalls = 0
        self.sent = 0  # client to server, over every connection
        self.resets = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closing = False
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="relay")

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, server))
            state = {"up": 0, "stalled": 0}
            threading.Thread(
                target=self._pump, args=(client, server, state, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, state, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, state: dict[str, int], up: bool
    ) -> None:
        started = time.monotonic()
        moved = 0
        try:
            while True:
                data = source.recv(_PIECE)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                if state["stalled"]:  # the server's answer to a stalled request: never told
                    return
                if up and self.stall_after is not None:
                    room = self.stall_after - state["up"]
                    if room <= len(data):
                        sink.sendall(data[:room])
                        self._count(room)
                        state["stalled"] = 1
                        self.stalls += 1
                        self._swallow_then_reset(source, sink)
                        return
                if up and self.reset_every is not None:
                    room = self.reset_every - state["up"]
                    if room <= len(data):
                        sink.sendall(data[:room])
                        self._count(room)
                        self.resets += 1
                        _reset(source)
                        _reset(sink)
                        return
                sink.sendall(data)
                moved += len(data)
                if up:
                    state["up"] += len(data)
                    self._count(len(data))
                rate = self.rate if up else self.down_rate
                if rate is not None:
                    ahead = moved / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            _close(source)
            _close(sink)
        finally:
            with self._lock:
                self._sockets.discard(source)

    def _swallow_then_reset(self, client: socket.socket, server: socket.socket) -> None:
        """A stalled connection: read and drop what the client sends until it closes."""
        try:
            while client.recv(_PIECE):
                pass
        except OSError:
            pass
        _reset(server)
        _close(client)

    def _count(self, size: int) -> None:
        with self._lock:
            self.sent += size


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a reset link looks to both ends. The read side
    is shut first: that wakes the other direction's thread, blocked reading this socket,
    which would otherwise keep it open (and the peer would never hear of the reset)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
