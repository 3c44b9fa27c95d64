"""Batched replication of small files against a REAL node process: the proxy's replicator
(in this process, over SQLite) pushes with the real ``rsync`` client to the node's rsync
daemon, and confirms with one signed HTTP call per batch. The node is killed in the middle of
a batch's rsync and in the middle of its confirm; whatever the proxy marked confirmed must be
on the node's disk with the right sha256, and the rest is copied once the node is back.

The proxy's clock is a ``task.Clock`` (backoff is moved by hand); rsync, HTTP and the node's
signature check run on real time.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.task import Clock, LoopingCall
from twisted.web.client import Agent, HTTPConnectionPool

from common.backoff import retry_delay
from common.db import Database, Txn, parse_database_url
from common.signing import replica_key
from proxy.catalog import store
from proxy.catalog.store import Blob
from proxy.cluster import nodestore
from proxy.cluster.client import NodeClient, RsyncPusher
from proxy.cluster.monitor import NodeMonitor
from proxy.cluster.nodeapi import Pushed, WantedReplica
from proxy.cluster.nodestore import CONFIRMED, FAILED
from proxy.cluster.replication import Replicator
from proxy.migrations import migrate
from proxy.uploads.staging import StagingArea
from tests.nodeproc import SECRET, SLOW_DIRECTORIES, NodeProcess

Hook = Callable[[], None]
T = TypeVar("T")


class WatchedRsync(RsyncPusher):
    """The real pusher; ``during`` runs every few milliseconds while a batch's rsync runs,
    ``after`` once it has finished."""

    during: Hook | None = None
    after: Hook | None = None
    runs = 0

    def push_batch(self, files: Sequence[Pushed], rsync_url: str, node: str) -> Deferred[None]:
        self.runs += 1
        done = super().push_batch(files, rsync_url, node)
        return _watched(done, self.during, self.after)


class WatchedClient(NodeClient):
    """The real client; ``during`` runs every few milliseconds while a batch confirm waits
    for its answer."""

    during: Hook | None = None
    calls = 0

    async def confirm_batch(
        self, base_url: str, node: str, wanted: Sequence[WantedReplica]
    ) -> dict[str, str | None]:
        self.calls += 1
        call = Deferred.fromCoroutine(super().confirm_batch(base_url, node, wanted))
        return await _watched(call, self.during, None)


def _watched(done: Deferred[T], during: Hook | None, after: Hook | None) -> Deferred[T]:
    if during is None and after is None:
        return done
    watch = LoopingCall(during) if during is not None else None
    if watch is not None:
        watch.clock = IReactorTime(reactor)
        watch.start(0.002)

    def finished(result: T) -> T:
        if watch is not None and watch.running:
            watch.stop()
        if after is not None:
            after()
        return result

    return done.addBoth(finished)


@dataclass
class Rig:
    db: Database
    clock: Clock
    staging: StagingArea
    node: NodeProcess
    rsync: WatchedRsync
    client: WatchedClient
    replicator: Replicator

    async def new_blob(self, data: bytes) -> Blob:
        sha256 = hashlib.sha256(data).hexdigest()
        md5 = hashlib.md5(data).hexdigest()
        blob, _ = await self.db.run(
            store.ensure_blob, 1, sha256, md5, len(data), self.clock.seconds()
        )
        path = self.staging.blob_path(blob.sha256, blob.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return blob

    async def states(self, blobs: Sequence[Blob]) -> dict[int, str]:
        found = await self.db.run(nodestore.replicas_of, [b.id for b in blobs])
        return {blob_id: rows[0].state if rows else "" for blob_id, rows in found.items()}

    async def confirmed(self, blobs: Sequence[Blob]) -> list[Blob]:
        states = await self.states(blobs)
        return [b for b in blobs if states[b.id] == CONFIRMED]

    def on_disk(self, blob: Blob) -> bool:
        """Whether the node holds a confirmed replica of ``blob`` with the right sha256."""
        path = self.node.replica_path(replica_key(blob.id, blob.sha256))
        return path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == blob.sha256

    def replicas_dir_is_all_verified(self) -> bool:
        """Every file under the node's replicas/ hashes to the sha256 in its name."""
        for path in (self.node.data_dir / "replicas").rglob("*-*"):
            if hashlib.sha256(path.read_bytes()).hexdigest() != path.name.rpartition("-")[2]:
                return False
        return True

    def files_in(self, folder: str) -> int:
        return sum(1 for p in (self.node.data_dir / folder).rglob("*") if p.is_file())

    async def restart_node(self) -> None:
        self.node.start()
        self.clock.advance(3600)  # past any retry's wait


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    node = NodeProcess(tmp_path / "data", name="n1").start()
    db = Database(parse_database_url(f"sqlite:///{tmp_path}/meta.sqlite3"), pool_size=2)
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        await db.run(migrate)
        clock = Clock()
        clock.advance(time.time())
        staging = StagingArea(tmp_path / "proxy")
        http = HTTPClient(Agent(reactor, pool=pool))
        client = WatchedClient(http=http, clock=reactor, cluster_secret=SECRET, timeout=10.0)
        rsync = WatchedRsync(
            reactor=IReactorProcess(reactor), clock=IReactorTime(reactor),
            cluster_secret=SECRET, timeout=10.0, scratch=tmp_path / "proxy" / "rsync-batches",
        )  # fmt: skip
        rsync_url = f"rsync://pyarchive@127.0.0.1:{node.rsync_port}/incoming"
        await db.run(nodestore.add_node, "n1", node.url, rsync_url, "a", clock.seconds())
        await NodeMonitor(db=db, client=client, clock=clock, down_after=3).run_once()
        replicator = Replicator(
            db=db, staging=staging, client=client, rsync=rsync, clock=clock, target=1,
            grace=900.0,
        )  # fmt: skip
        yield Rig(db, clock, staging, node, rsync, client, replicator)
    finally:
        node.stop()
        db.close()
        await pool.closeCachedConnections()


def _local(txn: Txn) -> int:
    return int(txn.scalar("SELECT COUNT(*) FROM blobs WHERE local = 1"))


@pytest_twisted.ensureDeferred
async def test_fifty_small_files_are_copied_in_one_rsync_run_and_confirmed_in_one_call(
    rig: Rig,
) -> None:
    blobs = [await rig.new_blob(os.urandom(1024)) for _ in range(50)]
    await rig.replicator.run_once()
    assert (rig.rsync.runs, rig.client.calls) == (1, 1)
    assert await rig.confirmed(blobs) == blobs
    assert all(rig.on_disk(blob) for blob in blobs)
    assert rig.files_in("incoming") == 0
    assert await rig.db.run(_local) == 0  # the proxy let go of its own copies
    assert list((rig.staging.root / "rsync-batches").iterdir()) == []  # links cleaned up


@pytest_twisted.ensureDeferred
async def test_a_node_killed_mid_batch_confirms_only_verified_files_and_gets_the_rest_later(
    rig: Rig,
) -> None:
    blobs = [await rig.new_blob(os.urandom(64 * 1024)) for _ in range(50)]

    def kill_once_files_arrive() -> None:
        if rig.node.process and rig.node.process.poll() is None and rig.files_in("incoming"):
            rig.node.kill()

    # 1. Killed while its rsync daemon receives the batch: nothing is confirmed.
    rig.rsync.during = kill_once_files_arrive
    await rig.replicator.run_once()
    rig.rsync.during = None
    assert set((await rig.states(blobs)).values()) == {FAILED}
    assert rig.files_in("replicas") == 0

    # 2. Back, and killed again as soon as the first replica is renamed into replicas/. Its
    # directory fsyncs are slow this time, so the kill lands between the renames and the
    # answer however fast the machine is (the renamed files are there, none is confirmed).
    def kill_once_confirming() -> None:
        if rig.node.process and rig.node.process.poll() is None and rig.files_in("replicas"):
            rig.node.kill()

    rig.node.command = SLOW_DIRECTORIES
    await rig.restart_node()
    rig.node.command = ()
    rig.client.during = kill_once_confirming
    await rig.replicator.run_once()
    rig.client.during = None
    confirmed = await rig.confirmed(blobs)
    assert all(rig.on_disk(blob) for blob in confirmed)  # nothing unverified is confirmed
    assert rig.replicas_dir_is_all_verified()
    assert len(confirmed) < len(blobs), "the node answered before it was killed"

    # 3. Back again: the rest is copied, and what was already renamed is answered as held.
    await rig.restart_node()
    await rig.replicator.run_once()
    assert await rig.confirmed(blobs) == blobs
    assert all(rig.on_disk(blob) for blob in blobs)
    assert rig.replicas_dir_is_all_verified()
    assert await rig.db.run(_local) == 0


@pytest_twisted.ensureDeferred
async def test_a_tampered_file_in_a_batch_is_refused_for_its_key_only(rig: Rig) -> None:
    blobs = [await rig.new_blob(os.urandom(1024)) for _ in range(20)]
    tampered = blobs[7]
    key = replica_key(tampered.id, tampered.sha256)

    def tamper() -> None:
        (rig.node.data_dir / "incoming" / key).write_bytes(os.urandom(1024))

    rig.rsync.after = tamper
    await rig.replicator.run_once()
    rig.rsync.after = None
    states = await rig.states(blobs)
    assert {b.id for b in blobs if states[b.id] == CONFIRMED} == {
        b.id for b in blobs if b is not tampered
    }
    refused = (await rig.db.run(nodestore.replicas_of, [tampered.id]))[tampered.id][0]
    assert refused.state == FAILED and "409" in refused.detail and "sha256" in refused.detail
    assert not (rig.node.data_dir / "incoming" / key).exists()  # the node deleted it
    assert not rig.node.replica_path(key).exists()

    rig.clock.advance(retry_delay(1))
    await rig.replicator.run_once()
    assert rig.on_disk(tampered)
    assert await rig.confirmed(blobs) == blobs


@pytest_twisted.ensureDeferred
async def test_a_file_gone_from_staging_fails_the_rsync_run_but_not_the_rest_of_the_batch(
    rig: Rig,
) -> None:
    blobs = [await rig.new_blob(os.urandom(1024)) for _ in range(10)]
    gone = blobs[3]
    rig.staging.blob_path(gone.sha256, gone.id).unlink()  # its link in the batch dangles
    await rig.replicator.run_once()
    states = await rig.states(blobs)
    assert {b.id for b in blobs if states[b.id] == CONFIRMED} == {
        b.id for b in blobs if b is not gone
    }
    refused = (await rig.db.run(nodestore.replicas_of, [gone.id]))[gone.id][0]
    assert refused.state == FAILED and "rsync failed" in refused.detail and "404" in refused.detail
