"""The proxy's half of the remote tier against a real metadata database (SQLite and
PostgreSQL): which node mirrors which blob, what each node is sent, how its answers are
recorded, cache and uncache, and removal of S3 objects of deleted blobs.

Nodes are played by ``FakeMirrorNodes``, which records every signed call and answers as a
test tells it; time is a ``task.Clock``. The real node side is in ``test_mirror_node.py``
and the whole cycle over real processes in ``test_remote_cluster.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from common.backoff import retry_delay
from common.db import Database, Txn, parse_database_url
from common.errors import Conflict
from common.s3 import S3Settings, settings_from_wire
from common.signing import NodeKeys, replica_key
from proxy.catalog import store
from proxy.cluster import nodestore
from proxy.cluster.client import NodeError
from proxy.cluster.nodestore import CONFIRMED, UP
from proxy.migrations import migrate
from proxy.remote.tier import RemoteTier
from tests.nodefakes import UnplayedNodeApi
from tests.s3server import S3Server

NOW = 1_800_000_000.0
SECRET = "cluster-secret-of-the-remote-tests"
S3_SECRET = "s3-secret-Zq8VVmcT1d2Kx0pLr7"
GRACE = 900.0
SETTINGS = S3Settings(
    bucket="archive", region="us-east-1", access_key="AKIATEST", secret_key=S3_SECRET,
    endpoint_url="http://127.0.0.1:9", prefix="pa", name="main",
)  # fmt: skip


@dataclass
class FakeMirrorNodes(UnplayedNodeApi):
    """Plays ``NodeApi.mirror_sync``: records each payload and answers with what
    ``answer(node, payload)`` returns."""

    answer: Callable[[str, dict[str, Any]], dict[str, Any]] = lambda node, payload: {}
    down: set[str] = field(default_factory=set)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def mirror_sync(
        self, base_url: str, name: str, want: Mapping[str, Any], *, timeout: float
    ) -> dict[str, Any]:
        node = base_url.split("//")[1].split(".")[0]
        assert node == name
        if node in self.down:
            raise ConnectionRefusedError(node)
        payload = dict(want)
        self.sent.append((node, payload))
        return self.answer(node, payload)

    def last(self, node: str) -> dict[str, Any]:
        return [p for n, p in self.sent if n == node][-1]


@dataclass
class Recorder:
    entries: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    intervals: dict[str, float] = field(default_factory=dict)

    async def record(
        self, level: str, event: str, message: str, *, job: str = "", **data: Any
    ) -> None:
        self.entries.append((level, event, message, {"job": job, **data}))

    def report_remote(self, name: str, job: dict[str, Any]) -> None:
        self.reports[name] = job

    def interval_of(self, name: str) -> float | None:
        return self.intervals.get(name)


@dataclass
class World:
    db: Database
    clock: Clock
    nodes: FakeMirrorNodes
    log: Recorder
    tier: RemoteTier
    settings: list[S3Settings | None]

    async def blob(self, seed: int, size: int = 20 * 2**20, *, on: tuple[str, ...] = ()) -> int:
        data = f"blob {seed}".encode()
        sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()

        def add(txn: Txn) -> int:
            blob, _ = store.ensure_blob(txn, 1, sha, md5, size, NOW)
            txn.execute("UPDATE blobs SET local = 0 WHERE id = ?", (blob.id,))
            for node in on:
                nodestore.set_replica(txn, blob.id, node, CONFIRMED, NOW)
            return blob.id

        return await self.db.run(add)

    async def row(self, blob_id: int) -> dict[str, Any]:
        def read(txn: Txn) -> dict[str, Any]:
            names = (
                "remote_state", "remote_verified", "mirror_node", "mirror_detail",
                "restore_node", "parts_restored", "restore_detail", "sha256",
            )  # fmt: skip
            row = txn.one(f"SELECT {', '.join(names)} FROM blobs WHERE id = ?", (blob_id,))
            assert row is not None
            return dict(zip(names, row, strict=True))

        return await self.db.run(read)

    async def node_down_since(self, name: str, since: float) -> None:
        await self.db.run(
            lambda txn: txn.execute(
                "UPDATE nodes SET status = 'down', down_since = ? WHERE name = ?", (since, name)
            )
        )


@pytest_twisted.async_yield_fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    db = Database(parse_database_url(database_url))
    await db.run(migrate)

    def add_nodes(txn: Txn) -> None:
        for name, zone in (("n1", "a"), ("n2", "b"), ("n3", "c")):
            nodestore.add_node(
                txn, name, f"http://{name}.test:8100", f"rsync://{name}.test/x", zone, NOW
            )
        txn.execute("UPDATE nodes SET status = ?, free_bytes = ?", (UP, 500 * 2**30))
        txn.execute(
            "INSERT INTO s3_connections (name, region, bucket, prefix, access_key,"
            " secret_encrypted, secret_last4, active, created_at, updated_at)"
            " VALUES ('main', 'us-east-1', 'archive', 'pa', 'AKIATEST', 'sealed', 'pLr7', 1,"
            " 0, 0)"
        )

    await db.run(add_nodes)
    clock = Clock()
    clock.advance(NOW)
    nodes, recorder = FakeMirrorNodes(), Recorder()
    settings: list[S3Settings | None] = [SETTINGS]

    async def active() -> S3Settings | None:
        return settings[0]

    pool = ThreadPool(minthreads=0, maxthreads=2, name="remote-tests")
    pool.start()
    tier = RemoteTier(
        db=db, clock=clock, client=nodes, active=active,
        cluster_secret=SECRET, grace=GRACE, threads=IReactorThreads(reactor), pool=pool,
        events=recorder, jobs=recorder,
    )  # fmt: skip
    yield World(db, clock, nodes, recorder, tier, settings)
    pool.stop()
    db.close()


def mirrored_answer(parts: int = 3, *, verified: bool = True) -> Callable[..., dict[str, Any]]:
    """A node that has finished (and verified) every blob it is asked to mirror."""

    def answer(node: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "mirror": [
                {
                    "key": item["key"],
                    "state": "mirrored",
                    "verified": verified,
                    "parts": [
                        {
                            "index": i + 1,
                            "offset": i * 8,
                            "size": 8,
                            "sha256": f"{i:064x}",
                            "remote_state": "uploaded",
                        }
                        for i in range(parts)
                    ],
                    "detail": "",
                    "attempts": 0,
                }
                for item in payload["mirror"]
            ],
            "restore": [],
            "job": {"name": "mirror", "interval": 5.0, "last_ok": True, "last_result": "ok"},
            "events": [
                {"at": NOW, "level": "info", "event": "mirror", "message": "done", "key": ""}
            ],
        }

    return answer


# ---------------------------------------------------------------- assignment


@pytest_twisted.ensureDeferred
async def test_each_blob_is_mirrored_by_exactly_one_node_holding_a_copy(world: World) -> None:
    blobs = [await world.blob(i, on=("n1", "n2")) for i in range(4)]
    await world.tier.sync_once()
    assigned = {b: (await world.row(b))["mirror_node"] for b in blobs}
    assert set(assigned.values()) <= {"n1", "n2"}
    # Spread by load: two each.
    assert sorted(assigned.values()) == ["n1", "n1", "n2", "n2"]
    for node in ("n1", "n2", "n3"):
        asked = {item["key"] for item in world.nodes.last(node)["mirror"]}
        mine = {b for b, n in assigned.items() if n == node}
        assert asked == {replica_key(b, (await world.row(b))["sha256"]) for b in mine}
    assert [(await world.row(b))["remote_state"] for b in blobs] == ["mirroring"] * 4
    # A second pass keeps every assignment.
    await world.tier.sync_once()
    assert {b: (await world.row(b))["mirror_node"] for b in blobs} == assigned


@pytest_twisted.ensureDeferred
async def test_the_connection_travels_sealed_for_each_node_with_its_own_key(
    world: World,
) -> None:
    await world.blob(1, on=("n1",))
    await world.tier.sync_once()
    payload = world.nodes.last("n1")
    assert S3_SECRET not in json.dumps(payload)
    opened = settings_from_wire(payload["connection"], NodeKeys.for_node(SECRET, "n1").transport)
    assert opened == SETTINGS
    with pytest.raises(ValueError):  # not the cluster secret, not another node's key
        settings_from_wire(payload["connection"], SECRET)
    with pytest.raises(ValueError):
        settings_from_wire(payload["connection"], NodeKeys.for_node(SECRET, "n2").transport)


@pytest_twisted.ensureDeferred
async def test_without_an_active_connection_nothing_is_assigned(world: World) -> None:
    blob = await world.blob(1, on=("n1",))
    world.settings[0] = None
    result = await world.tier.sync_once()
    assert result["connection"] is None
    assert world.nodes.last("n1") == {
        "connection": None, "mirror_interval": None, "mirror": [], "restore": [],
        "cursor": {"state": None, "since": None, "to": 0},
    }  # fmt: skip
    assert (await world.row(blob))["remote_state"] == "local"


@dataclass
class Journal:
    """A node's journal as the proxy sees it: takes a whole list, or a delta on top of the
    change it holds (or an older one), and answers with its cursor."""

    state: str = "journal-1"
    cursor: int | None = None
    mirror: set[str] = field(default_factory=set)

    def answer(self, node: str, payload: dict[str, Any]) -> dict[str, Any]:
        cursor = payload["cursor"]
        if cursor["since"] is None:
            self.mirror = {item["key"] for item in payload["mirror"]}
        elif cursor["state"] == self.state and (self.cursor or 0) >= cursor["since"]:
            self.mirror -= set(payload["withdraw"]["mirror"])
            self.mirror |= {item["key"] for item in payload["mirror"]}
        else:
            return {"applied": False, "cursor": {"state": self.state, "at": self.cursor}}
        self.cursor = cursor["to"]
        return {"applied": True, "cursor": {"state": self.state, "at": self.cursor}}


@pytest_twisted.ensureDeferred
async def test_a_node_from_before_cursors_is_sent_the_whole_list_without_one(
    world: World,
) -> None:
    def older(node: str, payload: dict[str, Any]) -> dict[str, Any]:
        if "cursor" in payload:
            raise NodeError("mirror sync answered 400: Unknown fields: cursor", 400)
        return {}

    world.nodes.answer = older
    blob = await world.blob(1, on=("n1",))
    for _ in range(2):
        world.nodes.sent.clear()
        assert (await world.tier.sync_once())["nodes"] == 3
        sent = [p for n, p in world.nodes.sent if n == "n1"]
        assert ["cursor" in p for p in sent] == [True, False]
        assert [item["key"] for item in sent[-1]["mirror"]] == [
            replica_key(blob, (await world.row(blob))["sha256"])
        ]


@pytest_twisted.ensureDeferred
async def test_a_node_is_sent_only_what_changed_since_its_cursor(world: World) -> None:
    journal = Journal()
    world.nodes.answer = lambda node, payload: journal.answer(node, payload) if node == "n1" else {}
    a, b = await world.blob(1, on=("n1",)), await world.blob(2, on=("n1",))
    await world.tier.sync_once()
    key = {blob: replica_key(blob, (await world.row(blob))["sha256"]) for blob in (a, b)}
    assert world.nodes.last("n1")["cursor"] == {"state": None, "since": None, "to": 2}
    assert journal.mirror == {key[a], key[b]}
    await world.tier.sync_once()  # nothing changed: an empty delta
    assert world.nodes.last("n1")["cursor"] == {"state": "journal-1", "since": 2, "to": 2}
    assert world.nodes.last("n1")["mirror"] == []

    c = await world.blob(3, on=("n1",))
    await world.db.run(lambda txn: txn.execute("DELETE FROM replicas WHERE blob_id = ?", (a,)))
    await world.tier.sync_once()
    sent = world.nodes.last("n1")
    assert sent["cursor"] == {"state": "journal-1", "since": 2, "to": 4}
    assert [item["key"] for item in sent["mirror"]] == [
        replica_key(c, (await world.row(c))["sha256"])
    ]
    assert sent["withdraw"] == {"mirror": [key[a]], "restore": []}
    assert journal.mirror == {key[b], sent["mirror"][0]["key"]}

    # The node's journal was replaced: it refuses the delta and gets the whole list at once.
    world.nodes.sent.clear()
    journal.state, journal.cursor = "journal-2", None
    d = await world.blob(4, on=("n1",))
    await world.tier.sync_once()
    assert [p["cursor"]["since"] for n, p in world.nodes.sent if n == "n1"] == [4, None]
    assert len(journal.mirror) == 3 and key[a] not in journal.mirror
    row = await world.db.run(
        lambda txn: txn.one("SELECT state, acked FROM mirror_cursors WHERE node = 'n1'")
    )
    assert row is not None and (row[0], int(row[1])) == ("journal-2", 5)
    assert (await world.row(d))["mirror_node"] == "n1"


@pytest_twisted.ensureDeferred
async def test_a_removed_nodes_want_list_and_cursor_go_with_it_and_its_name_starts_afresh(
    world: World,
) -> None:
    journal = Journal()
    world.nodes.answer = lambda node, payload: journal.answer(node, payload) if node == "n1" else {}
    blob = await world.blob(1, on=("n1", "n2"))
    await world.tier.sync_once()
    await world.tier.sync_once()
    assert world.nodes.last("n1")["cursor"]["since"] == 1  # a delta on its cursor

    def rows(txn: Txn) -> tuple[int, int]:
        wants = txn.scalar("SELECT COUNT(*) FROM mirror_wants WHERE node = 'n1'")
        cursors = txn.scalar("SELECT COUNT(*) FROM mirror_cursors WHERE node = 'n1'")
        return int(wants), int(cursors)

    assert await world.db.run(rows) == (1, 1)
    await world.db.run(nodestore.remove_node, "n1")  # n2 holds a copy too
    assert await world.db.run(rows) == (0, 0)

    def add_again(txn: Txn) -> None:
        nodestore.add_node(txn, "n1", "http://n1.test:8100", "rsync://n1.test/x", "a", NOW)
        txn.execute("UPDATE nodes SET status = ?, free_bytes = ? WHERE name = 'n1'",
                    (UP, 500 * 2**30))  # fmt: skip
        nodestore.set_replica(txn, blob, "n1", CONFIRMED, NOW)

    await world.db.run(add_again)
    world.nodes.sent.clear()
    await world.tier.sync_once()
    sent = [p for n, p in world.nodes.sent if n == "n1"]
    assert sent and sent[0]["cursor"]["state"] is None and sent[0]["cursor"]["since"] is None


@pytest_twisted.ensureDeferred
async def test_a_blob_only_on_the_proxy_waits_for_a_confirmed_replica(world: World) -> None:
    blob = await world.blob(1)
    await world.tier.sync_once()
    row = await world.row(blob)
    assert (row["remote_state"], row["mirror_node"]) == ("local", None)


@pytest_twisted.ensureDeferred
async def test_the_mirror_moves_to_another_holder_only_after_the_grace_period(
    world: World,
) -> None:
    blob = await world.blob(1, on=("n1", "n2"))
    await world.tier.sync_once()
    first = (await world.row(blob))["mirror_node"]
    other = "n2" if first == "n1" else "n1"
    await world.node_down_since(first, NOW)
    world.clock.advance(GRACE - 1)
    await world.tier.sync_once()
    assert (await world.row(blob))["mirror_node"] == first  # down, but not yet lost
    world.clock.advance(2)
    await world.tier.sync_once()
    assert (await world.row(blob))["mirror_node"] == other
    assert replica_key(blob, (await world.row(blob))["sha256"]) in {
        item["key"] for item in world.nodes.last(other)["mirror"]
    }


# ---------------------------------------------------------------- what nodes report


@pytest_twisted.ensureDeferred
async def test_a_verified_mirror_is_recorded_with_its_parts_job_and_events(world: World) -> None:
    blob = await world.blob(1, on=("n1",))
    world.nodes.answer = mirrored_answer(parts=3)
    world.log.intervals["mirror@n1"] = 42.0
    await world.tier.sync_once()
    row = await world.row(blob)
    assert (row["remote_state"], row["remote_verified"]) == ("mirrored", 1)
    view = await world.tier.view(blob)
    assert [p["index"] for p in view["parts"]] == [1, 2, 3]
    assert {p["remote_state"] for p in view["parts"]} == {"uploaded"}
    assert world.log.reports["mirror@n1"]["where"] == "n1"
    assert world.nodes.last("n1")["mirror_interval"] == 42.0
    events = [(e[1], e[3]["job"]) for e in world.log.entries]
    assert ("mirror", "mirror@n1") in events
    # Mirrored blobs leave the node's want-list.
    await world.tier.sync_once()
    assert world.nodes.last("n1")["mirror"] == []


@pytest_twisted.ensureDeferred
async def test_progress_without_verification_stays_mirroring(world: World) -> None:
    blob = await world.blob(1, on=("n1",))
    world.nodes.answer = mirrored_answer(parts=2, verified=False)
    await world.tier.sync_once()
    row = await world.row(blob)
    assert (row["remote_state"], row["remote_verified"]) == ("mirroring", 0)
    assert len((await world.tier.view(blob))["parts"]) == 2


@pytest_twisted.ensureDeferred
async def test_answers_about_blobs_not_asked_for_are_ignored(world: World) -> None:
    blob = await world.blob(1, on=("n1",))
    other = await world.blob(2, on=("n2",))
    sha_other = (await world.row(other))["sha256"]

    def liar(node: str, payload: dict[str, Any]) -> dict[str, Any]:
        answer = mirrored_answer()(node, payload)
        answer["mirror"].append({**answer["mirror"][0], "key": replica_key(other, sha_other)})
        return answer if node == "n1" else {}

    world.nodes.answer = liar
    await world.tier.sync_once()
    assert (await world.row(blob))["remote_state"] == "mirrored"
    assert (await world.row(other))["remote_state"] == "mirroring"  # n2 said nothing


@pytest_twisted.ensureDeferred
async def test_an_unreachable_node_does_not_stop_the_pass(world: World) -> None:
    a = await world.blob(1, on=("n1",))
    b = await world.blob(2, on=("n2",))
    world.nodes.down.add("n1")
    world.nodes.answer = mirrored_answer()
    result = await world.tier.sync_once()
    assert result["nodes"] == 2  # n2 and n3 answered
    assert (await world.row(a))["remote_state"] == "mirroring"
    assert (await world.row(b))["remote_state"] == "mirrored"


# ---------------------------------------------------------------- uncache and cache


async def mirrored_blob(world: World, seed: int = 1) -> int:
    blob = await world.blob(seed, on=("n1", "n2"))
    world.nodes.answer = mirrored_answer(parts=3)
    await world.tier.sync_once()
    assert (await world.row(blob))["remote_state"] == "mirrored"
    return blob


@pytest_twisted.ensureDeferred
async def test_uncache_is_refused_until_the_mirror_is_verified(world: World) -> None:
    blob = await world.blob(1, on=("n1", "n2"))
    with pytest.raises(Conflict, match="not mirrored"):
        await world.tier.uncache(blob)  # local
    world.nodes.answer = mirrored_answer(verified=False)
    await world.tier.sync_once()
    with pytest.raises(Conflict, match="not mirrored"):
        await world.tier.uncache(blob)  # mirroring, parts uploaded, not verified
    replicas = await world.db.run(nodestore.replicas_of, [blob])
    assert {r.node for r in replicas[blob]} == {"n1", "n2"}


@pytest_twisted.ensureDeferred
async def test_uncache_drops_every_replica_and_leaves_the_blob_remote(world: World) -> None:
    blob = await mirrored_blob(world)
    await world.tier.uncache(blob)
    assert (await world.row(blob))["remote_state"] == "remote"
    assert (await world.db.run(nodestore.replicas_of, [blob]))[blob] == []
    key = replica_key(blob, (await world.row(blob))["sha256"])
    queued = await world.db.run(lambda txn: txn.all("SELECT node, replica FROM replica_deletions"))
    assert sorted(queued) == [("n1", key), ("n2", key)]
    await world.tier.uncache(blob)  # again: nothing left to do, no error
    assert await world.tier.state_of(blob) == "remote"


@pytest_twisted.ensureDeferred
async def test_an_owner_cannot_uncache_content_another_account_still_uses(world: World) -> None:
    """Content stored before blobs were kept per owner may be in two accounts' files: only
    staff may release it; an owner may release content only their own files use."""
    blob = await mirrored_blob(world)

    def owners(txn: Txn) -> tuple[int, int]:
        ids = []
        for name, file_id in (("alice", "a" * 32), ("bob", "b" * 32)):
            user = store.create_user(txn, name, "", "x", False, NOW)
            assert user is not None
            txn.execute(
                "INSERT INTO files (id, owner_id, path, filename, current_version, created_at,"
                " updated_at) VALUES (?, ?, 'f.bin', 'f.bin', 1, ?, ?)",
                (file_id, user.id, NOW, NOW),
            )
            txn.execute(
                "INSERT INTO versions (file_id, number, blob_id, filename, created_at)"
                " VALUES (?, 1, ?, 'f.bin', ?)",
                (file_id, blob, NOW),
            )
            ids.append(user.id)
        return ids[0], ids[1]

    alice, bob = await world.db.run(owners)
    for owner in (alice, bob):
        with pytest.raises(Conflict, match="files of another account still use it"):
            await world.tier.uncache(blob, owner)
    assert len((await world.db.run(nodestore.replicas_of, [blob]))[blob]) == 2
    await world.db.run(
        lambda txn: txn.execute("DELETE FROM versions WHERE file_id = ?", ("b" * 32,))
    )
    await world.tier.uncache(blob, alice)  # now only hers
    assert (await world.row(blob))["remote_state"] == "remote"


@pytest_twisted.ensureDeferred
async def test_cache_queues_one_restore_and_a_second_request_joins_it(world: World) -> None:
    blob = await mirrored_blob(world)
    assert await world.tier.cache(blob) == "mirrored"  # still on nodes: nothing to do
    await world.tier.uncache(blob)
    assert await world.tier.cache(blob) == "restoring"
    assert await world.tier.cache(blob) == "restoring"
    queued = [e for e in world.log.entries if e[1] == "restore"]
    assert len(queued) == 1


@pytest_twisted.ensureDeferred
async def test_a_restore_goes_to_one_node_with_every_part_and_ends_as_a_replica(
    world: World,
) -> None:
    blob = await mirrored_blob(world)
    await world.tier.uncache(blob)
    await world.tier.cache(blob)
    progress: dict[str, Any] = {"state": "restoring", "parts_restored": 1}

    def restorer(node: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"restore": [{"key": r["key"], "parts_total": 3, "detail": "", **progress}
                            for r in payload["restore"]]}  # fmt: skip

    world.nodes.answer = restorer
    await world.tier.sync_once()
    asked = [(n, p["restore"]) for n, p in world.nodes.sent[-3:] if p["restore"]]
    assert len(asked) == 1
    node, (task,) = asked[0]
    assert [p["index"] for p in task["parts"]] == [1, 2, 3]
    assert all(len(p["sha256"]) == 64 for p in task["parts"])
    view = await world.tier.view(blob)
    assert (view["remote_state"], view["restore"]["parts_restored"]) == ("restoring", 1)
    assert view["restore"]["node"] == node
    # The uncache queued deletions on both nodes; the restoring node's is cancelled.
    key = replica_key(blob, (await world.row(blob))["sha256"])
    queued = await world.db.run(lambda txn: txn.all("SELECT node, replica FROM replica_deletions"))
    assert sorted(queued) == sorted((n, key) for n in ("n1", "n2") if n != node)
    progress.update(state="restored", parts_restored=3)
    await world.tier.sync_once()
    row = await world.row(blob)
    assert (row["remote_state"], row["restore_node"]) == ("mirrored", None)
    replicas = (await world.db.run(nodestore.replicas_of, [blob]))[blob]
    assert [(r.node, r.state) for r in replicas] == [(node, CONFIRMED)]


@pytest_twisted.ensureDeferred
async def test_a_failed_restore_leaves_the_blob_remote_and_says_why(world: World) -> None:
    blob = await mirrored_blob(world)
    await world.tier.uncache(blob)
    await world.tier.cache(blob)

    def corrupt(node: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"restore": [{"key": r["key"], "state": "failed", "parts_restored": 1,
                             "parts_total": 3, "detail": "part 2: sha256 mismatch"}
                            for r in payload["restore"]]}  # fmt: skip

    world.nodes.answer = corrupt
    await world.tier.sync_once()
    row = await world.row(blob)
    assert row["remote_state"] == "remote"
    assert "part 2: sha256 mismatch" in row["restore_detail"]
    assert (await world.db.run(nodestore.replicas_of, [blob]))[blob] == []
    assert any(e[0] == "error" and e[1] == "restore" for e in world.log.entries)
    # A new request tries again.
    assert await world.tier.cache(blob) == "restoring"


@pytest_twisted.ensureDeferred
async def test_a_blob_without_known_part_checksums_is_not_restored_blind(world: World) -> None:
    blob = await mirrored_blob(world)
    await world.tier.uncache(blob)
    await world.db.run(lambda txn: txn.execute("UPDATE blob_parts SET sha256 = NULL"))
    await world.tier.cache(blob)
    await world.tier.sync_once()
    row = await world.row(blob)
    assert row["remote_state"] == "remote"
    assert "checksums are not known" in row["restore_detail"]
    assert all(p["restore"] == [] for _, p in world.nodes.sent[-3:])


@pytest_twisted.ensureDeferred
async def test_a_restore_on_a_node_lost_past_grace_moves_to_another(world: World) -> None:
    blob = await mirrored_blob(world)
    await world.tier.uncache(blob)
    await world.tier.cache(blob)
    await world.tier.sync_once()
    first = (await world.row(blob))["restore_node"]
    assert first is not None
    await world.node_down_since(first, world.clock.seconds())
    world.clock.advance(GRACE + 1)
    await world.tier.sync_once()
    second = (await world.row(blob))["restore_node"]
    assert second not in (None, first)


# ---------------------------------------------------------------- S3 objects of deleted files


async def file_of(world: World, blob_id: int, name: str = "f.bin") -> str:
    def add(txn: Txn) -> str:
        txn.execute(
            "INSERT INTO users (username, password_hash, created_at) VALUES (?, 'x', 0)"
            " ON CONFLICT (username) DO NOTHING",
            ("owner",),
        )
        owner = int(txn.scalar("SELECT id FROM users WHERE username = 'owner'"))
        row = txn.one("SELECT sha256, md5, size FROM blobs WHERE id = ?", (blob_id,))
        assert row is not None
        blob = store.Blob(blob_id, row[0], row[1], int(row[2]))
        file_id, _ = store.add_version(txn, owner, None, f"{blob_id:032x}", name, blob, NOW)
        return file_id

    return await world.db.run(add)


@pytest_twisted.ensureDeferred
async def test_deleting_a_mirrored_file_queues_its_object_and_a_local_one_does_not(
    world: World,
) -> None:
    mirrored = await mirrored_blob(world)
    local = await world.blob(2)
    sha = (await world.row(mirrored))["sha256"]
    for blob in (mirrored, local):
        file_id = await file_of(world, blob, f"{blob}.bin")
        await world.db.run(store.delete_file, file_id, NOW)
    queued = await world.db.run(lambda txn: txn.all("SELECT object_key FROM s3_deletions"))
    assert queued == [(f"pa/{sha}",)]
    parts = await world.db.run(lambda txn: txn.scalar("SELECT COUNT(*) FROM blob_parts"))
    assert parts == 0


def test_retry_delay_of_s3_deletions_grows_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 11, 21)] == [5.0, 10.0, 20.0, 600.0, 600.0]


@pytest_twisted.ensureDeferred
async def test_the_same_content_uploaded_again_brings_a_remote_or_lost_blob_back(
    world: World,
) -> None:
    remote = await mirrored_blob(world, 1)
    await world.tier.uncache(remote)
    lost = await world.blob(2)
    await world.db.run(
        lambda txn: txn.execute("UPDATE blobs SET remote_state = 'lost' WHERE id = ?", (lost,))
    )
    here = await world.blob(3, on=("n1",))
    revived = {b: await world.db.run(store.revive_blob, b) for b in (remote, lost, here)}
    assert revived == {remote: True, lost: True, here: False}
    row = await world.row(remote)
    assert (row["remote_state"], row["remote_verified"]) == ("mirrored", 1)  # still in S3
    row = await world.row(lost)
    assert (row["remote_state"], row["remote_verified"]) == ("local", 0)  # mirrored again
    locals_ = await world.db.run(
        lambda txn: txn.all("SELECT id, local FROM blobs WHERE id IN (?, ?)", (remote, lost))
    )
    assert sorted((int(a), int(b)) for a, b in locals_) == sorted([(remote, 1), (lost, 1)])


async def deleted_after_mirroring(world: World, server: S3Server) -> tuple[Any, Any, int, str]:
    """A mirrored blob with its object in a real bucket, whose only file is then deleted."""
    world.settings[0] = settings = server.bucket(prefix="pa")
    client = server.client(settings)
    blob = await mirrored_blob(world)
    sha = (await world.row(blob))["sha256"]
    client.put_object(Bucket=settings.bucket, Key=f"pa/{sha}", Body=b"mirrored bytes")
    await world.db.run(store.delete_file, await file_of(world, blob), NOW)
    return settings, client, blob, sha


@pytest_twisted.ensureDeferred
async def test_s3_objects_of_deleted_files_are_removed_and_retried_while_s3_is_away(
    world: World,
) -> None:
    server = S3Server().start()
    try:
        settings, client, _, sha = await deleted_after_mirroring(world, server)

        server.stop()  # S3 is away when the deletion is due
        assert await world.tier.clean_once() == {"removed": 0, "failed": 1}
        row = await world.db.run(
            lambda txn: txn.one("SELECT attempts, next_attempt_at, detail FROM s3_deletions")
        )
        assert row is not None and (row[0], row[1]) == (1, NOW + retry_delay(1))
        assert row[2]  # the error is kept for staff

        server.start()
        assert await world.tier.clean_once() == {"removed": 0, "failed": 0}  # not due yet
        client.head_object(Bucket=settings.bucket, Key=f"pa/{sha}")  # still there
        world.clock.advance(retry_delay(1))
        assert await world.tier.clean_once() == {"removed": 1, "failed": 0}
        with pytest.raises(client.exceptions.ClientError):
            client.head_object(Bucket=settings.bucket, Key=f"pa/{sha}")
        assert await world.db.run(lambda txn: txn.all("SELECT * FROM s3_deletions")) == []
    finally:
        server.close()


@pytest_twisted.ensureDeferred
async def test_an_object_whose_content_was_uploaded_again_is_kept(world: World) -> None:
    server = S3Server().start()
    try:
        settings, client, blob, sha = await deleted_after_mirroring(world, server)
        again = await world.blob(1)  # the same bytes, a new blob row
        assert again != blob
        assert await world.tier.clean_once() == {"removed": 0, "failed": 0}
        client.head_object(Bucket=settings.bucket, Key=f"pa/{sha}")  # kept for the new blob
        assert await world.db.run(lambda txn: txn.all("SELECT * FROM s3_deletions")) == []
    finally:
        server.close()
