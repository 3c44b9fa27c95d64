"""Quotas and the open-uploads cap, enforced by the upload engine for both dialects, against
the real proxy over both databases.

Quotas are set with the store directly (the staff API is elsewhere). Every refusal is checked
to have stored nothing: no upload row, no staging file, the listings unchanged, or, for a
chunk, the offset unchanged and the upload still able to finish into exactly its bytes.
"""

from __future__ import annotations

import base64
import doctest
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock

from proxy.catalog import store
from proxy.uploads import quota
from tests.conftest import RequestHeaders, RunningProxy, answer, auth, proxy_with

TUS: RequestHeaders = {"Tus-Resumable": "1.0.0"}
STREAM = "application/offset+octet-stream"


def data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def over(quota_: int, used: int) -> dict[str, Any]:
    return {"detail": "quota exceeded", "quota": quota_, "used": used}


async def set_quota(proxy: RunningProxy, username: str, limit: int | None) -> None:
    db = proxy.proxy.db
    user = await db.run(store.user_by_name, username)
    assert user is not None
    await db.run(store.set_quota, user.id, limit)


def tus_headers(token: str, **more: str) -> RequestHeaders:
    found: RequestHeaders = {**TUS, **auth(token)}
    for name, value in more.items():
        found[name.replace("_", "-")] = value
    return found


async def tus_post(
    proxy: RunningProxy,
    token: str,
    length: int | None,
    body: bytes = b"",
    name: str = "data.bin",
    **more: str,
) -> tuple[Any, Any]:
    """POST /files/: (response, JSON body of an error or None); Upload-Defer-Length if no
    ``length``."""
    extra = dict(more, Upload_Metadata=f"filename {base64.b64encode(name.encode()).decode()}")
    if length is None:
        extra["Upload_Defer_Length"] = "1"
    else:
        extra["Upload_Length"] = str(length)
    if body:
        extra["Content_Type"] = STREAM
    response = await treq.post(
        f"{proxy.url}/files/", headers=tus_headers(token, **extra), data=body or None
    )
    if response.code >= 400:
        return response, (await answer(response))[1]
    await response.content()
    return response, None


async def tus_created(proxy: RunningProxy, token: str, length: int | None, **more: Any) -> str:
    response, error = await tus_post(proxy, token, length, **more)
    assert response.code == 201, error
    return str(response.headers.getRawHeaders("location")[0])


async def tus_patch(
    url: str, token: str, offset: int, body: bytes, **more: str
) -> tuple[int, Any, str | None]:
    """(status, JSON error body or None, Upload-Offset)."""
    response = await treq.request(
        "PATCH",
        url,
        data=body,
        headers=tus_headers(token, Content_Type=STREAM, Upload_Offset=str(offset), **more),
    )
    offset_header = response.headers.getRawHeaders("upload-offset", [None])[0]
    if response.code >= 400:
        return response.code, (await answer(response))[1], offset_header
    await response.content()
    return response.code, None, offset_header


async def tus_offset(url: str, token: str) -> int:
    response = await treq.head(url, headers=tus_headers(token))
    await response.content()
    assert response.code == 200
    return int(response.headers.getRawHeaders("upload-offset")[0])


async def tus_upload(proxy: RunningProxy, token: str, content: bytes, name: str) -> None:
    url = await tus_created(proxy, token, len(content), name=name)
    code, error, _ = await tus_patch(url, token, 0, content)
    assert code == 204, error


async def seed_put(
    proxy: RunningProxy, token: str, body: bytes, content_range: str, upload_id: str = ""
) -> tuple[int, Any]:
    path = f"{upload_id}/" if upload_id else "?filename=seed.bin"
    response = await treq.put(
        f"{proxy.url}/storage/tmp-upload/{path}",
        data=body,
        headers={**auth(token), "Content-Range": content_range,
                 "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    return await answer(response)


async def unfinished(proxy: RunningProxy, token: str) -> list[dict[str, Any]]:
    code, body = await answer(
        await treq.get(f"{proxy.url}/storage/tmp-upload/", headers=auth(token))
    )
    assert code == 200
    return list(body["results"])


async def files(proxy: RunningProxy, token: str) -> list[dict[str, Any]]:
    code, body = await answer(await treq.get(f"{proxy.url}/storage/files/", headers=auth(token)))
    assert code == 200
    return list(body["results"])


def staged(proxy: RunningProxy) -> list[str]:
    return sorted(path.name for path in (proxy.data_dir / "staging").iterdir())


async def assert_nothing_stored(proxy: RunningProxy, token: str) -> None:
    assert await unfinished(proxy, token) == []
    assert await files(proxy, token) == []
    assert staged(proxy) == []


def test_the_quota_arithmetic_has_worked_examples() -> None:
    results = doctest.testmod(quota)
    assert results.attempted >= 6 and results.failed == 0


# -- at creation


@pytest_twisted.ensureDeferred
async def test_a_seed_upload_whose_total_passes_the_quota_is_refused_at_its_first_chunk(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 100)
    code, body = await seed_put(running_proxy, token, data(10), "bytes 0-9/101")
    assert (code, body) == (413, over(100, 0))
    await assert_nothing_stored(running_proxy, token)
    code, body = await seed_put(running_proxy, token, data(10), "bytes 0-9/100")
    assert code == 200 and body["offset"] == 10, body  # up to the quota exactly


@pytest_twisted.ensureDeferred
async def test_a_whole_file_in_one_seed_request_that_passes_the_quota_is_refused(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 100)
    content = data(101)
    response = await treq.post(
        f"{running_proxy.url}/storage/tmp-upload/?filename=whole.bin"
        f"&md5={hashlib.md5(content).hexdigest()}",
        data=content,
        headers={**auth(token), "Content-Type": "application/octet-stream"},
    )
    assert await answer(response) == (413, over(100, 0))
    await assert_nothing_stored(running_proxy, token)


@pytest_twisted.ensureDeferred
async def test_a_tus_upload_whose_length_passes_the_quota_is_refused_413_at_creation(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 1000)
    response, body = await tus_post(running_proxy, token, 1001)
    assert response.code == 413 and body == over(1000, 0)
    assert response.headers.getRawHeaders("location") is None
    await assert_nothing_stored(running_proxy, token)


@pytest_twisted.ensureDeferred
async def test_a_tus_creation_with_upload_that_passes_the_quota_creates_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 100)
    response, body = await tus_post(running_proxy, token, 101, data(50))
    assert response.code == 413 and body == over(100, 0)
    # Of deferred length, the body that came with the creation is what is checked.
    response, body = await tus_post(running_proxy, token, None, data(101))
    assert response.code == 413 and body == over(100, 0)
    await assert_nothing_stored(running_proxy, token)
    response, _ = await tus_post(running_proxy, token, None, data(100))
    assert response.code == 201
    assert response.headers.getRawHeaders("upload-offset") == ["100"]


# -- chunks of an upload whose total is not known yet


@pytest_twisted.ensureDeferred
async def test_deferred_length_patches_are_taken_until_the_one_that_would_pass_the_quota(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 250)
    content = data(300)
    url = await tus_created(running_proxy, token, None)
    for offset in (0, 100):
        code, error, _ = await tus_patch(url, token, offset, content[offset : offset + 100])
        assert code == 204, error
    code, body, _ = await tus_patch(url, token, 200, content[200:])
    assert (code, body) == (413, over(250, 200))
    assert await tus_offset(url, token) == 200  # the refused bytes were not acknowledged
    # The upload goes on once there is room, from where it stood.
    await set_quota(running_proxy, "alice", 300)
    code, error, new_offset = await tus_patch(url, token, 200, content[200:], Upload_Length="300")
    assert (code, new_offset) == (204, "300"), error
    (stored,) = await files(running_proxy, token)
    assert stored["size"] == 300
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()


@pytest_twisted.ensureDeferred
async def test_a_deferred_length_said_later_is_refused_if_it_would_pass_the_quota(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 250)
    content = data(250)
    url = await tus_created(running_proxy, token, None, body=content[:100])
    code, body, _ = await tus_patch(url, token, 100, b"", Upload_Length="251")
    assert (code, body) == (413, over(250, 100))
    response = await treq.head(url, headers=tus_headers(token))
    await response.content()
    assert response.headers.getRawHeaders("upload-defer-length") == ["1"]  # still unknown
    code, error, _ = await tus_patch(url, token, 100, b"", Upload_Length="250")
    assert code == 204, error
    code, error, _ = await tus_patch(url, token, 100, content[100:])
    assert code == 204, error
    (stored,) = await files(running_proxy, token)
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()


@pytest_twisted.ensureDeferred
async def test_a_seed_chunk_of_unknown_total_that_would_pass_the_quota_is_refused(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 150)
    content = data(200)
    code, started = await seed_put(running_proxy, token, content[:100], "bytes 0-99/*")
    assert code == 200, started
    code, body = await seed_put(
        running_proxy, token, content[100:], "bytes 100-199/*", started["id"]
    )
    assert (code, body) == (413, over(150, 100))
    (listed,) = await unfinished(running_proxy, token)
    assert listed["offset"] == 100


# -- what counts


@pytest_twisted.ensureDeferred
async def test_every_version_counts_even_of_the_same_content(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 150)
    content = data(100)
    await tus_upload(running_proxy, token, content, "a.bin")
    response, body = await tus_post(running_proxy, token, 100, name="a.bin")
    assert response.code == 413 and body == over(150, 100)
    await set_quota(running_proxy, "alice", 200)
    await tus_upload(running_proxy, token, content, "a.bin")  # a second version, one blob
    response, body = await tus_post(running_proxy, token, 1, name="b.bin")
    assert response.code == 413 and body == over(200, 200)


@pytest_twisted.ensureDeferred
async def test_open_unfinished_uploads_count_with_their_declared_totals(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 150)
    first = await tus_created(running_proxy, token, 100)
    response, body = await tus_post(running_proxy, token, 100)
    assert response.code == 413 and body == over(150, 100)
    code, body = await seed_put(running_proxy, token, data(10), "bytes 0-9/100")
    assert (code, body) == (413, over(150, 100))
    response = await treq.delete(first, headers=tus_headers(token))
    assert response.code == 204
    response, _ = await tus_post(running_proxy, token, 100)
    assert response.code == 201


@pytest_twisted.ensureDeferred
async def test_concurrent_creations_cannot_both_take_the_last_free_bytes(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 250)
    posts = [Deferred.fromCoroutine(tus_post(running_proxy, token, 100)) for _ in range(6)]
    codes = sorted(response.code for response, _ in await gatherResults(posts))
    assert codes == [201, 201, 413, 413, 413, 413]


@pytest_twisted.ensureDeferred
async def test_other_users_bytes_do_not_count(running_proxy: RunningProxy) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob")
    await set_quota(running_proxy, "alice", 100)
    await tus_upload(running_proxy, bob, data(500), "big.bin")
    await tus_created(running_proxy, bob, 500)
    response, _ = await tus_post(running_proxy, alice, 100)
    assert response.code == 201


@pytest_twisted.ensureDeferred
async def test_a_concatenated_upload_counts_its_partials_once(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 200)
    content = data(200)
    parts = [await tus_created(running_proxy, token, 100, Upload_Concat="partial") for _ in "ab"]
    response, body = await tus_post(running_proxy, token, 1)
    assert response.code == 413 and body == over(200, 200)
    # The final is admitted although the quota is full: its bytes are its partials'.
    final = await tus_created(running_proxy, token, None, Upload_Concat="final;" + " ".join(parts))
    response, body = await tus_post(running_proxy, token, 1)
    assert response.code == 413 and body == over(200, 200)  # the final adds nothing
    for index, url in enumerate(parts):
        code, error, _ = await tus_patch(url, token, 0, content[index * 100 : index * 100 + 100])
        assert code == 204, error
    response = await treq.head(final, headers=tus_headers(token))
    await response.content()
    assert response.headers.getRawHeaders("upload-offset") == ["200"]
    (stored,) = await files(running_proxy, token)
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()
    assert await unfinished(running_proxy, token) == []
    response, body = await tus_post(running_proxy, token, 1)
    assert response.code == 413 and body == over(200, 200)  # the file, not file + partials


# -- changes of the quota


@pytest_twisted.ensureDeferred
async def test_no_quota_means_no_limit(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 10)
    await set_quota(running_proxy, "alice", None)
    response, _ = await tus_post(running_proxy, token, 2**40)
    assert response.code == 201


@pytest_twisted.ensureDeferred
async def test_a_raised_quota_takes_effect_at_once(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 10)
    response, body = await tus_post(running_proxy, token, 100)
    assert response.code == 413 and body == over(10, 0)
    await set_quota(running_proxy, "alice", 100)
    response, _ = await tus_post(running_proxy, token, 100)
    assert response.code == 201


@pytest_twisted.ensureDeferred
async def test_a_lowered_quota_does_not_refuse_the_rest_of_an_upload_already_admitted(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    await set_quota(running_proxy, "alice", 100)
    content = data(100)
    url = await tus_created(running_proxy, token, 100, body=content[:50])
    await set_quota(running_proxy, "alice", 10)
    code, error, _ = await tus_patch(url, token, 50, content[50:])
    assert code == 204, error
    (stored,) = await files(running_proxy, token)
    assert stored["size"] == 100
    response, body = await tus_post(running_proxy, token, 1)  # but nothing more
    assert response.code == 413 and body == over(10, 100)


# -- the open-uploads cap


@pytest_twisted.ensureDeferred
async def test_the_21st_open_upload_is_refused_429_until_one_is_finished_or_aborted(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    urls = [await tus_created(running_proxy, token, 1) for _ in range(10)]
    for _ in range(10):
        code, body = await seed_put(running_proxy, token, b"x", "bytes 0-0/2")
        assert code == 200, body
    too_many = {"detail": "too many open uploads: finish or cancel one first",
                "open": 20, "limit": 20}  # fmt: skip
    response, body = await tus_post(running_proxy, token, 1)
    assert response.code == 429 and body == too_many
    assert await seed_put(running_proxy, token, b"x", "bytes 0-0/2") == (429, too_many)
    assert len(await unfinished(running_proxy, token)) == 20
    code, error, _ = await tus_patch(urls[0], token, 0, b"x")  # finished: a file now
    assert code == 204, error
    await tus_created(running_proxy, token, 1)
    response, body = await tus_post(running_proxy, token, 1)
    assert response.code == 429 and body == too_many
    response = await treq.delete(urls[1], headers=tus_headers(token))
    assert response.code == 204
    await tus_created(running_proxy, token, 1)


@pytest_twisted.ensureDeferred
async def test_expired_uploads_count_neither_bytes_nor_against_the_cap(
    database_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    clock.advance(1_000_000)
    # Expired a minute after creation, long before the expiry job's first run deletes it.
    settings = {"max_open_uploads": 1, "upload_expiry": 60.0}
    async with proxy_with(database_url, tmp_path / "p", clock=clock, **settings) as proxy:
        token = await proxy.register_and_login("alice")
        await set_quota(proxy, "alice", 100)
        expired = await tus_created(proxy, token, 100)
        response, body = await tus_post(proxy, token, 100)
        assert response.code == 429 and body["open"] == 1 and body["limit"] == 1, body
        clock.advance(61)
        response, _ = await tus_post(proxy, token, 100)
        assert response.code == 201
        response = await treq.head(expired, headers=tus_headers(token))
        assert response.code == 410  # still there, but expired
