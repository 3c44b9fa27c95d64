"""Replication against real nodes in memory: each node is the real ``NodeApp`` over a real
``ReplicaStore`` in a temporary directory, reached through ``treq.testing.StubTreq`` by the
proxy's real ``NodeClient``, so every call is signed, sent, checked and answered over HTTP
without a socket. Beside ``test_replication.py``, whose fake nodes inject the faults, these
show that the proxy and a node agree on the wire: health, confirm, verify, delete, download.

The rsync step is a stand-in that copies the file into the node's incoming folder, as the
node's rsync daemon would (rsync itself runs for real in ``test_node_service.py`` and
``test_cluster.py``). Time is two ``task.Clock``s, the proxy's and the nodes'.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.python.threadpool import ThreadPool
from twisted.web.vhost import NameVirtualHost
from zope.interface import implementer

from common.db import Database, Txn, parse_database_url
from common.signing import DEFAULT_WINDOW, NodeKeys, replica_key
from node.api.app import NodeApp
from node.replicas.store import Replicas, ReplicaStore
from proxy.catalog import store
from proxy.catalog.store import Blob
from proxy.cluster import nodestore
from proxy.cluster.client import NodeClient, NodeError
from proxy.cluster.monitor import NodeMonitor, Scrubber
from proxy.cluster.nodeapi import NodeApi, Pushed, ReplicaPusher
from proxy.cluster.nodestore import CONFIRMED, DOWN, FAILED, QUARANTINED, UP
from proxy.cluster.replication import Replicator
from proxy.migrations import migrate
from proxy.uploads.staging import StagingArea

NOW = 1_800_000_000.0
SECRET = "cluster-secret-of-the-stubtreq-tests"
REPLICAS = 2
DOWN_AFTER = 3
GRACE = 900.0
T = TypeVar("T")


def content(seed: int, size: int = 40_000) -> bytes:
    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------- real nodes, in memory


@implementer(IReactorThreads)
class FlushingThreads:
    """The reactor's threads, for the nodes' ``Replicas``; each result a worker thread hands
    back to the reactor is followed by a ``flush`` of the in-memory connections. That is the
    moment a node's route carries on and writes its answer, and ``StubTreq`` passes what a
    resource writes after its first render to the client only when flushed."""

    def __init__(self, threads: IReactorThreads) -> None:
        self._threads = threads
        self.flush: Callable[[], None] = lambda: None

    def getThreadPool(self) -> ThreadPool:
        return self._threads.getThreadPool()

    def callInThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        self._threads.callInThread(callable, *args, **kwargs)

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        def then() -> None:
            try:
                callable(*args, **kwargs)
            finally:
                self.flush()

        self._threads.callFromThread(then)

    def suggestThreadPoolSize(self, size: int) -> None:
        self._threads.suggestThreadPoolSize(size)


class RealNode:
    """One node: its application and replica store, and its URLs as the proxy knows them."""

    def __init__(
        self, name: str, zone: str, data_dir: Path, clock: Clock, threads: FlushingThreads,
        pool: ThreadPool,
    ) -> None:  # fmt: skip
        self.name = name
        self.zone = zone
        self.rsync_ready = True  # False: /health says "degraded", as with no rsync daemon
        self.store = ReplicaStore(data_dir)
        self.store.create()
        self.app = NodeApp(
            name=name, zone=zone, version="test", replicas=Replicas(self.store, threads, pool),
            keys=NodeKeys.for_node(SECRET, name), clock=clock,
            rsync_ready=lambda: self.rsync_ready,
        )  # fmt: skip

    @property
    def host(self) -> str:
        return f"{self.name}.nodes.test"

    @property
    def url(self) -> str:
        return f"http://{self.host}:8100"

    @property
    def rsync_url(self) -> str:
        return f"rsync://{self.host}:8873/replicas"

    def held(self, key: str) -> bytes | None:
        """A confirmed replica's bytes on the node's disk, or None."""
        path = self.store.path(key)
        return path.read_bytes() if path.exists() else None

    def incoming(self) -> list[str]:
        return sorted(p.name for p in self.store.incoming.iterdir())

    def quarantined(self) -> list[str]:
        return sorted(p.name for p in self.store.quarantine.iterdir())


class CopyingRsync:
    """Stands in for ``RsyncPusher``: puts the file into the node's ``incoming/`` folder, as
    its rsync daemon would; a node named in ``mangle`` receives it with one byte flipped."""

    def __init__(self, nodes: dict[str, RealNode]) -> None:
        self._nodes = nodes
        self.mangle: set[str] = set()

    def push(
        self, source: str, rsync_url: str, name: str, key: str, size: int = 0
    ) -> Deferred[None]:
        node = self._nodes[(urlsplit(rsync_url).hostname or "").split(".")[0]]
        assert node.name == name
        data = Path(source).read_bytes()
        if node.name in self.mangle:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        (node.store.incoming / key).write_bytes(data)
        return defer.succeed(None)

    def push_batch(self, files: Sequence[Pushed], rsync_url: str, name: str) -> Deferred[None]:
        for pushed in files:
            self.push(pushed.source, rsync_url, name, pushed.key, pushed.size)
        return defer.succeed(None)


class Rig:
    """The proxy's replication parts over one database, talking to real nodes in memory."""

    def __init__(self, db: Database, tmp_path: Path, pool: ThreadPool) -> None:
        self.db = db
        self.clock = Clock()  # the proxy's
        self.clock.advance(NOW)
        self.node_clock = Clock()  # every node's
        self.node_clock.advance(NOW)
        self._tmp = tmp_path
        self._pool = pool
        self.staging = StagingArea(tmp_path / "proxy")
        self.nodes: dict[str, RealNode] = {}
        self.threads = FlushingThreads(IReactorThreads(reactor))
        self.hosts = NameVirtualHost()  # one StubTreq, each node under its own host name
        self.http = StubTreq(self.hosts)
        self.threads.flush = self.http.flush
        self.client = NodeClient(
            http=self.http, clock=self.clock, cluster_secret=SECRET, timeout=10.0
        )
        self.rsync = CopyingRsync(self.nodes)
        # Typed as the proxy's parts see them: mypy checks the real client and the stand-in
        # against the interfaces (the tests' fakes are checked in test_replication.py).
        api: NodeApi = self.client
        pusher: ReplicaPusher = self.rsync
        self.monitor = NodeMonitor(db=db, client=api, clock=self.clock, down_after=DOWN_AFTER)
        self.replicator = Replicator(
            db=db, staging=self.staging, client=api, rsync=pusher, clock=self.clock,
            target=REPLICAS, grace=GRACE,
        )  # fmt: skip
        self.scrubber = Scrubber(db=db, client=api, clock=self.clock)

    async def pumping(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` and flush the in-memory connections on every reactor turn until it is
        done. Only a download needs this: the node streams it with a pull producer, which
        the reactor's cooperator drives from one turn to the next, and ``StubTreq`` hands
        each piece on to the client only when flushed."""
        done = defer.ensureDeferred(work)
        while not done.called:
            await deferLater(IReactorTime(reactor), 0, self.http.flush)
        return await done

    def advance(self, seconds: float) -> None:
        """Time passes for the proxy and the nodes alike."""
        self.clock.advance(seconds)
        self.node_clock.advance(seconds)

    async def add_node(self, name: str, zone: str) -> RealNode:
        """Start a node, register it (as staff would) and run a monitor pass."""
        node = RealNode(name, zone, self._tmp / name, self.node_clock, self.threads, self._pool)
        self.nodes[name] = node
        self.hosts.addHost(node.host.encode(), node.app.app.resource())
        await self.db.run(
            nodestore.add_node, name, node.url, node.rsync_url, zone, self.clock.seconds()
        )
        await self.monitor.run_once()
        return node

    async def node(self, name: str) -> nodestore.Node:
        return await self.db.run(nodestore.get_node, name)

    async def new_file(self, data: bytes) -> tuple[str, Blob]:
        """A finished upload: a file row, its blob row and the content in staging."""
        md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()

        def add(txn: Txn) -> tuple[str, Blob]:
            now = self.clock.seconds()
            user = store.create_user(txn, "alice", "", "not-a-hash", False, now)
            user = user or store.user_by_name(txn, "alice")
            assert user is not None
            blob, _ = store.ensure_blob(txn, user.id, sha256, md5, len(data), now)
            file_id, _ = store.add_version(
                txn, user.id, None, "f" + sha256[:15], "holiday.mp4", blob, now
            )
            return file_id, blob

        file_id, blob = await self.db.run(add)
        path = self.staging.blob_path(blob.sha256, blob.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return file_id, blob

    async def states(self, blob: Blob) -> dict[str, str]:
        found = await self.db.run(nodestore.replicas_of, [blob.id])
        return {r.node: r.state for r in found[blob.id]}

    async def replica(self, blob: Blob, node: str) -> nodestore.Replica:
        found = await self.db.run(nodestore.replicas_of, [blob.id])
        return next(r for r in found[blob.id] if r.node == node)

    async def is_local(self, blob: Blob) -> bool:
        return await self.db.run(
            lambda txn: bool(txn.scalar("SELECT local FROM blobs WHERE id = ?", (blob.id,)))
        )


def key_of(blob: Blob) -> str:
    return replica_key(blob.id, blob.sha256)


@pytest_twisted.async_yield_fixture
async def rig(database_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    db = Database(parse_database_url(database_url), pool_size=2)
    pool = ThreadPool(minthreads=0, maxthreads=2, name="stubtreq-nodes")
    pool.start()
    try:
        await db.run(migrate)
        yield Rig(db, tmp_path, pool)
    finally:
        pool.stop()
        db.close()


# ---------------------------------------------------------------- health


@pytest_twisted.ensureDeferred
async def test_the_monitor_marks_a_real_node_up_with_the_space_of_its_data_directory(
    rig: Rig,
) -> None:
    node = await rig.add_node("n1", "a")
    seen = await rig.node("n1")
    assert seen.status == UP
    assert seen.last_seen == NOW
    usage = node.store.usage()
    assert seen.total_bytes == usage.total_bytes
    assert seen.free_bytes is not None and 0 < seen.free_bytes <= usage.total_bytes
    assert seen.rtt_ms is not None and seen.rtt_ms >= 0


@pytest_twisted.ensureDeferred
async def test_a_node_without_its_rsync_daemon_answers_degraded_and_is_down_after_missed_pings(
    rig: Rig,
) -> None:
    node = await rig.add_node("n1", "a")
    node.rsync_ready = False
    assert (await rig.client.health(node.url))["status"] == "degraded"
    for _ in range(DOWN_AFTER - 1):
        rig.advance(10)
        await rig.monitor.run_once()
    assert (await rig.node("n1")).status == UP
    rig.advance(10)
    await rig.monitor.run_once()
    down = await rig.node("n1")
    assert down.status == DOWN and down.down_since == rig.clock.seconds()

    node.rsync_ready = True
    rig.advance(10)
    await rig.monitor.run_once()
    assert (await rig.node("n1")).status == UP


# ---------------------------------------------------------------- confirm


@pytest_twisted.ensureDeferred
async def test_a_replica_left_in_incoming_is_confirmed_by_the_node_and_the_proxy_lets_go(
    rig: Rig,
) -> None:
    n1 = await rig.add_node("n1", "a")
    n2 = await rig.add_node("n2", "b")
    data = content(1)
    _, blob = await rig.new_file(data)
    await rig.replicator.run_once()
    assert await rig.states(blob) == {"n1": CONFIRMED, "n2": CONFIRMED}
    for node in (n1, n2):
        assert node.held(key_of(blob)) == data
        assert node.incoming() == []  # moved, not copied, into replicas/
    assert not await rig.is_local(blob)
    assert not rig.staging.blob_path(blob.sha256, blob.id).exists()
    # Asked again (a proxy that restarted before recording the answer), the node says yes.
    await rig.client.confirm(n1.url, n1.name, key_of(blob), blob.size, blob.md5, blob.sha256)
    assert n1.held(key_of(blob)) == data


@pytest_twisted.ensureDeferred
async def test_a_copy_with_a_wrong_checksum_is_refused_deleted_and_retried_later(
    rig: Rig,
) -> None:
    await rig.add_node("n1", "a")
    n2 = await rig.add_node("n2", "b")
    rig.rsync.mangle.add("n2")
    _, blob = await rig.new_file(content(2))
    await rig.replicator.run_once()
    assert await rig.states(blob) == {"n1": CONFIRMED, "n2": FAILED}
    replica = await rig.replica(blob, "n2")
    assert "409" in replica.detail and "sha256" in replica.detail
    assert n2.held(key_of(blob)) is None
    assert n2.incoming() == []  # the node deleted what did not match
    assert await rig.is_local(blob)  # one good copy is not enough to let go

    rig.rsync.mangle.clear()
    rig.advance(replica.next_attempt_at - rig.clock.seconds())
    await rig.replicator.run_once()
    assert await rig.states(blob) == {"n1": CONFIRMED, "n2": CONFIRMED}
    assert not await rig.is_local(blob)


@pytest_twisted.ensureDeferred
async def test_confirming_what_never_arrived_is_a_404_and_a_wrong_size_a_409(rig: Rig) -> None:
    node = await rig.add_node("n1", "a")
    data = content(3)
    md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    key = replica_key(7, sha256)
    with pytest.raises(NodeError) as missing:
        await rig.client.confirm(node.url, node.name, key, len(data), md5, sha256)
    assert missing.value.status == 404

    (node.store.incoming / key).write_bytes(data)
    with pytest.raises(NodeError) as wrong:
        await rig.client.confirm(node.url, node.name, key, len(data) + 1, md5, sha256)
    assert wrong.value.status == 409
    assert node.incoming() == [] and node.held(key) is None


@pytest_twisted.ensureDeferred
async def test_a_node_refuses_a_call_signed_by_a_proxy_whose_clock_is_off(rig: Rig) -> None:
    node = await rig.add_node("n1", "a")
    data = content(4)
    md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    key = replica_key(8, sha256)
    (node.store.incoming / key).write_bytes(data)
    rig.clock.advance(DEFAULT_WINDOW + 1)  # the proxy's clock runs ahead of the node's
    with pytest.raises(NodeError) as refused:
        await rig.client.confirm(node.url, node.name, key, len(data), md5, sha256)
    assert refused.value.status == 403
    assert node.incoming() == [key]  # nothing was touched

    rig.node_clock.advance(DEFAULT_WINDOW + 1)  # in step again
    await rig.client.confirm(node.url, node.name, key, len(data), md5, sha256)
    assert node.held(key) == data


# ---------------------------------------------------------------- verify and repair


@pytest_twisted.ensureDeferred
async def test_scrub_quarantines_a_copy_rotten_on_disk_and_repair_brings_it_back(
    rig: Rig,
) -> None:
    n1 = await rig.add_node("n1", "a")
    n2 = await rig.add_node("n2", "b")
    data = content(5)
    _, blob = await rig.new_file(data)
    await rig.replicator.run_once()
    key = key_of(blob)
    path = n2.store.path(key)
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])

    assert await rig.scrubber.run_once() == {"checked": 2, "corrupt": 1, "unreachable": 0}
    assert await rig.states(blob) == {"n1": CONFIRMED, "n2": QUARANTINED}
    assert n2.quarantined() == [key] and n2.held(key) is None
    # The repair downloads the good copy from n1 through a signed URL, then pushes it again.
    await rig.pumping(rig.replicator.run_once())
    assert await rig.states(blob) == {"n1": CONFIRMED, "n2": CONFIRMED}
    assert n1.held(key) == data and n2.held(key) == data
    assert not await rig.is_local(blob)
    assert await rig.scrubber.run_once() == {"checked": 2, "corrupt": 0, "unreachable": 0}


# ---------------------------------------------------------------- delete


@pytest_twisted.ensureDeferred
async def test_deleting_a_file_removes_its_replicas_from_the_nodes_disks(rig: Rig) -> None:
    n1 = await rig.add_node("n1", "a")
    n2 = await rig.add_node("n2", "b")
    file_id, blob = await rig.new_file(content(6))
    await rig.replicator.run_once()
    key = key_of(blob)
    assert n1.held(key) is not None and n2.held(key) is not None

    await rig.db.run(store.delete_file, file_id, rig.clock.seconds())
    await rig.replicator.run_once()
    assert n1.held(key) is None and n2.held(key) is None
    assert await rig.db.run(nodestore.due_deletions, rig.clock.seconds() + GRACE) == []
    # Deleting again, or what a node never held, is no error.
    await rig.client.delete(n1.url, n1.name, key)
