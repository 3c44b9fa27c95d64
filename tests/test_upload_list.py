"""GET /storage/tmp-upload/: a user's unfinished uploads, both dialects, to resume one."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
import treq
from twisted.internet.task import Clock

from tests.conftest import RunningProxy, answer, auth, proxy_with


async def tus_create(proxy: RunningProxy, token: str, length: int, sent: bytes = b"") -> str:
    headers = {**auth(token), "Tus-Resumable": "1.0.0", "Upload-Length": str(length),
               "Upload-Metadata": "filename cGFydC5iaW4="}  # fmt: skip
    if sent:
        headers["Content-Type"] = "application/offset+octet-stream"
    response = await treq.post(f"{proxy.url}/files/", headers=headers, data=sent or None)
    assert response.code == 201, await response.text()
    return str(response.headers.getRawHeaders("location")[0])


@pytest_twisted.ensureDeferred
async def test_unfinished_uploads_of_both_dialects_are_listed_newest_first_and_only_mine(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice")
    other = await running_proxy.register_and_login("bob")
    response = await treq.put(
        f"{running_proxy.url}/storage/tmp-upload/?filename=seed.bin",
        headers={**auth(token), "Content-Range": "bytes 0-2/10",
                 "Content-Type": "application/octet-stream"},
        data=b"abc",
    )  # fmt: skip
    seed = (await answer(response))[1]
    location = await tus_create(running_proxy, token, 8, b"12345")
    await tus_create(running_proxy, other, 4)
    code, body = await answer(
        await treq.get(f"{running_proxy.url}/storage/tmp-upload/", headers=auth(token))
    )
    assert code == 200
    listed = body["results"]
    assert [u["dialect"] for u in listed] == ["tus", "seed"]
    tus, chunked = listed
    assert (tus["filename"], tus["offset"], tus["total"]) == ("part.bin", 5, 8)
    assert tus["tus_url"] == location
    assert (chunked["id"], chunked["offset"], chunked["total"]) == (seed["id"], 3, 10)
    assert "tus_url" not in chunked


@pytest_twisted.ensureDeferred
async def test_finished_and_expired_uploads_are_not_listed(
    database_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    clock.advance(1_000_000)
    async with proxy_with(database_url, tmp_path / "p", clock=clock) as proxy:
        token = await proxy.register_and_login("carol")
        await tus_create(proxy, token, 3, b"xyz")  # whole at once: a file, not an upload
        await tus_create(proxy, token, 3)
        code, body = await answer(
            await treq.get(f"{proxy.url}/storage/tmp-upload/", headers=auth(token))
        )
        assert code == 200 and len(body["results"]) == 1
        clock.advance(proxy.proxy.config.upload_expiry + 1)
        token = await proxy.register_and_login("dave")  # the old token has expired too
        code, body = await answer(
            await treq.get(f"{proxy.url}/storage/tmp-upload/", headers=auth(token))
        )
        assert code == 200 and body["results"] == []


@pytest_twisted.ensureDeferred
async def test_the_list_needs_a_caller(running_proxy: RunningProxy) -> None:
    response = await treq.get(f"{running_proxy.url}/storage/tmp-upload/")
    assert response.code == 401
