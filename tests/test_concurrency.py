"""Two chunks racing for the same offset of one upload: exactly one wins."""

from __future__ import annotations

import hashlib
import io
import os

import pytest_twisted
import treq
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.web.client import FileBodyProducer

from tests.conftest import RequestHeaders, RunningProxy, auth

CHUNK = 256 * 1024


def _raw(token: str, start: int, total: int, length: int = CHUNK) -> RequestHeaders:
    return {
        **auth(token),
        "Content-Range": f"bytes {start}-{start + length - 1}/{total}",
        "Content-Type": "application/octet-stream",
    }


async def _put(
    url: str, body: bytes, headers: RequestHeaders, multipart: bool
) -> tuple[int, dict[str, object]]:
    if multipart:
        plain = {k: v for k, v in headers.items() if k != "Content-Type"}
        part = ("x.bin", "application/octet-stream", FileBodyProducer(io.BytesIO(body)))
        response = await treq.put(url, headers=plain, files={"file": part})
    else:
        response = await treq.put(url, body, headers=headers)
    return response.code, await response.json()


@pytest_twisted.ensureDeferred
async def test_chunks_racing_for_one_offset_exactly_one_wins(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    rounds = 6
    total = CHUNK * (rounds + 1)
    stored = os.urandom(CHUNK)
    response = await treq.put(
        f"{running_proxy.url}/storage/tmp-upload/?filename=race.bin",
        stored,
        headers=_raw(token, 0, total),
    )
    upload = await response.json()
    url = upload["url"]
    for round_ in range(rounds):
        offset = len(stored)
        contenders = [os.urandom(CHUNK), os.urandom(CHUNK)]
        multipart = round_ % 2 == 1  # alternate the in-place and the spooled paths
        results = await gatherResults(
            [
                ensureDeferred(_put(url, body, _raw(token, offset, total), multipart))
                for body in contenders
            ]
        )
        codes = sorted(code for code, _ in results)
        assert codes == [200, 400], results
        loser = next(body for code, body in results if code == 400)
        assert loser == {"detail": "Offsets do not match", "offset": offset + CHUNK}
        winner = contenders[[code for code, _ in results].index(200)]
        stored += winner
        status = await (await treq.get(url, headers=auth(token))).json()
        assert status["offset"] == len(stored)
    response = await treq.post(
        url, json={"md5": hashlib.md5(stored).hexdigest()}, headers=auth(token)
    )
    assert response.code == 200, await response.text()
    done = await response.json()
    download = await treq.get(
        f"{running_proxy.url}/storage/download/{done['file_id']}/", headers=auth(token)
    )
    assert await download.content() == stored
