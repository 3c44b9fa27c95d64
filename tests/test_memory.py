"""Bounded memory: the proxy's peak RSS does not grow with file size or with chunk count."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import uuid
from pathlib import Path

import pytest

from tests.proc import ProxyProcess, chunk_headers

pytestmark = pytest.mark.slow

MiB = 1 << 20


def _make_file(path: Path, size: int) -> str:
    md5 = hashlib.md5()
    with open(path, "wb") as out:
        for _ in range(size // (16 * MiB)):
            block = os.urandom(16 * MiB)
            md5.update(block)
            out.write(block)
    return md5.hexdigest()


def _upload(proxy: ProxyProcess, token: str, path: Path, md5: str, chunk: int) -> None:
    with open(path, "rb") as source, mmap.mmap(source.fileno(), 0, prot=mmap.PROT_READ) as data:
        size, view, url = len(data), memoryview(data), "/storage/tmp-upload/?filename=" + path.name
        for start in range(0, size, chunk):
            end = min(start + chunk, size) - 1
            status, upload = proxy.request(
                "PUT", url, view[start : end + 1], chunk_headers(token, start, end, size)
            )
            assert status == 200, upload
            url = upload["url"].split(str(proxy.port), 1)[1]
        view.release()
    status, done = proxy.request(
        "POST", url, json.dumps({"md5": md5}),
        {"Authorization": f"JWT {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200 and done["status"] == 2, done


def test_peak_memory_does_not_grow_with_file_size_or_chunk_count(tmp_path: Path) -> None:
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small_md5, large_md5 = _make_file(small, 32 * MiB), _make_file(large, 512 * MiB)
    proxy = ProxyProcess(tmp_path / "proxy", f"sqlite:///{tmp_path}/meta.sqlite3").start()
    try:
        token = proxy.login()
        _upload(proxy, token, small, small_md5, 8 * MiB)  # warm up: imports, pools, buffers
        after_small = proxy.peak_rss_kib()
        _upload(proxy, token, large, large_md5, 8 * MiB)  # 16x the bytes
        after_large = proxy.peak_rss_kib()
        _upload(proxy, token, large, large_md5, 1 * MiB)  # 512 chunks
        after_many = proxy.peak_rss_kib()
    finally:
        proxy.stop()
    growth_mib = (after_many - after_small) / 1024
    assert growth_mib < 16, (
        f"peak RSS grew {growth_mib:.1f} MiB: {after_small / 1024:.1f} after 32 MiB, "
        f"{after_large / 1024:.1f} after 512 MiB, {after_many / 1024:.1f} after 512 x 1 MiB chunks"
    )
    assert after_many / 1024 < 120, f"peak RSS {after_many / 1024:.1f} MiB"


def test_multipart_chunks_are_streamed_not_held_in_memory(tmp_path: Path) -> None:
    """A 48 MiB multipart chunk is parsed from its spool; memory stays far below its size."""

    proxy = ProxyProcess(tmp_path / "proxy", f"sqlite:///{tmp_path}/meta.sqlite3").start()
    try:
        token = proxy.login()
        baseline = proxy.peak_rss_kib()
        payload = os.urandom(48 * MiB)
        boundary = uuid.uuid4().hex
        body = b"".join([
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"\r\n\r\n"
            "m.bin\r\n".encode(),
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode(),
            payload,
            f"\r\n--{boundary}--\r\n".encode(),
        ])  # fmt: skip
        headers = chunk_headers(token, 0, len(payload) - 1, len(payload))
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        status, upload = proxy.request("PUT", "/storage/tmp-upload/", body, headers)
        assert status == 200 and upload["offset"] == len(payload), upload
        grown = (proxy.peak_rss_kib() - baseline) / 1024
    finally:
        proxy.stop()
    assert grown < 24, f"peak RSS grew {grown:.1f} MiB for a 48 MiB multipart chunk"
