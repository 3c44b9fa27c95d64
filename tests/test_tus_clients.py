"""tus with clients nobody here wrote (tuspy, tus-js-client under Node.js), raw sockets that
cut a PATCH short, and a proxy killed mid-PATCH: against a real ``pyarchive-proxy`` process.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from tests.disconnect_kit import TcpRelay, end_connection
from tests.js_clients import run_tus_js
from tests.proc import ProxyProcess

pytestmark = pytest.mark.slow
MIB = 1 << 20


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ProxyProcess]:
    running = ProxyProcess(tmp_path / "proxy", f"sqlite:///{tmp_path}/meta.sqlite3").start()
    try:
        yield running
    finally:
        running.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"JWT {token}"}


def _stored(proxy: ProxyProcess, token: str, upload_url: str) -> dict[str, object]:
    """The file a finished tus upload became (through the seed API's view of the upload)."""
    upload_id = upload_url.rstrip("/").rsplit("/", 1)[1]
    status, upload = proxy.request("GET", f"/storage/tmp-upload/{upload_id}/", None, _auth(token))
    assert status == 200 and upload["status"] == 2, upload
    status, found = proxy.request("GET", f"/storage/files/{upload['file_id']}/", None, _auth(token))
    assert status == 200
    return dict(found)


def _head_offset(proxy: ProxyProcess, token: str, path: str) -> int:
    conn = socket.create_connection(("127.0.0.1", proxy.port))
    conn.sendall(
        f"HEAD {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Authorization: JWT {token}\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += conn.recv(4096)
    conn.close()
    for line in answer.decode().split("\r\n"):
        if line.lower().startswith("upload-offset:"):
            return int(line.split(":", 1)[1])
    raise AssertionError(answer)


@pytest.mark.parametrize(
    ("size", "chunk_size", "checksum"),
    [
        (0, MIB, False),
        (1000, MIB, True),
        (5 * MIB + 123, MIB, False),
        (5 * MIB + 123, MIB, True),
        (200 * MIB, 8 * MIB, False),
    ],
    ids=["empty", "small", "multi-chunk", "multi-chunk-checksum", "200MiB"],
)
def test_tuspy_uploads_and_the_stored_sha256_matches(
    proxy: ProxyProcess, tmp_path: Path, size: int, chunk_size: int, checksum: bool
) -> None:
    token = proxy.login()
    source = tmp_path / "source.bin"
    with source.open("wb") as out:  # written in pieces: the 200 MiB case stays small in memory
        left = size
        while left:
            out.write(os.urandom(min(left, 4 * MIB)))
            left -= min(left, 4 * MIB)
    client = tus_client.TusClient(f"{proxy.url}/files/", headers=_auth(token))
    uploader = client.uploader(
        str(source), chunk_size=chunk_size, metadata={"filename": "source.bin"},
        upload_checksum=checksum,
    )  # fmt: skip
    uploader.upload()
    assert uploader.url is not None
    found = _stored(proxy, token, uploader.url)
    digest = hashlib.sha256()
    with source.open("rb") as data:
        while piece := data.read(4 * MIB):
            digest.update(piece)
    assert found["size"] == size and found["sha256"] == digest.hexdigest()
    assert found["filename"] == "source.bin"


def test_tuspy_resumes_with_its_own_logic_after_the_connection_is_cut(
    proxy: ProxyProcess, tmp_path: Path
) -> None:
    """Every connection through the relay may be cut at a random byte; tuspy's retries (HEAD,
    then PATCH from the server's offset) carry the upload through."""
    token = proxy.login()
    data = os.urandom(12 * MIB + 77)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    relay = TcpRelay(proxy.port, seed=10, cut_chance=0.5, cut_within=2 * MIB)
    try:
        client = tus_client.TusClient(f"http://127.0.0.1:{relay.port}/files/", headers=_auth(token))
        uploader = client.uploader(
            str(source), chunk_size=2 * MIB, metadata={"filename": "cut.bin"},
            retries=50, retry_delay=0,
        )  # fmt: skip
        for _ in range(50):  # creation itself may be cut: tuspy does not retry that
            try:
                uploader.upload()
                break
            except (TusCommunicationError, OSError):
                continue
    finally:
        relay.stop()
    assert relay.stats.cut_fin + relay.stats.cut_rst > 0, "no connection was cut: proves nothing"
    found = _stored(proxy, token, uploader.url or "")
    assert found["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_half_a_patch_then_a_reset_keeps_the_bytes_that_arrived(
    proxy: ProxyProcess, how: str
) -> None:
    token = proxy.login()
    data = os.urandom(4 * MIB)
    status, _ = proxy.request("OPTIONS", "/files/")
    assert status == 204
    conn = socket.create_connection(("127.0.0.1", proxy.port))
    conn.sendall(
        f"POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nContent-Length: 0\r\n"
        f"Upload-Length: {len(data)}\r\nAuthorization: JWT {token}\r\n"
        f"Upload-Metadata: filename {base64.b64encode(b'half.bin').decode()}\r\n\r\n".encode()
    )
    created = conn.recv(4096).decode()
    conn.close()
    location = next(line for line in created.split("\r\n") if line.lower().startswith("location:"))
    path = "/files/" + location.rsplit("/", 1)[1].strip()
    sent = 3 * MIB // 2 + 1234
    patch = socket.create_connection(("127.0.0.1", proxy.port))
    patch.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {len(data)}\r\nAuthorization: JWT {token}\r\n\r\n".encode()
        + data[:sent]
    )
    time.sleep(0.3)  # let the bytes reach the proxy before the connection ends
    end_connection(patch, how)
    deadline = time.monotonic() + 10
    while (kept := _head_offset(proxy, token, path)) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kept == sent, "HEAD after the cut reports the bytes that arrived, all of them"
    status, _ = proxy.request(
        "PATCH", path, data[kept:],
        {**_auth(token), "Tus-Resumable": "1.0.0", "Upload-Offset": str(kept),
         "Content-Type": "application/offset+octet-stream"},
    )  # fmt: skip
    assert status == 204
    found = _stored(proxy, token, path)
    assert found["sha256"] == hashlib.sha256(data).hexdigest()


def test_sigkill_mid_patch_loses_no_acknowledged_byte(proxy: ProxyProcess, tmp_path: Path) -> None:
    token = proxy.login()
    data = os.urandom(6 * MIB)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    client = tus_client.TusClient(f"{proxy.url}/files/", headers=_auth(token))
    uploader = client.uploader(str(source), chunk_size=MIB, metadata={"filename": "k.bin"})
    uploader.upload_chunk()
    uploader.upload_chunk()  # two acknowledged chunks
    assert uploader.offset == 2 * MIB and uploader.url is not None
    path = "/files/" + uploader.url.rsplit("/", 1)[1]
    patch = socket.create_connection(("127.0.0.1", proxy.port))
    patch.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {2 * MIB}\r\n"
        f"Content-Length: {MIB}\r\nAuthorization: JWT {token}\r\n\r\n".encode()
        + data[2 * MIB : 2 * MIB + MIB // 2]
    )
    time.sleep(0.2)
    proxy.kill()
    patch.close()
    proxy.start()
    kept = _head_offset(proxy, token, path)
    assert kept >= 2 * MIB, "every acknowledged byte survives the crash"
    resumed = tus_client.TusClient(f"{proxy.url}/files/", headers=_auth(token)).uploader(
        str(source), chunk_size=MIB, url=uploader.url
    )
    resumed.upload()
    found = _stored(proxy, token, path)
    assert found["sha256"] == hashlib.sha256(data).hexdigest()


def test_tus_js_client_uploads_and_resumes_from_its_stored_fingerprint(
    proxy: ProxyProcess, tmp_path: Path
) -> None:
    token = proxy.login()
    data = os.urandom(5 * MIB + 99)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    store = tmp_path / "tus-js-store.json"
    endpoint = f"{proxy.url}/files/"
    code, stopped = run_tus_js(
        endpoint, source, token=token, chunk_size=MIB, metadata={"filename": "js.bin"},
        stop_after=2 * MIB, store=store,
    )  # fmt: skip
    assert code == 3, stopped
    assert stopped["acknowledged"] >= 2 * MIB
    code, done = run_tus_js(
        endpoint, source, token=token, chunk_size=MIB, metadata={"filename": "js.bin"},
        store=store,
    )  # fmt: skip
    assert code == 0, done
    assert done["url"] == stopped["url"], "the second run resumed the same upload"
    found = _stored(proxy, token, str(done["url"]))
    assert found["sha256"] == hashlib.sha256(data).hexdigest()
    code, whole = run_tus_js(endpoint, source, token=token, metadata={"filename": "one.bin"})
    assert code == 0, whole  # no chunk size: the whole file in one PATCH
    assert _stored(proxy, token, str(whole["url"]))["sha256"] == hashlib.sha256(data).hexdigest()


def test_tus_js_client_uploads_in_four_parallel_parts_and_resumes_them(
    proxy: ProxyProcess, tmp_path: Path
) -> None:
    """``parallelUploads: 4``: four partial uploads, then one final upload joining them."""
    token = proxy.login()
    data = os.urandom(9 * MIB + 5)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    endpoint = f"{proxy.url}/files/"
    code, done = run_tus_js(
        endpoint, source, token=token, chunk_size=MIB, parallel=4,
        metadata={"filename": "parallel.bin"},
    )  # fmt: skip
    assert code == 0, done
    found = _stored(proxy, token, str(done["url"]))
    assert found["filename"] == "parallel.bin"
    assert found["sha256"] == hashlib.sha256(data).hexdigest()

    store = tmp_path / "tus-js-store.json"
    again = tmp_path / "again.bin"
    again.write_bytes(data[::-1])
    code, stopped = run_tus_js(
        endpoint, again, token=token, chunk_size=MIB, parallel=4, stop_after=3 * MIB,
        store=store, metadata={"filename": "again.bin"},
    )  # fmt: skip
    assert code == 3, stopped
    code, resumed = run_tus_js(
        endpoint, again, token=token, chunk_size=MIB, parallel=4, store=store,
        metadata={"filename": "again.bin"},
    )  # fmt: skip
    assert code == 0, resumed
    assert _stored(proxy, token, str(resumed["url"]))["sha256"] == (
        hashlib.sha256(data[::-1]).hexdigest()
    )


def test_a_refused_patch_is_answered_readably_and_the_connection_goes_on(
    proxy: ProxyProcess,
) -> None:
    """A 4 MiB PATCH at the wrong offset: the client reads 409 with the right offset after
    sending its body, and the same connection then serves the next request."""
    token = proxy.login()
    conn = socket.create_connection(("127.0.0.1", proxy.port))
    conn.sendall(
        f"POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nContent-Length: 0\r\n"
        f"Upload-Length: {8 * MIB}\r\nAuthorization: JWT {token}\r\n\r\n".encode()
    )
    created = _read_answer(conn)
    path = "/files/" + created["location"].rsplit("/", 1)[1]
    body = os.urandom(4 * MIB)
    conn.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 5\r\n"
        f"Content-Length: {len(body)}\r\nAuthorization: JWT {token}\r\n\r\n".encode()
        + body
    )
    refused = _read_answer(conn)
    assert refused["status"] == "409" and refused["upload-offset"] == "0"
    conn.sendall(
        f"HEAD {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Authorization: JWT {token}\r\n\r\n".encode()
    )
    probe = _read_answer(conn, has_body=False)
    assert probe["status"] == "200" and probe["upload-offset"] == "0"
    conn.close()


def _read_answer(conn: socket.socket, has_body: bool = True) -> dict[str, str]:
    """One HTTP/1.1 answer off a kept-alive connection: its status and headers (lower-case)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        assert piece, f"the connection closed before an answer: {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    found = {"status": lines[0].split(" ")[1]}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    length = int(found.get("content-length", "0")) if has_body else 0
    while len(rest) < length:
        rest += conn.recv(65536)
    return found
