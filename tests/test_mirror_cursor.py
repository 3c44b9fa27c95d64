"""The mirror's want-list by cursor, across real processes: the proxy's remote tier in this
process (its metadata in SQLite), a real storage node process over signed HTTP, and moto's
S3 server over real HTTP.

A proxy restarted mid-sync (the node took a delta whose answer the proxy never recorded)
sends again only what came after the cursor it has; a withdrawn blob reaches the node; a
node whose mirror state was wiped gets the whole list again; every blob ends mirrored and
verified in S3. The same logic against a played node on both databases is in
``test_remote_tier.py``.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool

from common.db import Database, Txn, parse_database_url
from common.s3 import S3Settings
from common.signing import replica_key
from proxy.catalog import store
from proxy.cluster import nodestore
from proxy.cluster.client import NodeClient
from proxy.cluster.nodestore import CONFIRMED, UP
from proxy.migrations import migrate
from proxy.remote.tier import RemoteTier
from tests.clusterkit import NODE_FAST
from tests.nodefakes import UnplayedNodeApi
from tests.nodeproc import SECRET, NodeProcess
from tests.s3server import S3Server


class ProxyDied(Exception):
    """The proxy stopped after the node answered, before it recorded the answer."""


@dataclass
class Wire(UnplayedNodeApi):
    """The real node client, keeping what it sent; ``die`` drops the next answer."""

    real: NodeClient
    sent: list[dict[str, Any]] = field(default_factory=list)
    die: bool = False

    async def mirror_sync(
        self, base_url: str, name: str, want: Mapping[str, Any], *, timeout: float
    ) -> dict[str, Any]:
        self.sent.append(dict(want))
        answer = await self.real.mirror_sync(base_url, name, want, timeout=timeout)
        if self.die:
            self.die = False
            raise ProxyDied()
        return answer


@dataclass
class Rig:
    db: Database
    node: NodeProcess
    s3: S3Server
    settings: S3Settings
    pool: ThreadPool
    seeds: int = 0

    def tier(self, wire: Wire) -> RemoteTier:
        """A new remote tier on the same database: what a restarted proxy makes."""

        async def active() -> S3Settings:
            return self.settings

        return RemoteTier(
            db=self.db, clock=IReactorTime(reactor), client=wire, active=active,
            cluster_secret=SECRET, grace=900.0, threads=IReactorThreads(reactor),
            pool=self.pool,
        )  # fmt: skip

    def wire(self) -> Wire:
        real = NodeClient(http=treq, clock=IReactorTime(reactor), cluster_secret=SECRET, timeout=10)
        return Wire(real)

    async def blobs(self, count: int, *, on_node: bool = True) -> list[tuple[int, str]]:
        """``count`` new blobs confirmed on the node (their files in its data directory
        unless not ``on_node``); their ids and replica keys."""
        made = []
        for _ in range(count):
            self.seeds += 1
            data = self.content(self.seeds)
            sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()

            def add(txn: Txn, sha: str = sha, md5: str = md5, size: int = len(data)) -> int:
                blob, _ = store.ensure_blob(txn, 1, sha, md5, size, time.time())
                txn.execute("UPDATE blobs SET local = 0 WHERE id = ?", (blob.id,))
                nodestore.set_replica(txn, blob.id, self.node.name, CONFIRMED, time.time())
                return blob.id

            blob_id = await self.db.run(add)
            key = replica_key(blob_id, sha)
            if on_node:
                shard = self.node.data_dir / "replicas" / key[-2:]
                shard.mkdir(parents=True, exist_ok=True)
                (shard / key).write_bytes(data)
            made.append((blob_id, key))
        return made

    @staticmethod
    def content(seed: int) -> bytes:
        return f"cursor blob {seed} ".encode() * 50

    def put_file(self, key: str, seed: int) -> None:
        """Write the replica file a blob made with ``on_node=False`` lacked."""
        shard = self.node.data_dir / "replicas" / key[-2:]
        shard.mkdir(parents=True, exist_ok=True)
        (shard / key).write_bytes(self.content(seed))

    async def cursor(self) -> tuple[str | None, int]:
        row = await self.db.run(
            lambda txn: txn.one(
                "SELECT state, acked FROM mirror_cursors WHERE node = ?", (self.node.name,)
            )
        )
        assert row is not None
        return row[0], int(row[1])

    async def states(self) -> dict[int, tuple[str, int]]:
        rows = await self.db.run(
            lambda txn: txn.all("SELECT id, remote_state, remote_verified FROM blobs")
        )
        return {int(r[0]): (r[1], int(r[2])) for r in rows}

    async def until_mirrored(self, tier: RemoteTier, timeout: float = 30) -> None:
        """Sync every 0.2s until every blob is mirrored and verified."""
        deadline = time.monotonic() + timeout
        while True:
            await tier.sync_once()
            states = await self.states()
            if states and all(s == ("mirrored", 1) for s in states.values()):
                return
            assert time.monotonic() < deadline, states
            await deferLater(reactor, 0.2, lambda: None)


@pytest_twisted.async_yield_fixture
async def rig(tmp_path: Path, s3: S3Server) -> AsyncIterator[Rig]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    node = NodeProcess(data_dir, env=NODE_FAST).start()
    db = Database(parse_database_url(f"sqlite:///{tmp_path}/meta.sqlite3"))
    pool = ThreadPool(minthreads=0, maxthreads=2, name="cursor-tests")
    pool.start()
    try:
        await db.run(migrate)

        def add_node(txn: Txn) -> None:
            nodestore.add_node(txn, node.name, node.url, "rsync://127.0.0.1/x", "a", time.time())
            txn.execute("UPDATE nodes SET status = ?, free_bytes = ?", (UP, 500 * 2**30))

        await db.run(add_node)
        yield Rig(db, node, s3, s3.bucket(), pool)
    finally:
        node.stop()
        pool.stop()
        db.close()


def keys_of(payload: dict[str, Any], name: str = "mirror") -> set[str]:
    return {item["key"] for item in payload[name]}


@pytest_twisted.ensureDeferred
async def test_a_proxy_restarted_mid_sync_resumes_from_its_cursor_and_nothing_is_lost(
    rig: Rig,
) -> None:
    wire = rig.wire()
    tier = rig.tier(wire)
    first = await rig.blobs(5)
    await tier.sync_once()
    assert wire.sent[-1]["cursor"] == {"state": None, "since": None, "to": 5}
    assert keys_of(wire.sent[-1]) == {key for _, key in first}
    state, acked = await rig.cursor()
    assert state is not None and acked == 5

    # The proxy sends the next delta, the node takes it, and the proxy dies before it
    # records the answer: its cursor stays at 5.
    second = await rig.blobs(5)
    wire.die = True
    await tier.sync_once()
    assert wire.sent[-1]["cursor"] == {"state": state, "since": 5, "to": 10}
    assert await rig.cursor() == (state, 5)

    # A new proxy on the same database sends what came after 5, and only that.
    wire = rig.wire()
    tier = rig.tier(wire)
    await tier.sync_once()
    resumed = wire.sent[0]
    assert resumed["cursor"]["since"] == 5 and resumed["cursor"]["state"] == state
    assert {key for _, key in second} <= keys_of(resumed)
    assert not keys_of(resumed) & {key for _, key in first}
    assert len(wire.sent) == 1  # the node took the delta: no whole list was needed

    await rig.until_mirrored(tier)
    client = rig.s3.client(rig.settings)
    for blob_id, key in first + second:
        sha = key.partition("-")[2]
        head = client.head_object(Bucket=rig.settings.bucket, Key=rig.settings.object_key(sha))
        assert head["ContentLength"] > 0, blob_id
    # Mirrored blobs are withdrawn from the node's list, and it says so once it has them.
    await tier.sync_once()
    withdrawn = {k for p in wire.sent if "withdraw" in p for k in p["withdraw"]["mirror"]}
    assert withdrawn == {key for _, key in first + second}


@pytest_twisted.ensureDeferred
async def test_a_withdrawn_blob_reaches_the_node_and_a_wiped_node_gets_the_whole_list(
    rig: Rig,
) -> None:
    wire = rig.wire()
    tier = rig.tier(wire)
    # Its file is not on the node, so the node keeps trying (and failing) to mirror it.
    [(stuck, stuck_key)] = await rig.blobs(1, on_node=False)
    await tier.sync_once()
    assert (await rig.states())[stuck] == ("mirroring", 0)

    def delete(txn: Txn) -> None:  # the blob's last file was deleted
        txn.execute("DELETE FROM replicas WHERE blob_id = ?", (stuck,))
        txn.execute("DELETE FROM blobs WHERE id = ?", (stuck,))

    await rig.db.run(delete)
    await tier.sync_once()
    assert wire.sent[-1]["withdraw"]["mirror"] == [stuck_key]
    assert keys_of(wire.sent[-1]) == set()
    # The node keeps nothing of it: its next answer reports no such blob.
    await tier.sync_once()
    answer = await wire.real.mirror_sync(
        rig.node.url, rig.node.name,
        {"connection": None, "mirror_interval": None, "mirror": [], "restore": [],
         "cursor": {**wire.sent[-1]["cursor"], "since": wire.sent[-1]["cursor"]["to"]}},
        timeout=10,
    )  # fmt: skip
    assert answer["applied"] is True and answer["mirror"] == []

    # The node loses its mirror state: it refuses the next delta and is sent the whole list.
    kept = await rig.blobs(2, on_node=False)  # not mirrored before the wipe
    await tier.sync_once()
    state, acked = await rig.cursor()
    rig.node.stop()
    shutil.rmtree(rig.node.data_dir / "mirror")
    rig.node.start()
    wire.sent.clear()
    await tier.sync_once()
    assert [p["cursor"]["since"] for p in wire.sent] == [acked, None]
    assert keys_of(wire.sent[-1]) == {key for _, key in kept}
    new_state, new_acked = await rig.cursor()
    assert new_state not in (None, state) and new_acked == wire.sent[-1]["cursor"]["to"]
    for seed, (_, key) in zip((rig.seeds - 1, rig.seeds), kept, strict=True):
        rig.put_file(key, seed)
    await rig.until_mirrored(tier)
