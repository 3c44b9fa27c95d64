"""Live events below HTTP: the SSE framing and the inputs (pure), the store on SQLite and
PostgreSQL (ids per user in commit order, reads in batches, resets, pruning, events of shared
content), the hub's long poll and polling on a ``task.Clock``, and one stream on a real
``twisted.web`` request over a fake transport (order, keep-alive, the client leaving, a
client that does not read)."""

from __future__ import annotations

import doctest
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, get_args

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from common.db import Database, Txn, parse_database_url
from common.errors import BadRequest
from common.signing import replica_key
from proxy.api import types as t
from proxy.catalog import store
from proxy.cluster import nodestore
from proxy.cluster.replication import confirmed_txn
from proxy.events import eventstore, inputs, kinds, sse
from proxy.events.emit import Emitter
from proxy.events.hub import EventHub
from proxy.events.stream import EventStream
from proxy.events.throttle import Throttle
from proxy.migrations import migrate
from proxy.remote.mirrorreport import ingest
from proxy.remote.mirrorwants import BlobTask, NodeWork
from tests.sse_kit import Block, events, parse_blocks

NOW = 1_800_000_000.0
A, B = 1, 2  # user ids (the events tables do not refer to users)


@pytest_twisted.async_yield_fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(parse_database_url(database_url))
    await database.run(migrate)
    yield database
    database.close()


def clock_at(now: float = NOW) -> Clock:
    clock = Clock()
    clock.advance(now)
    return clock


def _record_many(txn: Txn, user_id: int, count: int, now: float) -> list[int]:
    return [
        eventstore.record(txn, user_id, kinds.FILE_DELETED, {"file_id": f"{n:032x}"}, now)
        for n in range(count)
    ]


async def record(db: Database, user_id: int, count: int = 1, now: float = NOW) -> list[int]:
    return await db.run(_record_many, user_id, count, now)


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("module", [sse, inputs], ids=lambda m: m.__name__)
def test_the_examples_in_the_docstrings_hold(module: Any) -> None:
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0


def test_a_message_gives_each_line_of_its_data_a_data_field() -> None:
    assert (
        sse.message("a\r\nb\nc", event="x", id=3)
        == b"id: 3\nevent: x\ndata: a\ndata: b\ndata: c\n\n"
    )
    blocks, rest = parse_blocks(sse.json_message({"k": "v\nw"}, event="e", id=9) + b"id: 1")
    assert blocks == [{"id": "9", "event": "e", "data": '{"k": "v\\nw"}'}] and rest == b"id: 1"
    with pytest.raises(ValueError):
        sse.comment("two\nlines")


def test_the_documented_event_types_are_the_recorded_ones() -> None:
    assert get_args(t.EventType) == kinds.RECORDED
    assert kinds.RESET not in kinds.RECORDED


@pytest.mark.parametrize(
    "bad", ["abc", "-1", "1.5", "0x10", "²", "١", "9223372036854775808", "1 2", "+3"]
)
def test_a_cursor_that_is_not_an_event_id_is_refused_naming_its_field(bad: str) -> None:
    for field in ("since", "Last-Event-ID"):
        with pytest.raises(BadRequest) as caught:
            inputs.parse_cursor(bad, field)
        assert caught.value.extra == {"field": field}
    assert inputs.parse_cursor("9223372036854775807", "since") == 2**63 - 1


def test_last_event_id_wins_over_since_and_is_checked_too() -> None:
    assert inputs.stream_cursor("40", "5") == 40
    assert inputs.stream_cursor("", "5") == 5
    with pytest.raises(BadRequest):
        inputs.stream_cursor("x", "5")


@pytest.mark.parametrize("bad", ["-1", "61", "1.5", "abc", "1e1", " "])
def test_a_timeout_out_of_range_is_refused(bad: str) -> None:
    with pytest.raises(BadRequest) as caught:
        inputs.parse_timeout(bad)
    assert caught.value.extra == {"field": "timeout"}


def test_progress_is_due_at_most_once_a_second_per_upload() -> None:
    clock = clock_at()
    throttle = Throttle(clock, 1.0)
    assert throttle.due("u1") and throttle.due("u2")
    throttle.done("u1")
    assert not throttle.due("u1") and throttle.due("u2")
    clock.advance(0.99)
    assert not throttle.due("u1")
    clock.advance(0.01)
    assert throttle.due("u1")


# ---------------------------------------------------------------- the store


@pytest_twisted.ensureDeferred
async def test_each_users_events_are_numbered_from_one_in_the_order_recorded(
    db: Database,
) -> None:
    assert await record(db, A, 2) == [1, 2]
    assert await record(db, B) == [1]
    assert await record(db, A) == [3]
    mine = await db.run(eventstore.read_since, A, 0, 100)
    assert [e.seq for e in mine.events] == [1, 2, 3]
    assert [e.data for e in mine.events] == [{"file_id": f"{n:032x}"} for n in (0, 1, 0)]
    assert (mine.head, mine.reset, mine.cursor) == (3, False, 3)
    theirs = await db.run(eventstore.read_since, B, 0, 100)
    assert [(e.seq, e.type, e.created_at) for e in theirs.events] == [(1, "file.deleted", NOW)]


@pytest_twisted.ensureDeferred
async def test_a_read_takes_at_most_a_batch_and_says_where_to_go_on(db: Database) -> None:
    await record(db, A, 5)
    first = await db.run(eventstore.read_since, A, 0, 2)
    assert ([e.seq for e in first.events], first.cursor, first.head) == ([1, 2], 2, 5)
    second = await db.run(eventstore.read_since, A, first.cursor, 2)
    assert [e.seq for e in second.events] == [3, 4]
    caught_up = await db.run(eventstore.read_since, A, 5, 2)
    assert (caught_up.events, caught_up.reset, caught_up.cursor) == ((), False, 5)


@pytest_twisted.ensureDeferred
async def test_a_cursor_past_the_users_newest_event_is_a_reset(db: Database) -> None:
    await record(db, A, 3)
    found = await db.run(eventstore.read_since, A, 4, 100)
    assert (found.events, found.reset, found.cursor) == ((), True, 3)
    assert (await db.run(eventstore.read_since, B, 1, 100)).reset  # B has none at all
    assert not (await db.run(eventstore.read_since, B, 0, 100)).reset


@pytest_twisted.ensureDeferred
async def test_pruning_drops_old_events_and_a_cursor_before_them_is_reset(db: Database) -> None:
    await record(db, A, 3, now=NOW)
    await record(db, A, 2, now=NOW + 100)
    await record(db, B, 1, now=NOW + 100)
    assert await db.run(eventstore.users_with_events_before, NOW + 50) == [A]
    assert await db.run(eventstore.prune_user, A, NOW + 50) == 3
    assert await db.run(eventstore.prune_user, A, NOW + 50) == 0
    for old in (0, 2):
        found = await db.run(eventstore.read_since, A, old, 100)
        assert (found.events, found.reset, found.cursor) == ((), True, 5), old
    kept = await db.run(eventstore.read_since, A, 3, 100)
    assert ([e.seq for e in kept.events], kept.reset) == ([4, 5], False)
    assert await record(db, A) == [6]  # ids go on after a prune


def _record_then_fail(txn: Txn) -> None:
    eventstore.record(txn, A, kinds.FILE_DELETED, {}, NOW)
    raise RuntimeError("the change failed")


@pytest_twisted.ensureDeferred
async def test_an_event_of_a_transaction_that_rolls_back_was_never_there(db: Database) -> None:
    with pytest.raises(RuntimeError):
        await db.run(_record_then_fail)
    assert await db.run(eventstore.head, A) == 0
    assert await record(db, A) == [1]


# ---------------------------------------------------------------- events of shared content

SHA = "ab" * 32


def _two_owners(txn: Txn) -> dict[str, Any]:
    """Alice and Bob each have a file whose current version is one blob; Bob's old version
    of another file used it too."""
    alice = store.create_user(txn, "alice", "", "x", False, NOW)
    bob = store.create_user(txn, "bob", "", "x", False, NOW)
    assert alice is not None and bob is not None
    # One blob in both owners' files: content shared from before per-owner deduplication.
    blob, _ = store.ensure_blob(txn, alice.id, SHA, "cd" * 16, 10, NOW)
    other, _ = store.ensure_blob(txn, bob.id, "ef" * 32, "cd" * 16, 10, NOW)
    a_file, _ = store.add_version(txn, alice.id, None, "a" * 32, "a.txt", blob, NOW)
    b_file, _ = store.add_version(txn, bob.id, None, "b" * 32, "b.txt", blob, NOW)
    old, _ = store.add_version(txn, bob.id, None, "c" * 32, "c.txt", blob, NOW)
    store.add_version(txn, bob.id, old, "", "c.txt", other, NOW)  # c.txt moved on
    nodestore.add_node(txn, "n1", "http://n1", "rsync://n1/incoming", "z1", NOW)
    return {"alice": alice.id, "bob": bob.id, "blob": blob.id, "a": a_file, "b": b_file}


def _feed(txn: Txn, user_id: int) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data) for e in eventstore.read_since(txn, user_id, 0, 1000).events]


@pytest_twisted.ensureDeferred
async def test_a_confirmed_replica_is_told_to_every_owner_whose_file_is_that_content(
    db: Database,
) -> None:
    ids = await db.run(_two_owners)
    emitter = Emitter(NOW)
    await db.run(confirmed_txn, ids["blob"], "n1", emitter)
    assert emitter.users == {ids["alice"], ids["bob"]}
    assert await db.run(_feed, ids["alice"]) == [
        ("replica.confirmed", {"file_id": ids["a"], "path": "a.txt", "replicas": 1})
    ]
    assert await db.run(_feed, ids["bob"]) == [  # not c.txt: its current version is other
        ("replica.confirmed", {"file_id": ids["b"], "path": "b.txt", "replicas": 1})
    ]


def _start_mirror(txn: Txn, blob_id: int) -> None:
    txn.execute(
        "UPDATE blobs SET remote_state = 'mirroring', mirror_node = 'n1' WHERE id = ?", (blob_id,)
    )


def _start_restore(txn: Txn, blob_id: int) -> None:
    txn.execute(
        "UPDATE blobs SET remote_state = 'restoring', restore_node = 'n1' WHERE id = ?",
        (blob_id,),
    )


async def _report(
    db: Database, ids: dict[str, Any], body: dict[str, Any], restore: bool = False
) -> set[int]:
    node = await db.run(nodestore.get_node, "n1")
    task = BlobTask(ids["blob"], SHA, "cd" * 16, 10)
    parts = [{"index": 0}, {"index": 1}]
    work = NodeWork(node, [] if restore else [task], [(task, parts)] if restore else [])
    emitter = Emitter(NOW)
    await db.run(ingest, "n1", work, body, emitter)
    return emitter.users


def _mirror_body(ids: dict[str, Any], uploaded: int, state: str = "uploading") -> dict[str, Any]:
    parts = [
        {"index": n, "offset": n * 5, "size": 5, "sha256": None,
         "remote_state": "uploaded" if n < uploaded else "pending"}
        for n in range(2)
    ]  # fmt: skip
    item = {"key": replica_key(ids["blob"], SHA), "parts": parts, "state": state}
    return {"mirror": [{**item, "verified": state == "mirrored"}]}


@pytest_twisted.ensureDeferred
async def test_mirrored_parts_and_the_backup_are_told_once_each(db: Database) -> None:
    ids = await db.run(_two_owners)
    await db.run(_start_mirror, ids["blob"])
    assert await _report(db, ids, _mirror_body(ids, 1)) == {ids["alice"], ids["bob"]}
    assert await _report(db, ids, _mirror_body(ids, 1)) == set()  # nothing new: nothing told
    await _report(db, ids, _mirror_body(ids, 2, "mirrored"))
    part, a = "part.mirrored", {"file_id": ids["a"], "path": "a.txt"}
    assert await db.run(_feed, ids["alice"]) == [
        (part, {**a, "index": 0, "parts_done": 1, "parts_total": 2}),
        (part, {**a, "index": 1, "parts_done": 2, "parts_total": 2}),
        ("file.backed_up", a),
    ]
    assert [kind for kind, _ in await db.run(_feed, ids["bob"])] == [part, part, "file.backed_up"]


@pytest_twisted.ensureDeferred
async def test_restore_progress_is_told_when_it_moves_and_then_the_restore(db: Database) -> None:
    ids = await db.run(_two_owners)
    await db.run(_start_restore, ids["blob"])
    key = replica_key(ids["blob"], SHA)
    going = {"restore": [{"key": key, "state": "restoring", "parts_restored": 1}]}
    assert await _report(db, ids, going, restore=True)
    assert not await _report(db, ids, going, restore=True)
    done = {"restore": [{"key": key, "state": "restored", "parts_restored": 2}]}
    await _report(db, ids, done, restore=True)
    assert await db.run(_feed, ids["alice"]) == [
        (
            "restore.progress",
            {"file_id": ids["a"], "path": "a.txt", "parts_done": 1, "parts_total": 2},
        ),
        ("file.restored", {"file_id": ids["a"], "path": "a.txt"}),
        ("replica.confirmed", {"file_id": ids["a"], "path": "a.txt", "replicas": 1}),
    ]


# ---------------------------------------------------------------- the hub and the long poll


HubMaker = Callable[..., EventHub]


@pytest.fixture
def hubs(db: Database) -> Iterator[HubMaker]:
    """Makes hubs on the test's database (``hubs(clock, batch=...)``); closes them after."""
    made: list[EventHub] = []

    def make(clock: Clock, batch: int = 100) -> EventHub:
        made.append(EventHub(db, clock, poll_interval=2.0, keepalive=15.0, batch=batch))
        return made[-1]

    yield make
    for hub in made:
        hub.close()


@pytest_twisted.ensureDeferred
async def test_the_long_poll_answers_at_once_when_there_are_events(
    db: Database, hubs: HubMaker
) -> None:
    hub = hubs(clock_at())
    await record(db, A, 2)
    found = await hub.changes(A, 0, 30)
    assert [e.seq for e in found.events] == [1, 2] and found.cursor == 2
    start = await hub.changes(A, None, 30)  # no cursor: where to start, at once
    assert (start.events, start.cursor, start.reset) == ((), 2, False)


@pytest_twisted.ensureDeferred
async def test_the_long_poll_waits_for_an_event_and_answers_with_it(
    db: Database, hubs: HubMaker
) -> None:
    hub = hubs(clock_at())
    await record(db, A)
    answer = ensureDeferred(hub.changes(A, 1, 30))
    await hub.settled(A)
    assert not answer.called
    await record(db, B)
    hub.wake([B])  # someone else's event does not answer it
    await hub.settled(A)
    assert not answer.called
    await record(db, A)
    hub.wake([A])
    found = await answer
    assert [e.seq for e in found.events] == [2]


@pytest_twisted.ensureDeferred
async def test_the_long_poll_answers_empty_after_its_timeout(db: Database, hubs: HubMaker) -> None:
    clock = clock_at()
    hub = hubs(clock)
    answer = ensureDeferred(hub.changes(A, 0, 5))
    await hub.settled(A)
    clock.advance(4)  # a poll tick comes and finds nothing
    await hub.settled(A)
    assert not answer.called
    clock.advance(1)
    found = await answer
    assert (found.events, found.reset, found.cursor) == ((), False, 0)
    assert clock.getDelayedCalls() == []  # no timer is left behind


@pytest_twisted.ensureDeferred
async def test_events_recorded_by_another_proxy_arrive_within_the_poll_interval(
    db: Database,
    hubs: HubMaker,
) -> None:
    clock = clock_at()
    hub = hubs(clock)
    answer = ensureDeferred(hub.changes(A, 0, 30))
    await hub.settled(A)
    await record(db, A)  # committed elsewhere: nobody wakes this hub
    clock.advance(2)
    found = await answer
    assert [e.seq for e in found.events] == [1]


@pytest_twisted.ensureDeferred
async def test_the_prune_drops_old_events_and_the_long_poll_then_resets(
    db: Database, hubs: HubMaker
) -> None:
    clock = clock_at()
    hub = hubs(clock)
    await record(db, A, 3, now=NOW)
    clock.advance(7 * 86400 + 1)
    await record(db, B, 1, now=clock.seconds())
    assert await hub.prune(7 * 86400) == {"pruned_events": 3, "users": 1}
    found = await hub.changes(A, 1, 30)
    assert (found.events, found.reset, found.cursor) == ((), True, 3)
    assert [e.seq for e in (await hub.changes(B, 0, 0)).events] == [1]


# ---------------------------------------------------------------- one stream


class SlowReader(DummyChannel.TCP):  # type: ignore[misc]
    """A transport whose client reads nothing: past ``limit`` buffered bytes it pauses its
    producer, as a real transport does when its buffer is full."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.written.getvalue()) > self.limit and not self.paused:
            self.paused = True
            for producer, _ in self.producers:
                producer.pauseProducing()

    def read_all(self) -> None:
        """The client reads everything at last."""
        self.written.seek(0)
        self.written.truncate()
        self.limit = 1 << 30
        self.paused = False
        for producer, _ in self.producers:
            producer.resumeProducing()


def open_stream(
    hub: EventHub, user_id: int, since: int | None, transport: Any = None
) -> tuple[Request, Any, Deferred[None]]:
    channel = DummyChannel()
    if transport is not None:
        channel.transport = transport
    request = Request(channel)
    request.method, request.uri, request.path = b"GET", b"/api/events", b"/api/events"
    request.clientproto = b"HTTP/1.0"
    done = EventStream(hub, request, user_id, since).start()
    return request, channel.transport, done


def blocks_of(transport: Any) -> list[Block]:
    raw = transport.written.getvalue()
    head, _, body = raw.partition(b"\r\n\r\n")
    return parse_blocks(body if body or head.startswith(b"HTTP/") else raw)[0]


@pytest_twisted.ensureDeferred
async def test_a_stream_sends_the_events_after_its_cursor_in_order_with_their_ids(
    db: Database,
    hubs: HubMaker,
) -> None:
    hub = hubs(clock_at(), batch=2)  # several reads
    await record(db, A, 5)
    request, transport, _ = open_stream(hub, A, 1)
    await hub.settled(A)
    headers = request.responseHeaders
    assert headers.getRawHeaders("content-type") == ["text/event-stream"]
    assert headers.getRawHeaders("cache-control") == ["no-store"]
    assert headers.getRawHeaders("x-accel-buffering") == ["no"]
    blocks = blocks_of(transport)
    assert blocks[0] == {":": "connected"}
    assert [(e["id"], e["type"]) for e in events(blocks)] == [
        (str(n), "file.deleted") for n in (2, 3, 4, 5)
    ]
    await record(db, A)
    hub.wake([A])
    await hub.settled(A)
    assert [e["id"] for e in events(blocks_of(transport))][-1] == "6"


@pytest_twisted.ensureDeferred
async def test_a_stream_without_a_cursor_starts_at_the_newest_event_and_says_so(
    db: Database,
    hubs: HubMaker,
) -> None:
    hub = hubs(clock_at())
    await record(db, A, 2)
    _, transport, _ = open_stream(hub, A, None)
    await hub.settled(A)
    assert blocks_of(transport) == [{":": "connected"}, {"id": "2"}]
    await record(db, A)
    hub.wake([A])
    await hub.settled(A)
    assert [e["id"] for e in events(blocks_of(transport))] == ["3"]


@pytest_twisted.ensureDeferred
async def test_a_stream_sends_a_keep_alive_comment_every_15_seconds(
    db: Database, hubs: HubMaker
) -> None:
    clock = clock_at()
    hub = hubs(clock)
    _, transport, _ = open_stream(hub, A, 0)
    await hub.settled(A)
    clock.advance(14.9)
    assert {":": "keep-alive"} not in blocks_of(transport)
    clock.advance(0.1)
    assert blocks_of(transport)[-1] == {":": "keep-alive"}
    clock.advance(15)
    assert blocks_of(transport)[-2:] == [{":": "keep-alive"}] * 2


@pytest_twisted.ensureDeferred
async def test_a_stream_whose_client_left_stops_its_timers_and_leaves_the_hub(
    db: Database,
    hubs: HubMaker,
) -> None:
    clock = clock_at()
    hub = hubs(clock)
    request, transport, done = open_stream(hub, A, 0)
    await hub.settled(A)
    assert clock.getDelayedCalls()  # keep-alive and the hub's poll
    request.connectionLost(Failure(ConnectionDone()))
    await done
    assert clock.getDelayedCalls() == []
    before = transport.written.getvalue()
    await record(db, A)
    hub.wake([A])
    clock.advance(30)
    assert transport.written.getvalue() == before


@pytest_twisted.ensureDeferred
async def test_closing_the_hub_ends_every_stream(db: Database, hubs: HubMaker) -> None:
    clock = clock_at()
    hub = hubs(clock)
    first, _, done_first = open_stream(hub, A, 0)
    second, _, done_second = open_stream(hub, B, None)
    await hub.settled(A)
    await hub.settled(B)
    hub.close()
    await done_first
    await done_second
    assert first.finished and second.finished
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_read_costs_one_batch_whatever_is_recorded(
    db: Database,
    hubs: HubMaker,
) -> None:
    clock = clock_at()
    hub = hubs(clock, batch=10)
    slow = SlowReader(limit=2000)
    _, transport, _ = open_stream(hub, A, 0, slow)
    await hub.settled(A)
    await record(db, A, 600)
    hub.wake([A])
    await hub.settled(A)
    batch_bytes = len(sse.json_message({"file_id": "0" * 32}, event="file.deleted", id=600)) * 10
    buffered = len(transport.written.getvalue())
    assert slow.paused and buffered <= slow.limit + batch_bytes
    clock.advance(60)  # poll ticks and keep-alives: a paused stream neither reads nor grows
    await record(db, A, 100)
    hub.wake([A])
    await hub.settled(A)
    assert len(transport.written.getvalue()) == buffered
    slow.read_all()  # it reads at last: the stream goes on from where it stood
    await hub.settled(A)
    assert [e["id"] for e in events(blocks_of(transport))][-1] == "700"


@pytest_twisted.ensureDeferred
async def test_a_reader_left_behind_by_pruning_is_reset_when_it_reads_again(
    db: Database,
    hubs: HubMaker,
) -> None:
    clock = clock_at()
    hub = hubs(clock, batch=10)
    slow = SlowReader(limit=500)
    _, transport, _ = open_stream(hub, A, 0, slow)
    await record(db, A, 50, now=NOW)
    hub.wake([A])
    await hub.settled(A)
    assert slow.paused
    clock.advance(86400)
    await record(db, A, 1, now=clock.seconds())
    await hub.prune(3600)
    slow.read_all()
    await hub.settled(A)
    blocks = blocks_of(transport)
    assert blocks[:2] == [{"event": "reset", "data": "{}"}, {"id": "51"}]
    await record(db, A, 1, now=clock.seconds())
    hub.wake([A])
    await hub.settled(A)
    assert [e["id"] for e in events(blocks_of(transport))] == [None, "52"]
