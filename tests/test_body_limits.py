"""How much of a request's body the proxy takes, decided from its headers (issue 14): a chunk's
worth only on a route that takes uploads and only from a caller with a genuine credential,
the small-body cap for anything else; a body announced over its cap is answered 413 before a
byte of it is sent; and an upload's bytes are written in place only for its owner.

Real sockets to the proxy running in this process; the blocking client runs in a thread so
that the reactor serves it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task, tcp
from twisted.internet.threads import deferToThread

from proxy.api.inputs import SMALL_BODY_LIMIT
from proxy.uploads.bodies import BufferPool, PlacedChunk
from proxy.uploads.intake import BodyIntake
from proxy.uploads.site import ArchiveRequest
from tests.conftest import RunningProxy, answer
from tests.test_api_uploads import data, headers, start_raw, upload_url

GiB = 2**30
MiB = 2**20


def exchange(port: int, head: str) -> bytes:
    """Send a request's head, then read what comes back within 5 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode("latin-1"))
        answer = b""
        try:
            while piece := sock.recv(65536):
                answer += piece
        except TimeoutError:
            pass  # nothing more (or nothing at all) within the timeout
        return answer


def announced(path: str, length: int, method: str, more: dict[str, str]) -> str:
    """A request's head that announces a body of ``length`` bytes."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in more.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


async def settle() -> None:
    """Let the reactor take in what a client thread has sent."""
    for _ in range(25):
        await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_gib_announced_to_a_route_that_takes_small_bodies_is_413_before_it_is_sent(
    running_proxy: RunningProxy,
) -> None:
    port = int(running_proxy.url.rsplit(":", 1)[1])
    head = announced("/api/auth/login", GiB, "POST", {"Content-Type": "application/json"})
    got = await deferToThread(exchange, port, head)  # the head only: not one byte of body
    assert got.startswith(b"HTTP/1.1 413 "), got
    assert b'"detail": "request body is larger than %d bytes"' % SMALL_BODY_LIMIT in got


@pytest_twisted.ensureDeferred
async def test_an_upload_route_takes_a_chunk_only_from_a_caller_with_a_genuine_credential(
    running_proxy: RunningProxy,
) -> None:
    port = int(running_proxy.url.rsplit(":", 1)[1])
    octets = {"Content-Type": "application/octet-stream"}
    for credential in ({}, {"Authorization": "JWT forged.token.here"},
                       {"Cookie": "pyarchive_session=made.up"}):  # fmt: skip
        head = announced("/storage/tmp-upload/?filename=a.bin", 8 * MiB, "PUT",
                         octets | credential)  # fmt: skip
        got = await deferToThread(exchange, port, head)
        assert got.startswith(b"HTTP/1.1 413 "), (credential, got)
    token = await running_proxy.register_and_login()
    content = data(8 * MiB)
    response = await treq.put(
        upload_url(running_proxy, filename="a.bin"),
        data=content,
        headers=headers(token, f"bytes 0-{len(content) - 1}/{len(content)}"),
    )
    code, body = await answer(response)
    assert code == 200 and body["offset"] == len(content), body


def spooled_on_disk(proxy: RunningProxy) -> int:
    """Open files of this process in the proxy's spool folder (deleted temporary files)."""
    spool = str(proxy.data_dir / "spool")
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{fd}").startswith(spool)
        except OSError:
            pass
    return found


@pytest_twisted.ensureDeferred
async def test_a_body_of_unknown_length_from_nobody_is_not_spooled_to_disk(
    running_proxy: RunningProxy, tmp_path: Path
) -> None:
    port = int(running_proxy.url.rsplit(":", 1)[1])
    head = (
        "PUT /storage/tmp-upload/?filename=a.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"%x\r\n%s\r\n" % (MiB, b"x" * MiB)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        await deferToThread(sock.sendall, head.encode() + piece * 2)  # 2 MiB, not finished
        await settle()
        assert spooled_on_disk(running_proxy) == 0


@pytest_twisted.ensureDeferred
async def test_a_chunk_sent_to_someone_elses_upload_writes_nothing_into_it(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob")
    content = data(300)
    started = await start_raw(running_proxy, alice, content, 100)
    upload_id = started["id"]
    [staged] = list(running_proxy.data_dir.rglob(f"{upload_id}.part"))
    before = staged.read_bytes()
    response = await treq.put(
        upload_url(running_proxy, upload_id),
        data=b"B" * 100,
        headers=headers(bob, "bytes 100-199/300"),
    )
    code, _ = await answer(response)
    assert code == 404
    assert staged.read_bytes() == before == content[:100]  # not a byte of Bob's


@pytest_twisted.ensureDeferred
async def test_a_chunk_written_in_place_is_read_in_large_pieces_and_the_next_head_in_small_ones(
    running_proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a chunk streams into its file the connection reads a buffer's worth per recv();
    once its last byte is in, it reads at Twisted's size again, so the next request's head
    does not arrive with up to half a megabyte of body that the line parser copies again for
    every header line."""
    transports: list[Any] = []
    during: list[int] = []  # the read size while a placed chunk's bytes arrive
    after: list[tuple[bool, int]] = []  # (placed?, the read size) once a body is in
    open_sink, write = BodyIntake._open_sink, PlacedChunk.write
    received = ArchiveRequest.requestReceived

    def recording_open(self: BodyIntake, request: ArchiveRequest, *args: Any) -> Any:
        transports.append(request.channel.transport)
        return open_sink(self, request, *args)

    def recording_write(self: PlacedChunk, piece: bytes) -> None:
        during.append(transports[-1].bufferSize)
        write(self, piece)

    def recording_received(self: ArchiveRequest, *args: bytes) -> None:
        placed = isinstance(self.content, PlacedChunk)
        received(self, *args)
        transport: Any = self.channel.transport
        after.append((placed, transport.bufferSize))

    monkeypatch.setattr(BodyIntake, "_open_sink", recording_open)
    monkeypatch.setattr(PlacedChunk, "write", recording_write)
    monkeypatch.setattr(ArchiveRequest, "requestReceived", recording_received)
    token = await running_proxy.register_and_login()
    content = data(3 * MiB)
    upload_id = (await start_raw(running_proxy, token, content, MiB))["id"]
    for start in (MiB, 2 * MiB):  # each at the acknowledged offset: written in place
        response = await treq.put(
            upload_url(running_proxy, upload_id),
            data=content[start : start + MiB],
            headers=headers(token, f"bytes {start}-{start + MiB - 1}/{len(content)}"),
        )
        code, body = await answer(response)
        assert code == 200, body
    assert during and set(during) == {BufferPool.default_size} != {tcp.Connection.bufferSize}
    placed = [size for was_placed, size in after if was_placed]
    assert len(placed) == 2 and set(placed) == {tcp.Connection.bufferSize}, after
