"""The seed's resumable chunked-upload API, spoken to a real proxy over HTTP.

Chunks go both ways the API takes them: a raw ``application/octet-stream`` body (the fast
path) and multipart/form-data as the real ``curl -F file=@x`` sends it. Every refused request
is checked to have changed nothing: the upload's offset is the same afterwards and the upload
can still be finished into exactly the source's bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
import treq
from twisted.internet.utils import getProcessOutputAndValue

from tests.conftest import RequestHeaders, RunningProxy, answer, auth, proxy_with

CURL = shutil.which("curl")
SOURCE = random.Random(2).randbytes(300)  # the upload most tests resume: 100 bytes are in


def data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def headers(token: str, content_range: str | None = None, **more: str) -> RequestHeaders:
    found = dict(auth(token), **{"Content-Type": "application/octet-stream", **more})
    if content_range is not None:
        found["Content-Range"] = content_range
    return found


def upload_url(proxy: RunningProxy, upload_id: str | None = None, **query: str) -> str:
    url = f"{proxy.url}/storage/tmp-upload/"
    if upload_id is not None:
        url += f"{upload_id}/"
    return url + ("?" + urlencode(query) if query else "")


async def put_raw(
    proxy: RunningProxy,
    token: str,
    body: bytes,
    content_range: str | None,
    upload_id: str | None = None,
    **query: str,
) -> tuple[int, Any]:
    response = await treq.put(
        upload_url(proxy, upload_id, **query), data=body, headers=headers(token, content_range)
    )
    return await answer(response)


async def start_raw(
    proxy: RunningProxy, token: str, content: bytes, end: int, name: str = "data.bin"
) -> dict[str, Any]:
    """Start an upload of ``content`` with its bytes 0..end-1 as the first raw chunk."""
    code, body = await put_raw(
        proxy, token, content[:end], f"bytes 0-{end - 1}/{len(content)}", filename=name
    )
    assert code == 200, body
    return dict(body)


async def append_raw(
    proxy: RunningProxy, token: str, upload_id: str, content: bytes, start: int, end: int
) -> dict[str, Any]:
    code, body = await put_raw(
        proxy, token, content[start:end], f"bytes {start}-{end - 1}/{len(content)}", upload_id
    )
    assert code == 200, body
    return dict(body)


async def status_of(proxy: RunningProxy, token: str, upload_id: str) -> tuple[int, Any]:
    return await answer(await treq.get(upload_url(proxy, upload_id), headers=auth(token)))


async def complete(
    proxy: RunningProxy, token: str, upload_id: str, checksum: str
) -> tuple[int, Any]:
    response = await treq.post(
        upload_url(proxy, upload_id), json={"md5": checksum}, headers=auth(token)
    )
    return await answer(response)


async def download(proxy: RunningProxy, token: str, file_id: str) -> bytes:
    response = await treq.get(f"{proxy.url}/storage/download/{file_id}/", headers=auth(token))
    assert response.code == 200, await response.text()
    return bytes(await response.content())


async def finish_and_fetch(
    proxy: RunningProxy, token: str, upload_id: str, content: bytes, start: int
) -> bytes:
    """Send the rest of ``content`` from ``start``, complete it, and download what was stored."""
    if start < len(content):
        await append_raw(proxy, token, upload_id, content, start, len(content))
    code, body = await complete(proxy, token, upload_id, md5(content))
    assert code == 200, body
    assert body["status"] == 2
    return await download(proxy, token, body["file_id"])


async def curl(*args: str) -> tuple[int, Any]:
    """Run the real curl binary without blocking the reactor; its status and JSON answer."""
    assert CURL is not None, "these tests need the curl binary"
    out, err, exit_code = await getProcessOutputAndValue(
        CURL, ["-s", "-S", "-w", "\n%{http_code}", *args], env=dict(os.environ)
    )
    assert exit_code == 0, err
    raw, _, status = out.rpartition(b"\n")
    return int(status), json.loads(raw) if raw else None


def staged(proxy: RunningProxy) -> list[str]:
    return sorted(path.name for path in (proxy.data_dir / "staging").iterdir())


def multipart(
    fields: dict[str, str], file: bytes | None, file_name: str = "chunk.bin"
) -> tuple[bytes, str]:
    """A multipart/form-data body built by hand, so a test can put anything in it."""
    boundary = "testboundary" + uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value.encode("utf-8")
        + b"\r\n"
        for name, value in fields.items()
    ]
    if file is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{file_name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + file
            + b"\r\n"
        )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------- the happy paths


@pytest_twisted.ensureDeferred
async def test_a_file_sent_in_raw_chunks_is_completed_listed_and_downloaded_intact(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    content = data(250_000)
    first = await start_raw(running_proxy, token, content, 100_000, "big.bin")
    upload_id = first["id"]
    assert first["offset"] == 100_000
    assert first["status"] == 1
    assert first["url"] == f"{running_proxy.url}/storage/tmp-upload/{upload_id}/"
    assert {
        "id",
        "url",
        "file",
        "filename",
        "offset",
        "created_at",
        "status",
        "completed_at",
        "user",
        "parent",
        "expires",
    } <= set(first)
    assert first["file"] is None and first["completed_at"] is None and first["parent"] is None
    assert first["sha256"] is None  # said once complete
    second = await append_raw(running_proxy, token, upload_id, content, 100_000, 200_000)
    assert second["offset"] == 200_000
    third = await append_raw(running_proxy, token, upload_id, content, 200_000, 250_000)
    assert third["offset"] == 250_000

    code, done = await complete(running_proxy, token, upload_id, md5(content))
    assert code == 200, done
    assert done["status"] == 2
    assert done["completed_at"] is not None
    assert done["file"] == f"{running_proxy.url}/storage/download/{done['file_id']}/"
    assert done["sha256"] == hashlib.sha256(content).hexdigest()

    listing = await (
        await treq.get(f"{running_proxy.url}/storage/files/", headers=auth(token))
    ).json()
    assert listing["count"] == 1
    [stored] = listing["results"]
    assert stored["id"] == done["file_id"]
    assert stored["filename"] == "big.bin"
    assert stored["size"] == len(content)
    assert stored["md5"] == md5(content)
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()
    assert await download(running_proxy, token, done["file_id"]) == content
    assert staged(running_proxy) == []


@pytest_twisted.ensureDeferred
async def test_a_file_sent_in_multipart_chunks_by_curl_is_stored_intact(
    running_proxy: RunningProxy, tmp_path: Path
) -> None:
    token = await running_proxy.register_and_login()
    content = data(70_000, seed=3)
    pieces = [(0, 30_000), (30_000, 60_000), (60_000, 70_000)]
    for number, (start, end) in enumerate(pieces):
        (tmp_path / f"part{number}").write_bytes(content[start:end])
    jwt = f"Authorization: JWT {token}"

    def content_range(start: int, end: int) -> str:
        return f"Content-Range: bytes {start}-{end - 1}/{len(content)}"

    code, first = await curl(
        "-H", jwt, "-H", content_range(*pieces[0]),
        "-F", f"file=@{tmp_path / 'part0'}", "-F", "filename=photo.raw",
        "-X", "PUT", upload_url(running_proxy),
    )  # fmt: skip
    assert code == 200, first
    assert first["filename"] == "photo.raw"
    assert first["offset"] == 30_000
    for number, (start, end) in enumerate(pieces[1:], 1):
        code, body = await curl(
            "-H", jwt, "-H", content_range(start, end),
            "-F", f"file=@{tmp_path / f'part{number}'}", "-X", "PUT", first["url"],
        )  # fmt: skip
        assert code == 200, body
        assert body["offset"] == end
    code, done = await curl("-H", jwt, "-F", f"md5={md5(content)}", "-X", "POST", first["url"])
    assert code == 200, done
    assert done["status"] == 2
    assert await download(running_proxy, token, done["file_id"]) == content


@pytest_twisted.ensureDeferred
async def test_the_seeds_documented_one_based_first_chunk_is_stored_from_offset_0(
    running_proxy: RunningProxy, tmp_path: Path
) -> None:
    token = await running_proxy.register_and_login()
    content = data(32_634, seed=4)
    image = tmp_path / "some-image.png"
    image.write_bytes(content)
    jwt = f"Authorization: JWT {token}"
    code, body = await curl(
        "-H", jwt, "-H", "Content-Range: bytes 1-32634/32634",
        "-F", f"file=@{image}", "-F", "filename=some-image.png",
        "-X", "PUT", upload_url(running_proxy),
    )  # fmt: skip
    assert code == 200, body
    assert body["offset"] == 32_634
    assert body["filename"] == "some-image.png"
    code, done = await curl("-H", jwt, "-d", f"md5={md5(content)}", "-X", "POST", body["url"])
    assert code == 200, done
    assert await download(running_proxy, token, done["file_id"]) == content


@pytest_twisted.ensureDeferred
async def test_a_whole_file_posted_by_curl_with_its_md5_is_stored_in_one_request(
    running_proxy: RunningProxy, tmp_path: Path
) -> None:
    token = await running_proxy.register_and_login()
    content = data(5_000, seed=5)
    source = tmp_path / "notes.txt"
    source.write_bytes(content)
    code, body = await curl(
        "-H", f"Authorization: JWT {token}",
        "-F", f"file=@{source}", "-F", "filename=notes.txt", "-F", f"md5={md5(content)}",
        "-X", "POST", upload_url(running_proxy),
    )  # fmt: skip
    assert code == 200, body
    assert body["status"] == 2
    assert body["offset"] == len(content)
    assert await download(running_proxy, token, body["file_id"]) == content


@pytest.mark.parametrize("size", [0, 4_321], ids=["empty", "small"])
@pytest_twisted.ensureDeferred
async def test_a_whole_raw_file_posted_with_filename_and_md5_in_the_query_is_stored(
    running_proxy: RunningProxy, size: int
) -> None:
    token = await running_proxy.register_and_login()
    content = data(size, seed=6)
    response = await treq.post(
        upload_url(running_proxy, filename="raw.bin", md5=md5(content)),
        data=content,
        headers=headers(token),
    )
    code, body = await answer(response)
    assert code == 200, body
    assert body["status"] == 2
    assert body["offset"] == size
    assert await download(running_proxy, token, body["file_id"]) == content
    assert staged(running_proxy) == []


@pytest_twisted.ensureDeferred
async def test_a_whole_file_posted_with_the_wrong_md5_is_refused_and_not_kept(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    response = await treq.post(
        upload_url(running_proxy, filename="raw.bin", md5="0" * 32),
        data=SOURCE,
        headers=headers(token),
    )
    code, body = await answer(response)
    assert code == 400
    assert body == {"detail": "md5 checksum does not match"}
    assert staged(running_proxy) == []
    listing = await (
        await treq.get(f"{running_proxy.url}/storage/files/", headers=auth(token))
    ).json()
    assert listing["count"] == 0


@pytest_twisted.ensureDeferred
async def test_a_bad_whole_file_post_is_refused_and_stores_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    right = {"filename": "raw.bin", "md5": md5(SOURCE)}
    cases = {
        "unknown query field": ({**right, "colour": "blue"}, "Unknown fields: colour"),
        "no md5": ({"filename": "raw.bin"}, "md5"),
        "malformed md5": ({**right, "md5": "xyz"}, "md5"),
        "no filename": ({"md5": md5(SOURCE)}, "filename"),
        "path as filename": ({**right, "filename": "../raw.bin"}, "filename"),
        "not a parent id": ({**right, "parent": "x"}, "Parent file not found"),
    }
    for case, (query, detail) in cases.items():
        response = await treq.post(
            upload_url(running_proxy, **query), data=SOURCE, headers=headers(token)
        )
        code, body = await answer(response)
        assert 400 <= code < 500, (case, code, body)
        assert detail in body["detail"], (case, body)
        assert staged(running_proxy) == [], case
    listing = await (
        await treq.get(f"{running_proxy.url}/storage/files/", headers=auth(token))
    ).json()
    assert listing["count"] == 0


@pytest_twisted.ensureDeferred
async def test_getting_an_upload_reports_the_offset_to_resume_from(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    started = await start_raw(running_proxy, token, SOURCE, 100)
    code, body = await status_of(running_proxy, token, started["id"])
    assert code == 200
    assert body == started
    await append_raw(running_proxy, token, started["id"], SOURCE, 100, 180)
    code, body = await status_of(running_proxy, token, started["id"])
    assert (body["offset"], body["status"]) == (180, 1)


@pytest_twisted.ensureDeferred
async def test_a_chunk_at_the_wrong_offset_is_refused_with_the_current_offset(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    upload_id = (await start_raw(running_proxy, token, SOURCE, 100))["id"]
    before = (running_proxy.data_dir / "staging" / f"{upload_id}.part").read_bytes()
    for start in (0, 50, 150, 200):
        code, body = await put_raw(
            running_proxy, token, SOURCE[start:300], f"bytes {start}-299/300", upload_id
        )
        assert code == 400
        assert body == {"detail": "Offsets do not match", "offset": 100}
    after = (running_proxy.data_dir / "staging" / f"{upload_id}.part").read_bytes()
    assert after[:100] == before[:100] == SOURCE[:100]
    assert await finish_and_fetch(running_proxy, token, upload_id, SOURCE, 100) == SOURCE


# ---------------------------------------------------------------- bad chunks change nothing


@dataclass(frozen=True)
class Sent:
    """One PUT of a chunk, as a test sends it."""

    content_range: str | None
    body: bytes
    query: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"

    @classmethod
    def form(
        cls, content_range: str, fields: dict[str, str], file: bytes | None, **kw: str
    ) -> Sent:
        body, content_type = multipart(fields, file, **kw)
        return cls(content_range, body, content_type=content_type)

    async def put(self, proxy: RunningProxy, token: str, upload_id: str | None) -> Any:
        sent = headers(token, self.content_range, **{"Content-Type": self.content_type})
        url = upload_url(proxy, upload_id, **self.query)
        return await treq.put(url, data=self.body, headers=sent)


async def check_refused_without_change(
    proxy: RunningProxy, token: str, case: str, sent: Sent, status: int, detail: str
) -> None:
    """``sent``, as the second chunk of an upload holding 100 of SOURCE's 300 bytes, is
    refused with ``status`` and ``detail``, and the upload still finishes into SOURCE."""
    upload_id = (await start_raw(proxy, token, SOURCE, 100))["id"]
    code, refusal = await answer(await sent.put(proxy, token, upload_id))
    assert code == status, f"{case}: answered {code} {refusal}"
    assert detail in refusal["detail"], f"{case}: {refusal}"
    _, now = await status_of(proxy, token, upload_id)
    assert (now["offset"], now["status"]) == (100, 1), f"{case} moved the offset: {now}"
    assert await finish_and_fetch(proxy, token, upload_id, SOURCE, 100) == SOURCE, (
        f"{case} changed the stored bytes"
    )


async def check_refused_creating_nothing(
    proxy: RunningProxy, token: str, case: str, sent: Sent, status: int, detail: str
) -> None:
    """``sent``, as the first chunk of a new upload, is refused and leaves no trace."""
    code, refusal = await answer(await sent.put(proxy, token, None))
    assert code == status, f"{case}: answered {code} {refusal}"
    assert detail in refusal["detail"], f"{case}: {refusal}"
    assert staged(proxy) == [], f"{case} left a staging file"
    assert list((proxy.data_dir / "blobs").iterdir()) == [], f"{case} stored a blob"


NEXT = SOURCE[100:200]  # the right bytes for the second chunk, 100-199

MALFORMED_RANGES: dict[str, tuple[str | None, str]] = {
    "missing": (None, "Content-Range header is required"),
    "empty": ("", "Malformed"),
    "Range syntax": ("bytes=100-199/300", "Malformed"),
    "no total": ("bytes 100-199", "Malformed"),
    "no end": ("bytes 100-/300", "Malformed"),
    "other unit": ("items 100-199/300", "Malformed"),
    "two ranges": ("bytes 100-149/300,150-199/300", "Malformed"),
    "negative start": ("bytes -100-199/300", "Malformed"),
    "negative total": ("bytes 100-199/-300", "Malformed"),
    "not numbers": ("bytes 1e2-199/300", "Malformed"),
    "non-ASCII digits": (
        "bytes \u0661\u0660\u0660-\u0661\u0669\u0669/\u0663\u0660\u0660",
        "Malformed",
    ),
    "30-digit end": (f"bytes 100-{'9' * 30}/300", "Malformed"),
    "overflowing 20-digit numbers": (f"bytes 100-{'9' * 20}/{'9' * 20}", "too large"),
    "end before start": ("bytes 199-100/300", "end is before its start"),
}


@pytest_twisted.ensureDeferred
async def test_a_chunk_with_a_missing_or_malformed_content_range_is_refused_and_changes_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    for case, (content_range, detail) in MALFORMED_RANGES.items():
        sent = Sent(content_range, NEXT)
        await check_refused_without_change(running_proxy, token, case, sent, 400, detail)


@pytest_twisted.ensureDeferred
async def test_a_chunk_that_does_not_fit_the_upload_is_refused_and_changes_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    past_end = SOURCE[100:] + b"x" * 50
    cases = {
        "total changed": (Sent("bytes 100-199/400", NEXT), "Total size does not match"),
        "beyond total": (Sent("bytes 100-349/300", past_end), "beyond the total size"),
        "beyond the total given before": (Sent("bytes 100-349/*", past_end), "beyond the total"),
        "offset behind": (Sent("bytes 50-149/300", SOURCE[50:150]), "Offsets do not match"),
        "offset ahead": (Sent("bytes 150-199/300", SOURCE[150:200]), "Offsets do not match"),
        "body too short": (Sent("bytes 100-199/300", SOURCE[100:150]), "Chunk is 50 bytes"),
        "body too long": (Sent("bytes 100-199/300", SOURCE[100:250]), "Chunk is 150 bytes"),
        "empty body": (Sent("bytes 100-199/300", b""), "Chunk is 0 bytes"),
        "multipart body too short": (
            Sent.form("bytes 100-199/300", {}, SOURCE[100:150]),
            "Chunk is 50 bytes",
        ),
    }
    for case, (sent, detail) in cases.items():
        await check_refused_without_change(running_proxy, token, case, sent, 400, detail)


@pytest_twisted.ensureDeferred
async def test_a_chunk_with_unknown_fields_or_an_unreadable_body_is_refused_and_changes_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    in_range = "bytes 100-199/300"
    cases = {
        "unknown query field": (
            Sent(in_range, NEXT, query={"colour": "blue"}),
            400,
            "Unknown fields: colour",
        ),
        "unknown multipart field": (
            Sent.form(in_range, {"colour": "blue"}, NEXT),
            400,
            "Unknown fields: colour",
        ),
        "multipart without a file part": (
            Sent.form(in_range, {"filename": "data.bin"}, None),
            400,
            "no 'file' part",
        ),
        "multipart without a boundary": (
            Sent(in_range, b"--x\r\n\r\n", content_type="multipart/form-data"),
            400,
            "boundary",
        ),
        "truncated multipart": (
            Sent(in_range, b"--abc\r\nbroken", content_type="multipart/form-data; boundary=abc"),
            400,
            "",
        ),
        "unsupported Content-Type": (
            Sent(in_range, NEXT, content_type="text/plain"),
            415,
            "Unsupported Content-Type",
        ),
    }
    for case, (sent, status, detail) in cases.items():
        await check_refused_without_change(running_proxy, token, case, sent, status, detail)


BAD_FILENAMES = {
    "missing": None,
    "empty": "",
    "blank": "   ",
    "slash": "a/b.txt",
    "absolute": "/etc/passwd",
    "backslash": "a\\b.txt",
    "dot-dot": "..",
    "dot": ".",
    "dot-dot path": "../escape.txt",
    "nul": "a\x00b.txt",
    "bell": "a\x07b.txt",
    "newline": "line\nbreak.txt",
    "delete": "del\x7f.txt",
    "c1 control": "c1\x85.txt",
    "too long": "x" * 256,
}
FIRST = "bytes 0-99/300"


@pytest_twisted.ensureDeferred
async def test_a_bad_filename_in_the_query_is_refused_and_creates_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    for case, filename in BAD_FILENAMES.items():
        query = {} if filename is None else {"filename": filename}
        sent = Sent(FIRST, SOURCE[:100], query=query)
        await check_refused_creating_nothing(running_proxy, token, case, sent, 400, "filename")
    response = await treq.put(
        f"{running_proxy.url}/storage/tmp-upload/?filename=%FF.txt",
        data=SOURCE[:100],
        headers=headers(token, FIRST),
    )
    code, body = await answer(response)
    assert (code, body) == (400, {"detail": "query arguments must be UTF-8"})
    assert staged(running_proxy) == []


@pytest_twisted.ensureDeferred
async def test_a_bad_filename_in_a_multipart_form_is_refused_and_creates_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    for case, filename in BAD_FILENAMES.items():
        if filename is None:
            continue
        sent = Sent.form(FIRST, {"filename": filename}, SOURCE[:100])
        await check_refused_creating_nothing(running_proxy, token, case, sent, 400, "filename")
    # Without a filename field, the file part's own name is the filename, and is checked too.
    sent = Sent.form(FIRST, {}, SOURCE[:100], file_name="../../etc/passwd")
    await check_refused_creating_nothing(running_proxy, token, "part name", sent, 400, "filename")


@pytest_twisted.ensureDeferred
async def test_a_bad_first_chunk_is_refused_and_creates_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    name = {"filename": "a.bin"}
    cases = {
        "no range": (Sent(None, SOURCE[:100], name), "Content-Range header is required"),
        "malformed": (Sent("bytes 0-99", SOURCE[:100], name), "Malformed"),
        "end before start": (Sent("bytes 99-0/300", SOURCE[:100], name), "before its start"),
        "not at 0": (Sent("bytes 50-149/300", SOURCE[:100], name), "Offsets do not match"),
        "one-based but not whole": (Sent("bytes 1-10/300", SOURCE[:10], name), "Offsets"),
        "length": (Sent("bytes 0-49/300", SOURCE[:100], name), "Chunk is 100 bytes"),
        "unknown field": (
            Sent(FIRST, SOURCE[:100], {**name, "colour": "blue"}),
            "Unknown fields: colour",
        ),
        "parent not an id": (
            Sent(FIRST, SOURCE[:100], {**name, "parent": "../x"}),
            "Parent file not found",
        ),
    }
    for case, (sent, detail) in cases.items():
        status = 404 if case.startswith("parent") else 400
        await check_refused_creating_nothing(running_proxy, token, case, sent, status, detail)


# ---------------------------------------------------------------- completion


@pytest_twisted.ensureDeferred
async def test_a_wrong_md5_is_refused_and_the_upload_stays_resumable(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    upload_id = (await start_raw(running_proxy, token, SOURCE, 100))["id"]
    await append_raw(running_proxy, token, upload_id, SOURCE, 100, 300)
    code, body = await complete(running_proxy, token, upload_id, md5(b"something else"))
    assert code == 400
    assert body == {"detail": "md5 checksum does not match"}
    code, now = await status_of(running_proxy, token, upload_id)
    assert (now["offset"], now["status"]) == (300, 1)
    assert await finish_and_fetch(running_proxy, token, upload_id, SOURCE, 300) == SOURCE


@pytest_twisted.ensureDeferred
async def test_a_malformed_md5_is_refused(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    upload_id = (await start_raw(running_proxy, token, SOURCE, 300))["id"]
    for checksum in [None, "", "abc", "g" * 32, "0" * 33, 12345]:
        response = await treq.post(
            upload_url(running_proxy, upload_id),
            json={} if checksum is None else {"md5": checksum},
            headers=auth(token),
        )
        code, body = await answer(response)
        assert code == 400, (checksum, body)
        assert "md5" in body["detail"], (checksum, body)
    assert (await status_of(running_proxy, token, upload_id))[1]["status"] == 1
    assert await finish_and_fetch(running_proxy, token, upload_id, SOURCE, 300) == SOURCE


@pytest_twisted.ensureDeferred
async def test_completing_an_unfinished_upload_is_refused(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    upload_id = (await start_raw(running_proxy, token, SOURCE, 100))["id"]
    code, body = await complete(running_proxy, token, upload_id, md5(SOURCE[:100]))
    assert code == 400
    assert body["detail"] == "Upload is incomplete"
    assert body["offset"] == 100
    assert await finish_and_fetch(running_proxy, token, upload_id, SOURCE, 100) == SOURCE


@pytest_twisted.ensureDeferred
async def test_completing_with_an_unknown_field_is_refused(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    upload_id = (await start_raw(running_proxy, token, SOURCE, 300))["id"]
    response = await treq.post(
        upload_url(running_proxy, upload_id),
        json={"md5": md5(SOURCE), "sha1": "x"},
        headers=auth(token),
    )
    code, body = await answer(response)
    assert code == 400
    assert "Unknown fields: sha1" in body["detail"]
    assert (await status_of(running_proxy, token, upload_id))[1]["status"] == 1


@pytest_twisted.ensureDeferred
async def test_a_completed_upload_takes_no_more_chunks_completions_or_aborts(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    upload_id = (await start_raw(running_proxy, token, SOURCE, 300))["id"]
    code, done = await complete(running_proxy, token, upload_id, md5(SOURCE))
    assert code == 200
    code, body = await put_raw(running_proxy, token, b"more", "bytes 300-303/304", upload_id)
    assert (code, body["detail"]) == (400, "Upload has already been completed")
    code, body = await complete(running_proxy, token, upload_id, md5(SOURCE))
    assert (code, body["detail"]) == (400, "Upload has already been completed")
    response = await treq.delete(upload_url(running_proxy, upload_id), headers=auth(token))
    code, body = await answer(response)
    assert (code, body["detail"]) == (400, "Upload has already been completed")
    code, now = await status_of(running_proxy, token, upload_id)
    assert now["status"] == 2
    assert now["sha256"] == done["sha256"] == hashlib.sha256(SOURCE).hexdigest()
    assert await download(running_proxy, token, done["file_id"]) == SOURCE
    deleted = await treq.delete(
        f"{running_proxy.url}/storage/files/{done['file_id']}/", headers=auth(token)
    )
    assert deleted.code == 204, await deleted.text()
    code, now = await status_of(running_proxy, token, upload_id)
    assert (code, now["status"], now["sha256"]) == (200, 2, None)  # its file is gone


# ---------------------------------------------------------------- limits and expiry


@pytest_twisted.ensureDeferred
async def test_a_chunk_over_the_maximum_size_answers_413_and_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(database_url, tmp_path / "proxy", max_chunk_size=1024) as proxy:
        token = await proxy.register_and_login()
        content = data(3000, seed=7)
        code, body = await put_raw(proxy, token, content[:2000], "bytes 0-1999/3000", filename="a")
        assert code == 413, body
        assert body["max_chunk_size"] == 1024
        assert staged(proxy) == []

        upload_id = (await start_raw(proxy, token, content, 1000))["id"]
        code, body = await put_raw(
            proxy, token, content[1000:3000], "bytes 1000-2999/3000", upload_id
        )
        assert code == 413, body
        form, content_type = multipart({}, content[1000:3000])
        response = await treq.put(
            upload_url(proxy, upload_id),
            data=form,
            headers=headers(token, "bytes 1000-2999/3000", **{"Content-Type": content_type}),
        )
        code, body = await answer(response)
        assert code == 413, body
        # Far past the limit: the proxy stops keeping the body at all.
        huge = b"\0" * (2 << 20)
        code, body = await put_raw(proxy, token, huge, f"bytes 1000-{999 + len(huge)}/*", upload_id)
        assert code == 413, body
        assert (await status_of(proxy, token, upload_id))[1]["offset"] == 1000

        await append_raw(proxy, token, upload_id, content, 1000, 2000)
        assert await finish_and_fetch(proxy, token, upload_id, content, 2000) == content


@pytest_twisted.ensureDeferred
async def test_an_expired_upload_answers_410_and_is_swept_away(
    database_url: str, tmp_path: Path
) -> None:
    # An expiry of zero makes every upload expired the moment after it is created, which
    # shows the same rule as waiting out a longer one, without sleeping.
    async with proxy_with(database_url, tmp_path / "proxy", upload_expiry=0.0) as proxy:
        token = await proxy.register_and_login()
        started = await start_raw(proxy, token, SOURCE, 100)
        assert started["expires"] == started["created_at"]
        code, body = await put_raw(proxy, token, SOURCE[100:], "bytes 100-299/300", started["id"])
        assert (code, body["detail"]) == (410, "Upload has expired")
        code, body = await complete(proxy, token, started["id"], md5(SOURCE[:100]))
        assert (code, body["detail"]) == (410, "Upload has expired")
        assert staged(proxy) == [f"{started['id']}.part"]

        # The periodic sweep (every few minutes in a running proxy) frees the space.
        assert await proxy.proxy.uploads.expire() == 1
        assert staged(proxy) == []
        code, body = await status_of(proxy, token, started["id"])
        assert code == 404, body


@pytest_twisted.ensureDeferred
async def test_an_upload_expires_a_day_after_creation_by_default(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    started = await start_raw(running_proxy, token, SOURCE, 100)
    created = datetime.fromisoformat(started["created_at"])
    expires = datetime.fromisoformat(started["expires"])
    assert (expires - created).total_seconds() == pytest.approx(86400.0)
    later = await append_raw(running_proxy, token, started["id"], SOURCE, 100, 300)
    assert later["expires"] == started["expires"]  # chunks do not extend it


# ---------------------------------------------------------------- whose upload


@pytest_twisted.ensureDeferred
async def test_another_users_upload_is_not_found_for_any_method(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob")
    upload_id = (await start_raw(running_proxy, alice, SOURCE, 100))["id"]
    url = upload_url(running_proxy, upload_id)
    attempts = [
        treq.get(url, headers=auth(bob)),
        treq.put(url, data=SOURCE[100:], headers=headers(bob, "bytes 100-299/300")),
        treq.post(url, json={"md5": md5(SOURCE[:100])}, headers=auth(bob)),
        treq.delete(url, headers=auth(bob)),
    ]
    for attempt in attempts:
        code, body = await answer(await attempt)
        assert (code, body) == (404, {"detail": "Upload not found"})
    code, now = await status_of(running_proxy, alice, upload_id)
    assert (code, now["offset"]) == (200, 100)
    assert await finish_and_fetch(running_proxy, alice, upload_id, SOURCE, 100) == SOURCE


@pytest_twisted.ensureDeferred
async def test_an_unknown_upload_id_is_not_found(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    for upload_id in [uuid.uuid4().hex, "not-an-id", "A" * 32, "0" * 31]:
        url = upload_url(running_proxy, upload_id)
        for attempt in [
            treq.get(url, headers=auth(token)),
            treq.put(url, data=b"abc", headers=headers(token, "bytes 0-2/3")),
            treq.post(url, json={"md5": md5(b"abc")}, headers=auth(token)),
            treq.delete(url, headers=auth(token)),
        ]:
            code, body = await answer(await attempt)
            assert (code, body) == (404, {"detail": "Upload not found"}), upload_id


@pytest_twisted.ensureDeferred
async def test_aborting_an_upload_frees_its_staging_file_and_forgets_it(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    upload_id = (await start_raw(running_proxy, token, SOURCE, 100))["id"]
    assert staged(running_proxy) == [f"{upload_id}.part"]
    response = await treq.delete(upload_url(running_proxy, upload_id), headers=auth(token))
    assert response.code == 204
    assert await response.content() == b""
    assert staged(running_proxy) == []
    code, body = await status_of(running_proxy, token, upload_id)
    assert code == 404, body
    code, body = await put_raw(running_proxy, token, SOURCE[100:], "bytes 100-299/300", upload_id)
    assert code == 404, body


# ---------------------------------------------------------------- versions through parent


@pytest_twisted.ensureDeferred
async def test_uploading_with_parent_adds_a_version_to_the_callers_file(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    first = await start_raw(running_proxy, token, SOURCE, 300, "report.txt")
    code, done = await complete(running_proxy, token, first["id"], md5(SOURCE))
    assert (code, done["version"]) == (200, 1)
    file_id = done["file_id"]

    newer = data(120, seed=8)
    sent = Sent.form("bytes 0-119/120", {"filename": "report-v2.txt", "parent": file_id}, newer)
    code, second = await answer(await sent.put(running_proxy, token, None))
    assert code == 200, second
    assert second["parent"] == file_id
    code, done = await complete(running_proxy, token, second["id"], md5(newer))
    assert code == 200, done
    assert (done["file_id"], done["version"]) == (file_id, 2)

    detail = await (
        await treq.get(f"{running_proxy.url}/storage/files/{file_id}/", headers=auth(token))
    ).json()
    assert [v["number"] for v in detail["versions"]] == [2, 1]
    assert detail["md5"] == md5(newer)
    assert await download(running_proxy, token, file_id) == newer


@pytest_twisted.ensureDeferred
async def test_uploading_with_another_users_file_as_parent_is_not_found(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob")
    started = await start_raw(running_proxy, alice, SOURCE, 300, "alice.txt")
    alices_file = (await complete(running_proxy, alice, started["id"], md5(SOURCE)))[1]["file_id"]

    code, body = await put_raw(
        running_proxy, bob, SOURCE, "bytes 0-299/300", filename="bob.txt", parent=alices_file
    )
    assert code == 404, body
    response = await treq.post(
        upload_url(running_proxy, filename="bob.txt", md5=md5(SOURCE), parent=alices_file),
        data=SOURCE,
        headers=headers(bob),
    )
    code, body = await answer(response)
    assert code == 404, body
    assert staged(running_proxy) == []
    listing = await (
        await treq.get(f"{running_proxy.url}/storage/files/", headers=auth(bob))
    ).json()
    assert listing["count"] == 0
    detail = await (
        await treq.get(f"{running_proxy.url}/storage/files/{alices_file}/", headers=auth(alice))
    ).json()
    assert [v["number"] for v in detail["versions"]] == [1]
