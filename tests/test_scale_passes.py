"""Passes whose memory and cost stay flat in catalogue size (issue 15): the scrub reads the
replicas a page at a time, and an idle node answers health pings without walking every
replica each time."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from common.db import Database, Txn, parse_database_url
from common.signing import replica_key
from node.replicas import store as replica_store
from node.replicas.store import Replicas, ReplicaStore
from proxy import migrations
from proxy.catalog import store
from proxy.cluster import monitor, nodestore
from proxy.cluster.nodestore import CONFIRMED, QUARANTINED, UP


class _Verifier:
    """A node API that answers every verify, remembering what it was asked (bad: say no)."""

    def __init__(self, bad: set[tuple[int, str]]) -> None:
        self.asked: list[tuple[int, str]] = []
        self.bad = bad

    async def verify(self, url: str, node: str, key: str, size: int, sha256: str) -> bool:
        blob_id = int(key.split("-")[0])
        assert key == replica_key(blob_id, sha256) and url == f"http://{node}"
        self.asked.append((blob_id, node))
        return (blob_id, node) not in self.bad


def _catalogue(txn: Txn, blobs: int) -> None:
    now = time.time()
    user = store.create_user(txn, "alice", "", "x", False, now)
    assert user is not None
    for name in ("n1", "n2", "n3"):
        nodestore.add_node(txn, name, f"http://{name}", f"rsync://{name}/r", name, now)
    txn.execute("UPDATE nodes SET status = CASE WHEN name = 'n3' THEN 'down' ELSE ? END", (UP,))
    for number in range(blobs):
        sha = hashlib.sha256(b"%d" % number).hexdigest()
        blob, _ = store.ensure_blob(txn, user.id, sha, "cd" * 16, number, now)
        for node in ("n1", "n2", "n3"):
            state = CONFIRMED if (number + len(node)) % 5 else "copying"
            nodestore.set_replica(txn, blob.id, node, state, now)


@pytest_twisted.ensureDeferred
async def test_a_scrub_pass_reads_replicas_a_page_at_a_time_and_verifies_each_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(parse_database_url(database_url))
    try:
        await db.run(migrations.migrate)
        await db.run(_catalogue, 13)

        def confirmed_up(txn: Txn) -> list[tuple[int, str]]:
            rows = txn.all(
                "SELECT blob_id, node FROM replicas WHERE state = ? AND node <> 'n3'"
                " ORDER BY blob_id, node",
                (CONFIRMED,),
            )
            return [(int(r[0]), str(r[1])) for r in rows]

        expected = await db.run(confirmed_up)
        bad = {expected[3], expected[-1]}
        pages: list[int] = []
        read = monitor.Scrubber._confirmed

        def counted(txn: Txn, after: tuple[int, str], limit: int) -> list[tuple[int, ...]]:
            page = read(txn, after, limit)
            pages.append(len(page))
            return page  # type: ignore[return-value]

        monkeypatch.setattr(monitor, "SCRUB_BATCH", 3)
        monkeypatch.setattr(monitor.Scrubber, "_confirmed", staticmethod(counted))
        verifier = _Verifier(bad)
        scrubber = monitor.Scrubber(db=db, client=verifier, clock=Clock())  # type: ignore[arg-type]
        result = await scrubber.run_once()
        assert result == {"checked": len(expected), "corrupt": 2, "unreachable": 0}
        assert verifier.asked == expected  # each once, in order, none on the down node
        assert max(pages) == 3 and pages[-1] == 0

        def states(txn: Txn) -> set[tuple[int, str]]:
            rows = txn.all("SELECT blob_id, node FROM replicas WHERE state = ?", (QUARANTINED,))
            return {(int(r[0]), str(r[1])) for r in rows}

        assert await db.run(states) == bad
    finally:
        db.close()


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    threads = ThreadPool(minthreads=0, maxthreads=2, name="test-replicas")
    threads.start()
    try:
        yield threads
    finally:
        threads.stop()


def _place(replicas: ReplicaStore, number: int) -> str:
    """A replica file put straight into ``replicas/`` (as another path than this one would)."""
    sha = hashlib.sha256(b"%d" % number).hexdigest()
    key = replica_key(number, sha)
    path = replicas.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"%d" % number)
    return key


@pytest_twisted.ensureDeferred
async def test_an_idle_node_recounts_its_replicas_only_every_five_minutes_or_after_a_change(
    tmp_path: Path, pool: ThreadPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = ReplicaStore(tmp_path / "node")
    held.create()
    for number in range(4):
        _place(held, number)
    walks: list[int] = []
    count = held.count

    def counting() -> int:
        walks.append(1)
        return count()

    monkeypatch.setattr(held, "count", counting)
    clock = Clock()
    replicas = Replicas(held, IReactorThreads(reactor), pool, clock)
    assert (await replicas.usage()).files == 4
    _place(held, 10)  # not through this node's operations: seen at the next recount
    clock.advance(replica_store.RECOUNT_AFTER - 1)
    assert (await replicas.usage()).files == 4
    assert len(walks) == 1
    clock.advance(1)
    assert (await replicas.usage()).files == 5
    assert len(walks) == 2
    await replicas.delete(_place(held, 11))  # a change through here: counted at once
    assert (await replicas.usage()).files == 5
    assert (await replicas.usage()).files == 5
    assert len(walks) == 3
    unclocked = Replicas(held, IReactorThreads(reactor), pool)
    assert [(await unclocked.usage()).files for _ in range(2)] == [5, 5]
    assert len(walks) == 5


def test_the_replica_listing_pages_through_every_replica_once_holding_one_shard_at_a_time(
    tmp_path: Path,
) -> None:
    held = ReplicaStore(tmp_path / "node")
    held.create()
    keys = {_place(held, number) for number in range(300)}
    (held.replicas / "zz").mkdir()  # not a shard of keys: nothing in it is listed
    (held.replicas / "ab" / "not-a-key").parent.mkdir(exist_ok=True)
    (held.replicas / "ab" / "not-a-key").write_bytes(b"")
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page, after = held.page(after, 7)
        pages += 1
        assert len(page) <= 7
        seen += [replica.key for replica in page]
        if after is None:
            break
        assert after == page[-1].key
    assert pages == -(-300 // 7)
    assert len(seen) == len(set(seen)) and set(seen) == keys
    assert seen == sorted(keys, key=lambda key: (key[-2:], key))
    assert held.page(None, 1000) == (sorted(held.list(), key=lambda r: (r.key[-2:], r.key)), None)


def test_the_node_lists_its_replicas_a_page_at_a_time_over_signed_http(tmp_path: Path) -> None:
    from tests.nodeproc import NodeProcess

    node = NodeProcess(tmp_path / "data").start()
    try:
        held = ReplicaStore(node.data_dir)
        keys = {_place(held, number) for number in range(25)}
        seen: list[str] = []
        target = "/internal/replicas?limit=10"
        while True:
            response = node.signed("GET", target)
            assert response.status == 200, response.body
            body = response.json()
            seen += [replica["key"] for replica in body["replicas"]]
            if body["next"] is None:
                break
            target = f"/internal/replicas?limit=10&after={body['next']}"
        assert len(seen) == 25 and set(seen) == keys
        for bad in ("limit=0", "limit=10001", "limit=x", "after=nope", "other=1"):
            response = node.signed("GET", f"/internal/replicas?{bad}")
            assert response.status == 400, (bad, response.body)
        assert node.signed("GET", "/internal/replicas").json()["next"] is None
    finally:
        node.stop()


def test_the_examples_in_the_node_listing_helpers_docstrings_hold() -> None:
    import doctest

    from node.api import app

    assert doctest.testmod(app).failed == 0
