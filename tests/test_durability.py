"""Acknowledged means durable: SIGKILL a real proxy mid-chunk, restart it, resume, verify."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.proc import ProxyProcess, chunk_headers

pytestmark = pytest.mark.slow

CHUNK = 1 << 20


def _send_partial_chunk(
    proxy: ProxyProcess, path: str, headers: dict[str, str], body: bytes
) -> socket.socket:
    """Send the request line, headers and ``body`` (only part of what Content-Length says)."""
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    head = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {CHUNK}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


@pytest.mark.parametrize("kill_after", [0.05, 0.3])
def test_sigkill_mid_chunk_keeps_every_acknowledged_byte_and_the_upload_resumes(
    database_url: str, tmp_path: Path, kill_after: float
) -> None:
    source = os.urandom(6 * CHUNK + 12345)
    total = len(source)
    proxy = ProxyProcess(tmp_path / "proxy", database_url).start()
    try:
        token = proxy.login()
        status, upload = proxy.request(
            "PUT", "/storage/tmp-upload/?filename=big.bin", source[:CHUNK],
            chunk_headers(token, 0, CHUNK - 1, total),
        )  # fmt: skip
        assert status == 200, upload
        path = upload["url"].split(str(proxy.port), 1)[1]
        status, upload = proxy.request(
            "PUT", path, source[CHUNK : 2 * CHUNK],
            chunk_headers(token, CHUNK, 2 * CHUNK - 1, total),
        )  # fmt: skip
        assert (status, upload["offset"]) == (200, 2 * CHUNK)

        # The third chunk is half sent when the proxy dies.
        sock = _send_partial_chunk(
            proxy, path, chunk_headers(token, 2 * CHUNK, 3 * CHUNK - 1, total),
            source[2 * CHUNK : 2 * CHUNK + CHUNK // 2],
        )  # fmt: skip
        time.sleep(kill_after)
        proxy.kill()
        sock.close()

        proxy.start()
        status, upload = proxy.request("GET", path, headers={"Authorization": f"JWT {token}"})
        assert status == 200
        assert upload["offset"] == 2 * CHUNK, "the last acknowledged offset survives the crash"

        offset = upload["offset"]
        while offset < total:
            end = min(offset + CHUNK, total) - 1
            status, upload = proxy.request(
                "PUT", path, source[offset : end + 1], chunk_headers(token, offset, end, total)
            )
            assert status == 200, upload
            offset = upload["offset"]
        status, done = proxy.request(
            "POST", path, json.dumps({"md5": hashlib.md5(source).hexdigest()}),
            {"Authorization": f"JWT {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        assert status == 200, done
        status, stored = proxy.request(
            "GET", f"/storage/files/{done['file_id']}/", headers={"Authorization": f"JWT {token}"}
        )
        assert stored["md5"] == hashlib.md5(source).hexdigest()
        assert stored["sha256"] == hashlib.sha256(source).hexdigest()
        status, body = proxy.request(
            "GET", f"/storage/download/{done['file_id']}/",
            headers={"Authorization": f"JWT {token}"},
        )  # fmt: skip
        assert status == 200 and body == source
    finally:
        proxy.stop()


def test_a_refused_chunk_leaves_the_acknowledged_bytes_on_disk_untouched(
    database_url: str, tmp_path: Path
) -> None:
    source = os.urandom(3 * CHUNK)
    proxy = ProxyProcess(tmp_path / "proxy", database_url).start()
    try:
        token = proxy.login()
        status, upload = proxy.request(
            "PUT", "/storage/tmp-upload/?filename=a.bin", source[:CHUNK],
            chunk_headers(token, 0, CHUNK - 1, len(source)),
        )  # fmt: skip
        path = upload["url"].split(str(proxy.port), 1)[1]
        staged = proxy.data_dir / "staging" / f"{upload['id']}.part"
        before = staged.read_bytes()[:CHUNK]
        # Same start offset as already stored, other bytes: refused, nothing rewritten.
        status, answer = proxy.request(
            "PUT", path, os.urandom(CHUNK), chunk_headers(token, 0, CHUNK - 1, len(source))
        )
        assert status == 400 and answer == {"detail": "Offsets do not match", "offset": CHUNK}
        assert staged.read_bytes()[:CHUNK] == before == source[:CHUNK]
    finally:
        proxy.stop()
