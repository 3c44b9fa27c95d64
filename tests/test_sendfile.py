"""``serve_file`` sending with ``os.sendfile`` (common.sendfile) over real loopback sockets:
byte-exact bodies around the boundaries, slow readers, clients that leave, and the fallback
to the reading producer for TLS and for several ranges."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site
from zope.interface import provider

import common.sendfile
from tests.test_fileserve import (
    TIMEOUT,
    Download,
    FileApp,
    HangUpOnFirstBytes,
    Server,
    open_files,
)
from tests.test_https import self_signed

TURN = 100_003  # a small turn, so that a few hundred KiB cross several turn boundaries


@dataclass
class Sends:
    """What went through os.sendfile while a test ran."""

    calls: int = 0
    sent: int = 0
    would_block: int = 0


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> Sends:
    real = os.sendfile
    seen = Sends()

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        seen.calls += 1
        try:
            sent = real(out_fd, in_fd, offset, count)
        except BlockingIOError:
            seen.would_block += 1
            raise
        seen.sent += sent
        return sent

    monkeypatch.setattr(os, "sendfile", counting)
    monkeypatch.setattr(common.sendfile, "TURN_BYTES", TURN)
    return seen


@pytest.fixture
def errors() -> Iterator[list[LogEvent]]:
    """Every error or critical event logged while a test ran."""
    seen: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        level = event.get("log_level")
        if event.get("log_failure") is not None or (
            level is not None and level.name in {"error", "critical"}
        ):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


@dataclass
class TlsServer:
    app: FileApp
    port: int
    cert: Path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    """The same app on a TLS endpoint with a self-signed certificate."""
    key, cert = self_signed(tmp_path)
    app = FileApp()
    endpoint = serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    listening = pytest_twisted.blockon(endpoint.listen(Site(app.app.resource())))
    address = listening.getHost()
    assert isinstance(address, IPv4Address), address
    yield TlsServer(app, address.port, cert)
    pytest_twisted.blockon(listening.stopListening())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """Plain HTTP on loopback, with a keep-alive connection pool."""
    app = FileApp()
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    listening = pytest_twisted.blockon(endpoint.listen(Site(app.app.resource())))
    address = listening.getHost()
    assert isinstance(address, IPv4Address), address
    pool = HTTPConnectionPool(reactor, persistent=True)
    client = HTTPClient(Agent(reactor, pool=pool))
    yield Server(app, address.port, client, tmp_path)
    pytest_twisted.blockon(pool.closeCachedConnections())
    pytest_twisted.blockon(listening.stopListening())


@pytest.mark.parametrize("size", [1, 2, TURN - 1, TURN, TURN + 1, 3 * TURN + 1])
@pytest_twisted.inlineCallbacks
def test_a_whole_file_and_its_second_half_are_sent_byte_exact_with_sendfile(
    server: Server, sends: Sends, size: int
) -> Generator[Deferred[Any], Any, None]:
    content = os.urandom(size)
    path = server.serve(content)
    whole = yield server.get()
    assert whole.code == 200
    assert (yield whole.content()) == content
    half = yield server.get(Range=f"bytes={size // 2}-")
    assert half.code == 206
    assert (yield half.content()) == content[size // 2 :]
    assert sends.sent == size + size - size // 2
    assert str(path) not in open_files()
    for response in server.app.responses:
        assert response.called


@pytest.mark.parametrize(
    "first, last",
    [(0, 0), (TURN - 1, TURN), (TURN, 2 * TURN), (1, 3 * TURN - 1), (3 * TURN, 3 * TURN)],
)
@pytest_twisted.inlineCallbacks
def test_single_ranges_across_turn_boundaries_are_byte_exact(
    server: Server, sends: Sends, first: int, last: int
) -> Generator[Deferred[Any], Any, None]:
    content = os.urandom(3 * TURN + 1)
    server.serve(content)
    response = yield server.get(Range=f"bytes={first}-{last}")
    assert response.code == 206
    assert (yield response.content()) == content[first : last + 1]
    assert sends.sent == last + 1 - first


@pytest_twisted.inlineCallbacks
def test_several_ranges_and_head_do_not_use_sendfile(
    server: Server, sends: Sends
) -> Generator[Deferred[Any], Any, None]:
    content = os.urandom(3 * TURN)
    server.serve(content)
    several = yield server.get(Range="bytes=0-9,-10")
    assert several.code == 206
    body = yield several.content()
    assert content[:10] in body and content[-10:] in body
    head = yield server.head()
    assert head.code == 200
    assert (yield head.content()) == b""
    assert sends.calls == 0


@pytest_twisted.inlineCallbacks
def test_the_body_goes_out_corked_and_the_connection_is_uncorked_once_it_is_over(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    """TCP_CORK while sendfile runs, so the kernel sends full segments (nginx's tcp_nopush;
    a Range to a fast reader ran at 0.77x nginx without it, 1.07x with it); off once the
    answer is over, or the next answer on the kept-alive connection would wait for the
    kernel's 200 ms cork timer."""
    real = os.sendfile
    peers: list[socket.socket] = []  # the server's sockets, duplicated, to read their options
    corked: list[int] = []

    def watching(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        peer = socket.fromfd(out_fd, socket.AF_INET, socket.SOCK_STREAM)
        peers.append(peer)
        corked.append(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK))
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", watching)
    content = os.urandom(3 * TURN)
    server.serve(content)
    try:
        for headers in ({}, {"Range": f"bytes={TURN}-"}):
            response = yield server.get(**headers)
            assert (yield response.content()) == content[TURN if headers else 0 :]
            assert corked and all(corked), corked
            assert peers[-1].getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
            corked.clear()
    finally:
        for peer in peers:
            peer.close()


class RawGet(Protocol):
    """GET /file with ``Connection: close``; keeps everything received until the server
    closes. Reading starts paused when ``pause_for`` is set, so that the server's socket
    buffer fills up and os.sendfile has to wait; with ``hang_up`` the client then leaves
    instead of reading."""

    def __init__(self, pause_for: float = 0.0, *, hang_up: bool = False) -> None:
        self.received = bytearray()
        self.closed: Deferred[None] = Deferred()
        self._pause_for = pause_for
        self._hang_up = hang_up

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(b"GET /file HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        if self._pause_for:
            transport.pauseProducing()
            after = transport.abortConnection if self._hang_up else transport.resumeProducing
            reactor.callLater(self._pause_for, after)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)

    def body(self) -> bytes:
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head[:100]
        return body


@pytest_twisted.inlineCallbacks
def test_a_client_that_reads_late_still_gets_every_byte_in_order(
    server: Server, sends: Sends, errors: list[LogEvent], monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    monkeypatch.setattr(common.sendfile, "TURN_BYTES", 64 * 1024 * 1024)  # one turn would do
    content = os.urandom(16 * 1024 * 1024)  # more than the loopback socket buffers hold
    path = server.serve(content)
    client = RawGet(pause_for=0.3)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), client)
    yield client.closed.addTimeout(TIMEOUT, reactor)
    assert client.body() == content
    assert sends.would_block >= 1  # the socket was full: it had to wait until writable
    assert sends.sent == len(content)
    assert str(path) not in open_files()
    assert errors == []


@pytest.mark.parametrize("when", ["on the first bytes", "while the server waits to write"])
@pytest_twisted.inlineCallbacks
def test_a_client_that_leaves_mid_body_leaves_no_open_file_no_error_and_a_working_server(
    server: Server, sends: Sends, errors: list[LogEvent], when: str
) -> Generator[Deferred[Any], Any, None]:
    size = 32 * 1024 * 1024
    content = os.urandom(size)
    path = server.serve(content)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port)
    if when == "on the first bytes":
        leaving = HangUpOnFirstBytes()
        yield connectProtocol(endpoint, leaving)
        yield leaving.hung_up.addTimeout(TIMEOUT, reactor)
    else:
        waiting = RawGet(pause_for=0.3, hang_up=True)
        yield connectProtocol(endpoint, waiting)
        yield waiting.closed.addTimeout(TIMEOUT, reactor)
    yield server.app.responses[0].addTimeout(TIMEOUT, reactor)
    assert sends.sent < size
    assert str(path) not in open_files()
    assert errors == []
    response = yield server.get()  # the server goes on serving
    assert (yield response.content()) == content
    yield task.deferLater(reactor, 0, lambda: None)
    assert errors == []


@pytest_twisted.inlineCallbacks
def test_over_tls_the_reading_producer_sends_the_same_bytes(
    tls_server: TlsServer, tmp_path: Path, sends: Sends
) -> Generator[Deferred[Any], Any, None]:
    content = os.urandom(3 * TURN + 1)
    path = tmp_path / "stored"
    path.write_bytes(content)
    tls_server.app.download = Download(str(path), len(content))
    context = ssl.create_default_context(cafile=str(tls_server.cert))

    def fetch(headers: dict[str, str]) -> tuple[int, bytes]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", tls_server.port, context=context, timeout=TIMEOUT
        )
        try:
            connection.request("GET", "/file", headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    whole = yield deferToThread(fetch, {})
    assert whole == (200, content)
    ranged = yield deferToThread(fetch, {"Range": f"bytes={TURN}-"})
    assert ranged == (206, content[TURN:])
    assert sends.calls == 0
    assert str(path) not in open_files()
