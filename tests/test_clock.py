"""Time-based behaviour driven by task.Clock: token expiry, upload expiry, the cleanup loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet.task import Clock

from proxy.service import EXPIRE_INTERVAL
from tests.conftest import RequestHeaders, RunningProxy, auth, proxy_with


@dataclass
class ClockedProxy(RunningProxy):
    clock: Clock | None = None


@pytest_twisted.async_yield_fixture
async def clocked_proxy(database_url: str, tmp_path: Path) -> AsyncIterator[ClockedProxy]:
    clock = Clock()
    clock.advance(1_800_000_000)  # a plausible "now"
    async with proxy_with(database_url, tmp_path / "proxy", clock=clock) as running:
        yield ClockedProxy(running.url, running.proxy, running.data_dir, clock)


def _chunk(start: int, end: int, total: int) -> RequestHeaders:
    return {"Content-Range": f"bytes {start}-{end}/{total}",
            "Content-Type": "application/octet-stream"}  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_a_token_stops_working_after_its_lifetime(clocked_proxy: ClockedProxy) -> None:
    assert clocked_proxy.clock is not None
    token = await clocked_proxy.register_and_login()
    files = f"{clocked_proxy.url}/storage/files/"
    assert (await treq.get(files, headers=auth(token))).code == 200
    clocked_proxy.clock.advance(24 * 3600 - 5)
    assert (await treq.get(files, headers=auth(token))).code == 200
    clocked_proxy.clock.advance(10)
    response = await treq.get(files, headers=auth(token))
    assert response.code == 401
    assert await response.json() == {"detail": "Token has expired"}


@pytest_twisted.ensureDeferred
async def test_the_cleanup_loop_removes_uploads_once_they_expire(
    clocked_proxy: ClockedProxy,
) -> None:
    clock = clocked_proxy.clock
    assert clock is not None
    token = await clocked_proxy.register_and_login()
    response = await treq.put(
        f"{clocked_proxy.url}/storage/tmp-upload/?filename=a.bin", b"a" * 10,
        headers={**auth(token), **_chunk(0, 9, 20)},
    )  # fmt: skip
    upload = await response.json()
    staged = clocked_proxy.data_dir / "staging" / f"{upload['id']}.part"
    scheduler = clocked_proxy.proxy.scheduler
    clock.advance(EXPIRE_INTERVAL)  # a loop run before expiry keeps it
    await scheduler.idle()  # (on PostgreSQL a run first takes the job's lock, on a thread)
    assert staged.exists()
    # The next run a day from now: past expiry (in 24 h) there is a moment before it.
    await scheduler.set_interval("expire-uploads", 24 * 3600.0)
    await scheduler.idle()
    assert staged.exists()
    clock.advance(24 * 3600 - EXPIRE_INTERVAL + 1)  # past expiry, before the next loop run
    login = await treq.post(
        f"{clocked_proxy.url}/api-token-auth/",
        json={"username": "alice", "password": "s3cret-pass!"},
    )
    token = (await login.json())["token"]  # the first token has expired too
    response = await treq.put(
        upload["url"], b"b" * 10, headers={**auth(token), **_chunk(10, 19, 20)}
    )
    assert response.code == 410
    assert (await treq.get(upload["url"], headers=auth(token))).code == 410
    assert staged.exists()
    clock.advance(EXPIRE_INTERVAL)  # the loop's next run cleans it
    for _ in range(50):
        if not staged.exists():
            break
        await treq.get(f"{clocked_proxy.url}/health")  # let the loop's work finish
    assert not staged.exists()
