"""Live events over real HTTP, on a proxy in this process whose time is a ``task.Clock``:
``GET /api/events`` (server-sent events) and ``GET /api/changes`` (the long poll), on SQLite
and PostgreSQL. An upload's events arrive in order with their ids, a reconnect with
``Last-Event-ID`` misses nothing, a cursor older than what is kept (after the prune job) is
reset, a user never sees another's events, the long poll answers at once, waits, or times out,
and an idle stream gets a keep-alive comment every 15 s."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer

from proxy.events.hub import EventHub
from tests.conftest import (
    RequestHeaders,
    RunningProxy,
    answer,
    auth,
    proxy_with,
    request_headers,
)
from tests.sse_kit import Block, SseClient
from tests.test_tus_protocol import DATA, create, meta, patch

NOW = 1_800_000_000.0
RETENTION = 60.0  # seconds: short, so that the prune job has something to do


@dataclass
class Clocked:
    running: RunningProxy
    clock: Clock

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def hub(self) -> EventHub:
        hub = self.running.proxy.events
        assert isinstance(hub, EventHub)
        return hub


@pytest_twisted.async_yield_fixture
async def clocked(database_url: str, tmp_path: Path) -> AsyncIterator[Clocked]:
    clock = Clock()
    clock.advance(NOW)
    async with proxy_with(
        database_url, tmp_path / "proxy", clock=clock, event_retention=RETENTION
    ) as running:
        yield Clocked(running, clock)


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


async def store(proxy: Clocked, token: str, filename: str, content: bytes) -> dict[str, Any]:
    """A whole file in one request: its upload's JSON (3 events: progress, complete, file)."""
    url = f"{proxy.url}/storage/tmp-upload/?" + urlencode(
        {"filename": filename, "md5": md5(content)}
    )
    response = await treq.post(
        url, data=content, headers={**auth(token), "Content-Type": "application/octet-stream"}
    )
    code, body = await answer(response)
    assert code == 200, body
    return dict(body)


async def put_chunk(
    proxy: Clocked, token: str, url: str, content: bytes, start: int, total: int
) -> dict[str, Any]:
    headers: RequestHeaders = {
        **auth(token),
        "Content-Type": "application/octet-stream",
        "Content-Range": f"bytes {start}-{start + len(content) - 1}/{total}",
    }
    code, body = await answer(await treq.put(url, data=content, headers=headers))
    assert code == 200, body
    return dict(body)


async def changes(proxy: Clocked, token: str, **query: str) -> tuple[int, Any]:
    url = f"{proxy.url}/api/changes?{urlencode(query)}"
    return await answer(await treq.get(url, headers=auth(token), timeout=20))


async def open_stream(
    proxy: Clocked, token: str, query: str = "", **headers: str
) -> tuple[Any, SseClient]:
    sent: RequestHeaders = {**auth(token), **request_headers(headers)}
    response = await treq.get(
        f"{proxy.url}/api/events{query}",
        headers=sent,
        unbuffered=True,
        timeout=20,
    )
    client = SseClient()
    response.deliverBody(client)
    return response, client


def having(count: int) -> Callable[[list[Block]], bool]:
    """At least ``count`` dispatched events have arrived."""
    return lambda blocks: sum("data" in b for b in blocks) >= count


def started(blocks: list[Block]) -> bool:
    """The stream knows where it starts (its first ``id``-only block or a first event)."""
    return any("id" in b for b in blocks)


async def user_id(proxy: Clocked, token: str) -> int:
    """The caller's user id, read off an upload of theirs."""
    return int((await store(proxy, token, "whoami.txt", b"me"))["user"])


# ---------------------------------------------------------------- the stream


@pytest_twisted.ensureDeferred
async def test_a_stream_receives_an_uploads_events_in_order_with_their_ids(
    clocked: Clocked,
) -> None:
    token = await clocked.running.register_and_login()
    response, client = await open_stream(clocked, token)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream"]
    assert response.headers.getRawHeaders("cache-control") == ["no-store"]
    assert response.headers.getRawHeaders("x-accel-buffering") == ["no"]
    await client.until(started)
    assert client.blocks[:2] == [{":": "connected"}, {"id": "0"}]

    content = bytes(range(256)) * 16  # 4 chunks of 1 KiB
    chunk = 1024
    first = await put_chunk(
        clocked, token, f"{clocked.url}/storage/tmp-upload/?filename=a.bin", content[:chunk], 0,
        len(content),
    )  # fmt: skip
    url = first["url"]
    await put_chunk(clocked, token, url, content[chunk : 2 * chunk], chunk, len(content))
    clocked.clock.advance(1)  # a second later: progress is told again
    await put_chunk(clocked, token, url, content[2 * chunk : 3 * chunk], 2 * chunk, len(content))
    await put_chunk(clocked, token, url, content[3 * chunk :], 3 * chunk, len(content))
    code, done = await answer(await treq.post(url, json={"md5": md5(content)}, headers=auth(token)))
    assert code == 200, done

    blocks = await client.until(having(5))
    seen = client.events()
    assert [e["id"] for e in seen] == ["1", "2", "3", "4", "5"]
    assert [e["type"] for e in seen] == [
        "upload.progress", "upload.progress", "upload.progress", "upload.complete",
        "file.created",
    ]  # fmt: skip
    progress = {"upload_id": first["id"], "filename": "a.bin", "total": len(content)}
    assert [e["data"] for e in seen[:3]] == [
        {**progress, "offset": 1024},
        {**progress, "offset": 3072},
        {**progress, "offset": 4096},
    ]  # the second chunk came within the same second: not told; the last byte always is
    assert seen[3]["data"] == {
        "upload_id": first["id"], "file_id": done["file_id"], "filename": "a.bin",
        "path": "a.bin", "size": len(content), "version": 1,
    }  # fmt: skip
    assert seen[4]["data"] == {
        "file_id": done["file_id"],
        "filename": "a.bin",
        "path": "a.bin",
        "size": len(content),
        "version": 1,
    }
    assert {":": "connected"} in blocks
    client.close()
    await client.finished


@pytest_twisted.ensureDeferred
async def test_a_reconnect_with_last_event_id_misses_nothing(clocked: Clocked) -> None:
    token = await clocked.running.register_and_login()
    _, client = await open_stream(clocked, token, "?since=0")
    await store(clocked, token, "a.txt", b"one")
    await client.until(having(3))
    last = client.events()[-1]["id"]
    client.close()
    await client.finished

    file_id = (await store(clocked, token, "a.txt", b"two"))["file_id"]  # while away
    code, _ = await answer(
        await treq.post(
            f"{clocked.url}/storage/files/{file_id}/rollback/",
            json={"version": 1},
            headers=auth(token),
        )
    )
    assert code == 200
    assert (
        await treq.delete(f"{clocked.url}/storage/files/{file_id}/", headers=auth(token))
    ).code == 204

    # An EventSource reconnects to the same URL (?since=0) with Last-Event-ID, which wins.
    _, again = await open_stream(clocked, token, "?since=0", **{"Last-Event-ID": last})
    await again.until(having(5))
    seen = again.events()
    assert [e["id"] for e in seen] == ["4", "5", "6", "7", "8"]
    assert [e["type"] for e in seen] == [
        "upload.progress",
        "upload.complete",
        "file.updated",
        "file.rolled_back",
        "file.deleted",
    ]
    assert seen[2]["data"]["version"] == 2
    assert seen[3]["data"] == {"file_id": file_id, "path": "a.txt", "version": 3}
    assert seen[4]["data"] == {"file_id": file_id, "path": "a.txt"}
    again.close()
    await again.finished


@pytest_twisted.ensureDeferred
async def test_a_cursor_older_than_what_is_kept_is_reset_after_the_prune_job(
    clocked: Clocked,
) -> None:
    token = await clocked.running.register_and_login()
    await store(clocked, token, "old.txt", b"old")  # events 1 to 3
    clocked.clock.advance(RETENTION + 1)
    await store(clocked, token, "new.txt", b"new")  # events 4 to 6
    scheduler = clocked.running.proxy.scheduler
    outcome = await scheduler.run_now("events-prune")
    assert (outcome.ok, outcome.result) == (True, {"pruned_events": 3, "users": 1})

    code, body = await changes(clocked, token, since="1")
    assert (code, body) == (200, {"events": [], "last_id": 6, "reset": True})
    code, body = await changes(clocked, token, since="3")  # just what was pruned: fine
    assert [e["id"] for e in body["events"]] == [4, 5, 6] and not body["reset"]
    code, body = await changes(clocked, token, since="99")  # a cursor from another database
    assert (body["reset"], body["last_id"]) == (True, 6)

    _, client = await open_stream(clocked, token, **{"Last-Event-ID": "2"})
    await client.until(lambda blocks: {"id": "6"} in blocks)
    assert client.blocks[1:3] == [{"event": "reset", "data": "{}"}, {"id": "6"}]
    client.close()
    await client.finished


@pytest_twisted.ensureDeferred
async def test_a_user_never_sees_another_users_events(clocked: Clocked) -> None:
    alice = await clocked.running.register_and_login("alice")
    bob = await clocked.running.register_and_login("bob", "b0b-secret-pass")
    _, bobs = await open_stream(clocked, bob)
    await bobs.until(started)
    await store(clocked, alice, "alice.txt", b"hers")
    code, body = await changes(clocked, bob, since="0", timeout="0")
    assert (code, body) == (200, {"events": [], "last_id": 0, "reset": False})
    await store(clocked, bob, "bob.txt", b"his")
    await bobs.until(having(3))
    assert {e["data"]["filename"] for e in bobs.events()} == {"bob.txt"}
    assert [e["id"] for e in bobs.events()] == ["1", "2", "3"]  # his own numbering
    code, body = await changes(clocked, alice, since="0", timeout="0")
    assert {e["data"]["filename"] for e in body["events"]} == {"alice.txt"}
    bobs.close()
    await bobs.finished


@pytest_twisted.ensureDeferred
async def test_an_idle_stream_gets_a_keep_alive_comment_every_15_seconds(
    clocked: Clocked,
) -> None:
    token = await clocked.running.register_and_login()
    _, client = await open_stream(clocked, token)
    await client.until(started)
    clocked.clock.advance(15)
    await client.until(lambda blocks: blocks[-1] == {":": "keep-alive"})
    client.close()
    await client.finished


@pytest_twisted.ensureDeferred
async def test_streams_end_when_the_proxy_stops(clocked: Clocked) -> None:
    token = await clocked.running.register_and_login()
    _, client = await open_stream(clocked, token)
    await client.until(started)
    clocked.hub.close()
    await client.finished


@pytest_twisted.ensureDeferred
async def test_a_tus_upload_tells_its_progress_and_the_file_it_became(clocked: Clocked) -> None:
    token = await clocked.running.register_and_login()
    created, location = await create(
        clocked.running, token, len(DATA), Upload_Metadata=meta(filename="t.bin")
    )
    assert created.code == 201
    half = len(DATA) // 2
    for offset, body in ((0, DATA[:half]), (half, DATA[half:])):
        patched, _ = await patch(location, token, offset, body)
        assert patched.code == 204
    code, found = await changes(clocked, token, since="0", timeout="0")
    assert code == 200
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]
    assert [(e["type"], e["data"].get("offset")) for e in found["events"]] == [
        ("upload.progress", half), ("upload.progress", len(DATA)),
        ("upload.complete", None), ("file.created", None),
    ]  # fmt: skip
    assert {e["data"].get("upload_id", upload_id) for e in found["events"]} == {upload_id}
    assert found["events"][3]["data"]["filename"] == "t.bin"


# ---------------------------------------------------------------- the long poll


@pytest_twisted.ensureDeferred
async def test_the_long_poll_answers_at_once_when_there_are_events(clocked: Clocked) -> None:
    token = await clocked.running.register_and_login()
    upload = await store(clocked, token, "a.txt", b"abc")
    code, body = await changes(clocked, token, since="0", timeout="30")
    assert code == 200 and not body["reset"] and body["last_id"] == 3
    assert [(e["id"], e["type"]) for e in body["events"]] == [
        (1, "upload.progress"),
        (2, "upload.complete"),
        (3, "file.created"),
    ]
    assert body["events"][2]["data"]["file_id"] == upload["file_id"]
    assert body["events"][0]["created_at"] == "2027-01-15T08:00:00Z"
    code, body = await changes(clocked, token)  # no cursor: where to start, at once
    assert (code, body) == (200, {"events": [], "last_id": 3, "reset": False})


@pytest_twisted.ensureDeferred
async def test_the_long_poll_waits_for_an_event_and_answers_with_it(clocked: Clocked) -> None:
    token = await clocked.running.register_and_login()
    me = await user_id(clocked, token)  # events 1 to 3
    code, body = await changes(clocked, token, since="3", timeout="0")
    assert body["events"] == []
    asked: Deferred[tuple[int, Any]] = ensureDeferred(
        changes(clocked, token, since="3", timeout="30")
    )
    await clocked.hub.settled(me)  # it is waiting
    assert not asked.called
    await store(clocked, token, "b.txt", b"b")
    code, body = await asked  # woken by the first commit: its upload's progress at least
    assert code == 200 and not body["reset"]
    assert (body["events"][0]["id"], body["events"][0]["type"]) == (4, "upload.progress")
    assert body["events"][0]["data"]["filename"] == "b.txt"
    assert body["last_id"] == body["events"][-1]["id"]


@pytest_twisted.ensureDeferred
async def test_the_long_poll_answers_empty_after_its_timeout(clocked: Clocked) -> None:
    token = await clocked.running.register_and_login()
    me = await user_id(clocked, token)
    asked: Deferred[tuple[int, Any]] = ensureDeferred(
        changes(clocked, token, since="3", timeout="5")
    )
    await clocked.hub.settled(me)
    clocked.clock.advance(5)
    code, body = await asked
    assert (code, body) == (200, {"events": [], "last_id": 3, "reset": False})


# ---------------------------------------------------------------- inputs


@pytest_twisted.ensureDeferred
async def test_junk_cursors_and_timeouts_are_refused_with_400(clocked: Clocked) -> None:
    token = await clocked.running.register_and_login()
    for query, field in (
        ({"since": "abc"}, "since"),
        ({"since": "-1"}, "since"),
        ({"timeout": "61"}, "timeout"),
        ({"timeout": "1.5"}, "timeout"),
    ):
        code, body = await changes(clocked, token, **query)
        assert (code, body.get("field")) == (400, field), query
    code, body = await changes(clocked, token, other="1")
    assert code == 400 and "other" in body["detail"]
    for where, extra, field in (
        ("?since=x", {}, "since"),
        ("", {"Last-Event-ID": "1e3"}, "Last-Event-ID"),
    ):
        sent: RequestHeaders = {**auth(token), **request_headers(extra)}
        response = await treq.get(f"{clocked.url}/api/events{where}", headers=sent)
        code, body = await answer(response)
        assert (code, body["field"]) == (400, field)
    assert (await treq.get(f"{clocked.url}/api/events")).code == 401
    assert (await treq.get(f"{clocked.url}/api/changes")).code == 401


@pytest_twisted.ensureDeferred
async def test_a_stream_its_client_leaves_ends_without_an_error_in_the_log(
    clocked: Clocked,
) -> None:
    """A browser that leaves a page closes its stream: the response ends quietly (it used to
    log 'Producer was not unregistered' as a critical error each time)."""
    failures: list[dict[str, Any]] = []

    @implementer(ILogObserver)
    class Observe:
        def __call__(self, event: dict[str, Any]) -> None:
            if event.get("log_failure") is not None or event.get("log_level") == LogLevel.critical:
                failures.append(event)

    observe = Observe()

    token = await clocked.running.register_and_login()
    globalLogPublisher.addObserver(observe)
    try:
        _, client = await open_stream(clocked, token, "?since=0")
        await store(clocked, token, "a.txt", b"one")
        await client.until(having(3))
        client.close()
        await client.finished
        for _ in range(5):  # the server notices, and the handler's response ends
            await deferLater(reactor, 0.02, lambda: None)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert [formatEvent(event) for event in failures] == []
