"""``serve_file`` behind a real Klein app on a loopback port, fetched with treq (what is
particular to sending with ``os.sendfile`` is in tests/test_sendfile.py)."""

from __future__ import annotations

import email
import email.policy
import io
import json
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from klein import Klein
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.server import Request, Site
from zope.interface import provider

import common.sendfile
from common import fileserve
from common.fileserve import CHUNK_SIZE, serve_file
from common.httprange import format_http_date
from tests.conftest import request_headers

ETAG = '"sha256-0123abcd"'
# Sun, 06 Nov 1994 08:49:37 GMT
MODIFIED = 784111777.5
CONTENT = bytes(range(256)) * 40  # 10240 bytes, every byte value, no repeats within 256
TIMEOUT = 20


@dataclass
class Download:
    """What the app serves at /file: a path on disk and what the caller knows about it."""

    path: str
    size: int
    filename: str = "backup.bin"
    content_type: str = "application/octet-stream"


@dataclass
class FileApp:
    """A thin route, as the proxy and the nodes will have: look up the file, serve it."""

    download: Download | None = None
    responses: list[Deferred[None]] = field(default_factory=list)

    app = Klein()

    @app.route("/file", methods=["GET", "HEAD"])
    def file(self, request: Request) -> Deferred[None]:
        assert self.download is not None
        response = serve_file(
            request,
            self.download.path,
            size=self.download.size,
            etag=ETAG,
            last_modified=MODIFIED,
            filename=self.download.filename,
            content_type=self.download.content_type,
        )
        self.responses.append(response)
        return response


@dataclass
class Server:
    app: FileApp
    port: int
    client: HTTPClient
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file"

    def serve(self, content: bytes, *, size: int | None = None, **details: Any) -> Path:
        path = self.directory / "stored"
        path.write_bytes(content)
        self.app.download = Download(str(path), len(content) if size is None else size, **details)
        return path

    def get(self, **headers: str) -> Deferred[Any]:
        sent = request_headers(headers)
        return self.client.get(self.url, headers=sent).addTimeout(TIMEOUT, reactor)

    def head(self, **headers: str) -> Deferred[Any]:
        sent = request_headers(headers)
        return self.client.head(self.url, headers=sent).addTimeout(TIMEOUT, reactor)


@pytest.fixture(params=["sendfile", "reading"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """The app on a loopback port; every test runs with both ways of sending a body: plain
    TCP with os.sendfile, and the reading producer that TLS and several ranges use."""
    if request.param == "reading":
        monkeypatch.setattr(common.sendfile, "SENDFILE", False)
    app = FileApp()
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    listening = pytest_twisted.blockon(endpoint.listen(Site(app.app.resource())))
    address = listening.getHost()
    assert isinstance(address, IPv4Address), address
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, pool=pool))
    yield Server(app, address.port, client, tmp_path)
    pytest_twisted.blockon(pool.closeCachedConnections())
    pytest_twisted.blockon(listening.stopListening())


def header(response: Any, name: str) -> str | None:
    """One response header (Twisted's client keeps a GET's Content-Length in ``length``)."""
    values = response.headers.getRawHeaders(name)
    if values is None:
        return None
    assert len(values) == 1, values
    return str(values[0])


def open_files() -> set[str]:
    """What this process has open (the server runs in it)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc to see open files")
    paths = set()
    for fd in fds.iterdir():
        try:
            paths.add(os.readlink(fd))
        except OSError:
            continue
    return paths


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """(Content-Type, Content-Range, payload) of each part, read by the stdlib MIME parser."""
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    # With an EmailPolicy the parser makes EmailMessages, which typeshed cannot know.
    assert isinstance(message, EmailMessage) and message.is_multipart()
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes), payload
        parts.append((part["Content-Type"], part["Content-Range"], payload))
    return parts


@pytest_twisted.inlineCallbacks
def test_a_plain_get_sends_the_whole_file_with_its_headers(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    path = server.serve(CONTENT, content_type="application/x-tar")
    response = yield server.get()
    body = yield response.content()
    assert response.code == 200
    assert body == CONTENT
    assert response.length == len(CONTENT)
    assert header(response, "Content-Type") == "application/x-tar"
    assert header(response, "Accept-Ranges") == "bytes"
    assert header(response, "ETag") == ETAG
    assert header(response, "Last-Modified") == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert header(response, "Content-Disposition") == (
        "attachment; filename=\"backup.bin\"; filename*=UTF-8''backup.bin"
    )
    assert header(response, "Content-Range") is None
    assert str(path) not in open_files()
    assert server.app.responses[0].called


@pytest_twisted.inlineCallbacks
def test_a_single_range_is_sent_as_206_with_its_content_range(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(Range="bytes=100-299")
    body = yield response.content()
    assert response.code == 206
    assert body == CONTENT[100:300]
    assert header(response, "Content-Range") == f"bytes 100-299/{len(CONTENT)}"
    assert response.length == 200
    assert header(response, "Content-Type") == "application/octet-stream"


@pytest_twisted.inlineCallbacks
def test_a_suffix_range_sends_the_last_bytes(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(Range="bytes=-10")
    body = yield response.content()
    assert response.code == 206
    assert body == CONTENT[-10:]
    size = len(CONTENT)
    assert header(response, "Content-Range") == f"bytes {size - 10}-{size - 1}/{size}"


@pytest_twisted.inlineCallbacks
def test_an_open_range_past_a_chunk_boundary_runs_to_the_end(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    content = os.urandom(CHUNK_SIZE * 2 + 17)
    server.serve(content)
    response = yield server.get(Range=f"bytes={CHUNK_SIZE - 5}-")
    body = yield response.content()
    assert response.code == 206
    assert body == content[CHUNK_SIZE - 5 :]


@pytest_twisted.inlineCallbacks
def test_several_ranges_come_back_as_multipart_byteranges_in_the_order_asked(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT, content_type="application/x-tar")
    response = yield server.get(Range="bytes=500-599, 0-0, -13")
    body = yield response.content()
    size = len(CONTENT)
    assert response.code == 206
    content_type = header(response, "Content-Type")
    assert content_type is not None
    assert content_type.startswith("multipart/byteranges; boundary=")
    assert response.length == len(body)
    assert header(response, "Content-Range") is None
    assert multipart_parts(content_type, body) == [
        ("application/x-tar", f"bytes 500-599/{size}", CONTENT[500:600]),
        ("application/x-tar", f"bytes 0-0/{size}", CONTENT[:1]),
        ("application/x-tar", f"bytes {size - 13}-{size - 1}/{size}", CONTENT[-13:]),
    ]


@pytest_twisted.inlineCallbacks
def test_ranges_larger_than_a_chunk_survive_the_multipart_framing(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    content = os.urandom(CHUNK_SIZE * 3)
    server.serve(content)
    response = yield server.get(Range=f"bytes=0-{CHUNK_SIZE}, -{CHUNK_SIZE + 3}")
    body = yield response.content()
    parts = multipart_parts(header(response, "Content-Type") or "", body)
    assert [payload for _, _, payload in parts] == [
        content[: CHUNK_SIZE + 1],
        content[-(CHUNK_SIZE + 3) :],
    ]
    assert response.length == len(body)


@pytest_twisted.inlineCallbacks
def test_an_unsatisfiable_range_is_416_with_the_size(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    path = server.serve(CONTENT)
    response = yield server.get(Range="bytes=99999-")
    body = yield response.content()
    assert response.code == 416
    assert header(response, "Content-Range") == f"bytes */{len(CONTENT)}"
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "Content-Disposition") is None
    assert json.loads(body) == {
        "detail": "Requested range not satisfiable",
        "size": len(CONTENT),
    }
    assert str(path) not in open_files()


@pytest_twisted.inlineCallbacks
def test_a_malformed_range_is_ignored_and_the_whole_file_sent(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(Range="bytes=10-5")
    body = yield response.content()
    assert response.code == 200
    assert body == CONTENT


@pytest_twisted.inlineCallbacks
def test_if_range_with_the_current_etag_honours_the_range(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(Range="bytes=0-9", **{"If-Range": ETAG})
    body = yield response.content()
    assert response.code == 206
    assert body == CONTENT[:10]


@pytest_twisted.inlineCallbacks
def test_if_range_with_the_modification_date_honours_the_range(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(Range="bytes=0-9", **{"If-Range": format_http_date(MODIFIED)})
    body = yield response.content()
    assert response.code == 206
    assert body == CONTENT[:10]


@pytest_twisted.inlineCallbacks
def test_if_range_with_another_etag_sends_the_whole_file(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(Range="bytes=0-9", **{"If-Range": '"sha256-older"'})
    body = yield response.content()
    assert response.code == 200
    assert body == CONTENT
    assert header(response, "Content-Range") is None


@pytest_twisted.inlineCallbacks
def test_if_range_that_fails_also_skips_the_416(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(Range="bytes=99999-", **{"If-Range": '"sha256-older"'})
    body = yield response.content()
    assert response.code == 200
    assert body == CONTENT


@pytest_twisted.inlineCallbacks
def test_if_none_match_with_the_current_etag_is_304_without_a_body(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    path = server.serve(CONTENT)
    response = yield server.get(**{"If-None-Match": f'"other", {ETAG}'}, Range="bytes=0-1")
    body = yield response.content()
    assert response.code == 304
    assert body == b""
    assert header(response, "ETag") == ETAG
    assert header(response, "Content-Range") is None
    assert str(path) not in open_files()


@pytest_twisted.inlineCallbacks
def test_if_none_match_with_another_etag_sends_the_file(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(**{"If-None-Match": '"sha256-older"'})
    body = yield response.content()
    assert response.code == 200
    assert body == CONTENT


@pytest_twisted.inlineCallbacks
def test_if_modified_since_the_last_modification_is_304(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.get(**{"If-Modified-Since": format_http_date(MODIFIED)})
    yield response.content()
    assert response.code == 304


@pytest_twisted.inlineCallbacks
def test_head_sends_the_headers_of_a_get_and_no_body(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    path = server.serve(CONTENT)
    response = yield server.head()
    body = yield response.content()
    assert response.code == 200
    assert body == b""
    assert header(response, "Content-Length") == str(len(CONTENT))
    assert header(response, "Accept-Ranges") == "bytes"
    assert header(response, "ETag") == ETAG
    assert header(response, "Content-Disposition") is not None
    assert str(path) not in open_files()


@pytest_twisted.inlineCallbacks
def test_head_ignores_range(server: Server) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT)
    response = yield server.head(Range="bytes=0-9")
    yield response.content()
    assert response.code == 200
    assert header(response, "Content-Length") == str(len(CONTENT))


@pytest_twisted.inlineCallbacks
def test_a_name_with_quotes_and_non_ascii_is_carried_safely(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.serve(CONTENT, filename='Ünïcode "quoted"\\name.tar')
    response = yield server.get()
    yield response.content()
    assert header(response, "Content-Disposition") == (
        'attachment; filename="Unicode _quoted__name.tar"; '
        "filename*=UTF-8''%C3%9Cn%C3%AFcode%20%22quoted%22%5Cname.tar"
    )


@pytest_twisted.inlineCallbacks
def test_a_5_mib_file_is_streamed_completely(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    content = os.urandom(5 * 1024 * 1024)
    path = server.serve(content)
    response = yield server.get()
    body = yield response.content()
    assert response.code == 200
    assert response.length == len(content)
    assert body == content
    assert str(path) not in open_files()


@pytest_twisted.inlineCallbacks
def test_an_empty_file_is_an_empty_200(server: Server) -> Generator[Deferred[Any], Any, None]:
    server.serve(b"")
    response = yield server.get(Range="bytes=0-0")
    body = yield response.content()
    assert response.code == 200
    assert body == b""
    assert response.length == 0


@pytest_twisted.inlineCallbacks
def test_a_file_missing_from_disk_is_left_to_the_routes_error_handling(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    server.app.download = Download(str(server.directory / "absent"), 10)
    response = yield server.get()
    yield response.content()
    assert response.code == 500


@pytest_twisted.inlineCallbacks
def test_a_file_shorter_than_its_size_aborts_the_connection_and_is_logged(
    server: Server,
) -> Generator[Deferred[Any], Any, None]:
    path = server.serve(os.urandom(CHUNK_SIZE * 2 + 100), size=CHUNK_SIZE * 4)
    errors: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_level") is not None and event["log_level"].name == "error":
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        with pytest.raises(ResponseFailed):
            response = yield server.get()
            yield response.content().addTimeout(TIMEOUT, reactor)
        yield server.app.responses[0].addTimeout(TIMEOUT, reactor)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert [event.get("path") for event in errors] == [str(path)]
    assert str(path) not in open_files()


class HangUpOnFirstBytes(Protocol):
    """Asks for /file, then drops the connection as soon as the body starts."""

    def __init__(self) -> None:
        self.hung_up: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"GET /file HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        if not self.hung_up.called:
            assert self.transport is not None
            self.transport.abortConnection()  # type: ignore[attr-defined]
            self.hung_up.callback(None)


class CountingFile(io.FileIO):
    """A raw file that counts the bytes read through it."""

    bytes_read = 0

    def readinto(self, buffer: Any) -> int | None:
        count = super().readinto(buffer)
        self.bytes_read += count or 0
        return count


@pytest_twisted.inlineCallbacks
def test_a_client_leaving_mid_transfer_stops_the_reading_and_closes_the_file(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    size = 32 * 1024 * 1024
    server.serve(b"\0" * size)
    opened: list[CountingFile] = []

    def counting_open(path: str, mode: str) -> io.BufferedReader:
        opened.append(CountingFile(path, mode))
        return io.BufferedReader(opened[-1])

    monkeypatch.setattr(fileserve, "open", counting_open, raising=False)
    client = HangUpOnFirstBytes()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), client)
    yield client.hung_up.addTimeout(TIMEOUT, reactor)
    yield server.app.responses[0].addTimeout(TIMEOUT, reactor)
    [file] = opened
    assert file.closed
    assert file.bytes_read < size
