"""Hashing never runs on the reactor thread, and the PostgreSQL variants cannot skip in CI."""

from __future__ import annotations

import hashlib
import threading

import pytest
import pytest_twisted
import treq

from proxy.uploads.bodies import PlacedChunk
from proxy.uploads.staging import StagingArea
from tests import conftest
from tests.conftest import RequestHeaders, RunningProxy, auth

CHUNK = 1 << 20


def _raw(token: str, start: int, end: int, total: int) -> RequestHeaders:
    return {**auth(token), "Content-Range": f"bytes {start}-{end}/{total}",
            "Content-Type": "application/octet-stream"}  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_chunk_hashing_and_completion_rehashing_run_off_the_reactor_thread(
    running_proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    reactor_thread = threading.current_thread()
    seen: list[str] = []
    hash_piece, hash_prefix = PlacedChunk._hash, StagingArea.hash_prefix

    def recording_hash(self: PlacedChunk, *args: object) -> None:
        seen.append("chunk on reactor" if threading.current_thread() is reactor_thread else "ok")
        hash_piece(self, *args)  # type: ignore[arg-type]

    def recording_prefix(self: StagingArea, upload_id: str, length: int) -> object:
        on_reactor = threading.current_thread() is reactor_thread
        seen.append("prefix on reactor" if on_reactor else "ok")
        return hash_prefix(self, upload_id, length)

    monkeypatch.setattr(PlacedChunk, "_hash", recording_hash)
    monkeypatch.setattr(StagingArea, "hash_prefix", recording_prefix)
    token = await running_proxy.register_and_login()
    source = bytes(range(256)) * (3 * CHUNK // 256)
    response = await treq.put(
        f"{running_proxy.url}/storage/tmp-upload/?filename=t.bin", source[:CHUNK],
        headers=_raw(token, 0, CHUNK - 1, len(source)),
    )  # fmt: skip
    upload = await response.json()
    for start in (CHUNK, 2 * CHUNK):  # written in place, hashed on the lanes
        response = await treq.put(
            upload["url"], source[start : start + CHUNK],
            headers=_raw(token, start, start + CHUNK - 1, len(source)),
        )  # fmt: skip
        assert response.code == 200
    assert seen and set(seen) == {"ok"}, seen
    # As after a restart: the running hashes are gone, so completion hashes the file again.
    running_proxy.proxy.uploads._progress.forget(upload["id"])
    response = await treq.post(
        upload["url"], json={"md5": hashlib.md5(source).hexdigest()}, headers=auth(token)
    )
    assert response.code == 200, await response.text()
    assert seen[-1] == "ok" and "prefix on reactor" not in seen
    assert len([s for s in seen if s == "ok"]) > 2


def test_postgres_variants_fail_instead_of_skipping_when_ci_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "_pg_checked", True)
    monkeypatch.setattr(conftest, "_pg_problem", "PostgreSQL at 127.0.0.1:1 is not usable: no")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        conftest.require_postgres()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not usable"):
        conftest.require_postgres()
