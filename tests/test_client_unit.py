"""The client library against a small in-memory fake of the proxy's HTTP API.

The fake (``FakeHandler`` over ``FakeArchive``) implements just enough of the protocol: accounts,
chunked uploads that keep only whole chunks, completion with an md5 check, file info, ranged
downloads and a redirect to a second server standing in for a storage node. ``faults`` makes a
chunk fail once, in the way a test asks for.
"""

from __future__ import annotations

import doctest
import hashlib
import json
import os
import random
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from client import ApiError, PyArchiveClient, _http, _ranges, _upload

CHUNK = 64 * 1024
TOKEN = "tok-alice"


@dataclass
class Seen:
    server_port: int
    client_port: int
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Upload:
    filename: str
    total: int
    data: bytearray = field(default_factory=bytearray)
    status: int = 1


@dataclass
class FakeArchive:
    """State shared by the fake proxy and the fake storage node."""

    proxy_url: str = ""
    redirect_to: str | None = None  # base URL of the node downloads are redirected to
    faults: dict[int, str] = field(default_factory=dict)  # chunk start -> drop|503|rewind, once
    hang_up_after_next_answer: bool = False  # close the connection, though it is keep-alive
    uploads: dict[str, Upload] = field(default_factory=dict)
    files: dict[int, bytes] = field(default_factory=dict)
    completed_md5s: list[str] = field(default_factory=list)
    # What a completion says of the content: "stored" (its sha256, as the proxy answers),
    # "absent" (as servers before it did) or "wrong" (another sha256).
    completion_sha256: str = "stored"
    chunk_starts: list[int] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)


class FakeServer(ThreadingHTTPServer):
    archive: FakeArchive


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._route()

    do_PUT = do_POST = do_DELETE = do_GET

    def _route(self) -> None:
        archive = self.server.archive
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        archive.seen.append(
            Seen(
                self.server.server_port,
                self.client_address[1],
                self.command,
                url.path,
                dict(self.headers),
            )
        )
        upload = re.fullmatch(r"/storage/tmp-upload/(\w+)/", url.path)
        download = re.fullmatch(r"/(storage/download|node)/(\d+)/", url.path)
        if self.command == "POST" and url.path == "/api/auth/register":
            self._json(201, {"username": self._body_json()["username"]})
        elif self.command == "POST" and url.path == "/api-token-auth/":
            self._json(200, {"token": "tok-" + self._body_json()["username"]})
        elif download and download[1] == "node":  # a signed URL: no token needed
            self._serve(archive.files[int(download[2])])
        elif self.headers.get("Authorization") != f"JWT {TOKEN}":
            self._json(401, {"detail": "Authentication credentials were not provided."})
        elif url.path == "/storage/tmp-upload/" and self.command == "PUT":
            upload_id = f"u{len(archive.uploads)}"
            archive.uploads[upload_id] = Upload(query["filename"], self._range()[2])
            self._chunk(upload_id)
        elif url.path == "/storage/tmp-upload/" and self.command == "POST":
            self._body()
            self._json(200, self._store(Upload(query["filename"], 0), query["md5"]))
        elif upload and self.command == "PUT":
            self._chunk(upload[1])
        elif upload and self.command == "GET":
            self._json(200, self._info(upload[1]))
        elif upload and self.command == "POST":
            self._json(200, self._store(archive.uploads[upload[1]], self._body_json()["md5"]))
        elif (found := re.fullmatch(r"/storage/files/(\d+)/", url.path)) and (
            content := archive.files.get(int(found[1]))
        ) is not None:
            self._json(
                200,
                {"id": int(found[1]), "size": len(content),
                 "sha256": hashlib.sha256(content).hexdigest()},
            )  # fmt: skip
        elif download and archive.redirect_to is not None:
            self._send(307, b"", {"Location": f"{archive.redirect_to}/node/{download[2]}/"})
        elif download:
            self._serve(archive.files[int(download[2])])
        else:
            self._body()
            self._json(404, {"detail": "Not found."})

    def _chunk(self, upload_id: str) -> None:
        archive, upload = self.server.archive, self.server.archive.uploads[upload_id]
        start = self._range()[0]
        archive.chunk_starts.append(start)
        fault = archive.faults.pop(start, None)
        if fault == "drop":  # read half the chunk, keep none of it, hang up without answering
            self.rfile.read(int(self.headers["Content-Length"]) // 2)
            self.close_connection = True
            return
        body = self._body()
        if fault == "503":
            self._json(503, {"detail": "Storage is busy."})
            return
        if fault == "rewind":  # the server only holds the first chunk after all
            del upload.data[CHUNK:]
        if start != len(upload.data):
            self._json(400, {"detail": "Offsets do not match", "offset": len(upload.data)})
            return
        upload.data += body
        self._json(200, self._info(upload_id))

    def _store(self, upload: Upload, md5: str) -> dict[str, Any]:
        archive = self.server.archive
        archive.completed_md5s.append(md5)
        if md5 != hashlib.md5(upload.data).hexdigest():
            raise AssertionError("md5 mismatch")
        file_id = len(archive.files) + 1
        archive.files[file_id] = bytes(upload.data)
        upload.status = 2
        answer: dict[str, Any] = {"status": 2, "file_id": file_id, "filename": upload.filename}
        if archive.completion_sha256 != "absent":
            answer["sha256"] = hashlib.sha256(
                upload.data if archive.completion_sha256 == "stored" else b"other bytes"
            ).hexdigest()
        return answer

    def _info(self, upload_id: str) -> dict[str, Any]:
        upload = self.server.archive.uploads[upload_id]
        url = f"{self.server.archive.proxy_url}/storage/tmp-upload/{upload_id}/"
        return {
            "id": upload_id,
            "url": url,
            "filename": upload.filename,
            "offset": len(upload.data),
            "status": upload.status,
        }

    def _serve(self, content: bytes) -> None:
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if wanted is None:
            self._send(200, content, {})
            return
        first, last = (
            int(wanted[1]),
            min(int(wanted[2] or len(content) - 1), len(content) - 1),
        )
        self._send(
            206,
            content[first : last + 1],
            {"Content-Range": f"bytes {first}-{last}/{len(content)}"},
        )

    def _range(self) -> tuple[int, int, int]:
        found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers["Content-Range"])
        assert found is not None
        return int(found[1]), int(found[2]), int(found[3])

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _body_json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self._body())
        return value

    def _json(self, status: int, value: dict[str, Any]) -> None:
        self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        archive = self.server.archive
        hang_up, archive.hang_up_after_next_answer = archive.hang_up_after_next_answer, False
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = self.close_connection or hang_up


@contextmanager
def serving(archive: FakeArchive) -> Iterator[str]:
    server = FakeServer(("127.0.0.1", 0), FakeHandler)
    server.archive = archive
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def fake() -> Iterator[FakeArchive]:
    archive = FakeArchive()
    with serving(archive) as url:
        archive.proxy_url = url
        yield archive


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(fake: FakeArchive, sleeps: list[float]) -> Iterator[PyArchiveClient]:
    with PyArchiveClient(fake.proxy_url, sleep=sleeps.append) as client:
        client.register("alice", "secret", email="alice@example.com")
        assert client.login("alice", "secret") == TOKEN
        yield client


def write_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path, data


def test_a_multi_chunk_upload_arrives_byte_identical_with_the_md5_of_the_file(
    fake: FakeArchive, client: PyArchiveClient, tmp_path: Path
) -> None:
    path, data = write_file(tmp_path, 5 * CHUNK + 123)
    progress: list[tuple[int, int]] = []

    done = client.upload(path, chunk_size=CHUNK, on_progress=lambda *p: progress.append(p))

    assert fake.files[done["file_id"]] == data
    assert fake.completed_md5s == [hashlib.md5(data).hexdigest()]
    assert fake.chunk_starts == [n * CHUNK for n in range(6)]
    assert progress[-1] == (len(data), len(data)) and len(progress) == 6
    assert (
        len({s.client_port for s in fake.seen if s.method == "PUT"}) == 1
    )  # one keep-alive connection


@pytest.mark.parametrize("fault", ["drop", "503"])
def test_after_a_dropped_connection_or_a_5xx_the_upload_resumes_from_the_server_offset(
    fake: FakeArchive,
    client: PyArchiveClient,
    sleeps: list[float],
    tmp_path: Path,
    fault: str,
) -> None:
    path, data = write_file(tmp_path, 4 * CHUNK + 1)
    fake.faults[2 * CHUNK] = fault

    done = client.upload(path, chunk_size=CHUNK)

    assert fake.files[done["file_id"]] == data
    assert fake.chunk_starts == [0, CHUNK, 2 * CHUNK, 2 * CHUNK, 3 * CHUNK, 4 * CHUNK]
    assert [s.method for s in fake.seen if s.path == "/storage/tmp-upload/u0/"].count("GET") == 1
    assert sleeps == [0.2]


def test_offsets_do_not_match_makes_the_upload_continue_from_the_offset_in_the_refusal(
    fake: FakeArchive, client: PyArchiveClient, sleeps: list[float], tmp_path: Path
) -> None:
    path, data = write_file(tmp_path, 4 * CHUNK)
    fake.faults[3 * CHUNK] = "rewind"

    done = client.upload(path, chunk_size=CHUNK)

    assert fake.files[done["file_id"]] == data
    assert fake.chunk_starts == [
        0,
        CHUNK,
        2 * CHUNK,
        3 * CHUNK,
        CHUNK,
        2 * CHUNK,
        3 * CHUNK,
    ]
    assert sleeps == []


def test_an_upload_given_up_on_can_be_resumed_with_its_url(
    fake: FakeArchive, client: PyArchiveClient, tmp_path: Path
) -> None:
    path, data = write_file(tmp_path, 3 * CHUNK + 7)
    fake.faults[2 * CHUNK] = "503"
    started: list[str] = []
    with pytest.raises(ApiError) as failed:
        client.upload(path, chunk_size=CHUNK, retries=0, on_started=started.append)
    assert failed.value.status == 503 and started == [f"{fake.proxy_url}/storage/tmp-upload/u0/"]

    done = client.upload(path, chunk_size=CHUNK, resume_url=started[0])

    assert fake.files[done["file_id"]] == data
    assert fake.chunk_starts == [0, CHUNK, 2 * CHUNK, 2 * CHUNK, 3 * CHUNK]


def test_an_empty_file_is_created_by_one_post_carrying_the_empty_md5(
    fake: FakeArchive, client: PyArchiveClient, tmp_path: Path
) -> None:
    path, _ = write_file(tmp_path, 0)

    done = client.upload(path, filename="empty.txt")

    assert fake.files[done["file_id"]] == b"" and done["filename"] == "empty.txt"
    assert fake.completed_md5s == [_upload.EMPTY_MD5] and fake.chunk_starts == []


def test_a_ranged_download_writes_just_the_bytes_asked_for(
    fake: FakeArchive, client: PyArchiveClient, tmp_path: Path
) -> None:
    data = random.Random(7).randbytes(10_000)
    fake.files[7] = data
    dest = tmp_path / "part.bin"

    assert client.download(7, dest, byte_range=(100, 4195), chunk=1000) == 4096
    assert dest.read_bytes() == data[100:4196]
    assert client.download(7, dest, byte_range=(9_990, None)) == 10
    assert dest.read_bytes() == data[9_990:]
    assert client.download(7, dest) == len(data) and dest.read_bytes() == data


def test_a_download_follows_a_redirect_to_another_port_without_the_token(
    fake: FakeArchive, client: PyArchiveClient, tmp_path: Path
) -> None:
    data = random.Random(8).randbytes(5_000)
    fake.files[3] = data
    with serving(fake) as node_url:
        fake.redirect_to = node_url
        dest = tmp_path / "copy.bin"

        assert client.download(3, dest, byte_range=(10, 19)) == 10
        assert dest.read_bytes() == data[10:20]

    proxy_hit, node_hit = [s for s in fake.seen if s.path in ("/storage/download/3/", "/node/3/")]
    assert proxy_hit.headers["Authorization"] == f"JWT {TOKEN}"
    assert node_hit.server_port != proxy_hit.server_port
    assert "Authorization" not in node_hit.headers and node_hit.headers["Range"] == "bytes=10-19"


def test_an_error_answer_raises_api_error_with_its_status_and_detail(
    client: PyArchiveClient,
) -> None:
    with pytest.raises(ApiError) as raised:
        client.file_info(404)

    assert (raised.value.status, raised.value.detail) == (404, "Not found.")
    assert str(raised.value) == "HTTP 404: Not found."


def test_a_get_on_a_keep_alive_connection_the_server_closed_is_sent_again(
    fake: FakeArchive, client: PyArchiveClient
) -> None:
    fake.files[1] = b"0123456789"
    fake.hang_up_after_next_answer = True

    info = {"id": 1, "size": 10, "sha256": hashlib.sha256(b"0123456789").hexdigest()}
    assert client.file_info(1) == info
    assert client.file_info(1) == info

    hits = [s for s in fake.seen if s.path == "/storage/files/1/"]
    assert len(hits) in (2, 3) and hits[0].client_port != hits[-1].client_port


@pytest.mark.parametrize("said", ["stored", "absent", "wrong"])
def test_the_cli_compares_its_sha256_with_the_completions_and_asks_an_older_server(
    fake: FakeArchive, tmp_path: Path, said: str
) -> None:
    from rich.console import Console

    from client.cli.failures import FAILURE, OK
    from client.cli.journal import Journal, Source
    from client.cli.upload import Display, Settings, Uploads

    fake.completion_sha256 = said
    path, data = write_file(tmp_path, 3 * CHUNK + 5)
    source = Source(path, "source.bin", len(data), path.stat().st_mtime_ns)
    journal = Journal(tmp_path / "config" / "uploads.sqlite")
    try:
        settings = Settings(fake.proxy_url, TOKEN, CHUNK, 1, 30.0)
        with Display(Console(file=open(os.devnull, "w")), len(data), 1) as display:
            [result] = Uploads(settings, journal, display).run([source])
    finally:
        journal.close()
    asked = [
        seen.path
        for seen in fake.seen
        if seen.method == "GET" and seen.path.startswith("/storage/files/")
    ]
    if said == "wrong":
        assert result.code == FAILURE and result.message.startswith("checksum mismatch"), result
    else:
        assert result.code == OK and result.sha256 == hashlib.sha256(data).hexdigest(), result
    # Asked for the file only when the completion did not say what it stored.
    assert asked == (["/storage/files/1/"] if said == "absent" else [])


@pytest.mark.parametrize("module", [_http, _ranges, _upload])
def test_the_examples_in_the_helpers_docstrings_hold(module: Any) -> None:
    assert doctest.testmod(module).failed == 0
