"""Staff-only live events (issue 12): node status seen by the monitor, nodes staff change, and
job runs reach every active staff account's feed and nobody else's; a job every few seconds
is announced only when its outcome changes; demotion drops what staff were told. On SQLite
and PostgreSQL, with the scheduler and monitor on a ``task.Clock``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted

from common.db import Database, parse_database_url
from proxy.catalog import store
from proxy.catalog.users import change_txn
from proxy.cluster import nodestore
from proxy.cluster.admin import NodeAdmin
from proxy.cluster.monitor import NodeMonitor
from proxy.events import eventstore, kinds
from proxy.migrations import migrate
from proxy.ops.jobs import JobScheduler
from proxy.ops.systemlog import SystemLog
from tests.conftest import RunningProxy
from tests.test_jobs_log import NOW, Counter, StubHealth, clock_at
from tests.test_nodes_api import call, staff_token


class Woken:
    """The hub as recording code sees it: remembers whom it was told to wake."""

    def __init__(self) -> None:
        self.users: list[int] = []

    def wake(self, user_ids: Any) -> None:
        self.users.extend(sorted(user_ids))


@pytest_twisted.async_yield_fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(parse_database_url(database_url))
    await database.run(migrate)
    yield database
    database.close()


async def people(db: Database) -> dict[str, int]:
    """Two staff accounts, one disabled staff account and one ordinary user: their ids."""
    ids: dict[str, int] = {}
    for name, staff in (("boss", True), ("deputy", True), ("gone", True), ("alice", False)):
        made = await db.run(store.create_user, name, "", "x", staff, NOW)
        assert made is not None
        ids[name] = made.id
    await db.run(change_txn, "gone", {"is_active": False})
    return ids


async def feed(db: Database, user_id: int) -> list[tuple[str, dict[str, Any]]]:
    found = await db.run(eventstore.read_since, user_id, 0, 100)
    return [(event.type, event.data) for event in found.events]


@pytest_twisted.ensureDeferred
async def test_the_monitor_tells_active_staff_when_a_node_goes_up_or_down(db: Database) -> None:
    ids = await people(db)
    clock = clock_at()
    await db.run(nodestore.add_node, "n1", "http://127.0.0.1:9", "rsync://127.0.0.1:9/r", "a", NOW)
    client, woken = StubHealth(), Woken()
    monitor = NodeMonitor(
        db=db, client=client, clock=clock, down_after=1, syslog=SystemLog(db, clock), waker=woken
    )
    await monitor.run_once()  # unknown -> down
    await monitor.run_once()  # still down: nothing new
    client.up = True
    await monitor.run_once()  # down -> up
    await monitor.run_once()  # still up: nothing new
    told = [
        (kinds.NODE_STATUS, {"node": "n1", "status": "down", "was": "unknown"}),
        (kinds.NODE_STATUS, {"node": "n1", "status": "up", "was": "down"}),
    ]
    assert await feed(db, ids["boss"]) == told
    assert await feed(db, ids["deputy"]) == told
    assert await feed(db, ids["gone"]) == []  # disabled
    assert await feed(db, ids["alice"]) == []  # not staff
    assert woken.users == [ids["boss"], ids["deputy"]] * 2  # woken once per change


@pytest_twisted.ensureDeferred
async def test_staff_changing_nodes_tell_every_staff_account(db: Database) -> None:
    ids = await people(db)
    admin = NodeAdmin(db=db, clock=clock_at(), waker=Woken())
    await admin.add({"name": "n2", "url": "http://127.0.0.1:9", "rsync_url": "rsync://h:1/r"})
    await admin.update("n2", {"state": "draining"})
    await admin.update("n2", {"state": "active"})
    await admin.update("n2", {"zone": "b"})
    await admin.remove("n2")
    changes = [data["change"] for kind, data in await feed(db, ids["deputy"])]
    assert changes == ["added", "drained", "reactivated", "moved", "removed"]
    assert await feed(db, ids["alice"]) == []


@pytest_twisted.ensureDeferred
async def test_slow_jobs_and_runs_staff_ask_for_are_announced_frequent_ones_on_change(
    db: Database,
) -> None:
    ids = await people(db)
    clock = clock_at()
    scheduler = JobScheduler(db, clock, SystemLog(db, clock), waker=Woken())
    slow, quick = Counter({"done": 1}), Counter()
    scheduler.add("backup", slow, 3600.0, now=False)
    scheduler.add("ping", quick, 1.0, now=False)
    await scheduler.start()
    clock.advance(1)
    await scheduler.idle()  # one quick run, never announced
    assert quick.calls == 1 and await feed(db, ids["boss"]) == []

    quick.fail_with = RuntimeError("node unreachable")
    clock.advance(1)
    await scheduler.idle()  # it failed: its outcome changed
    clock.advance(1)
    await scheduler.idle()  # failed again: nothing new
    await scheduler.run_now("ping")  # asked for by staff: announced
    await scheduler.run_now("backup")  # slow
    scheduler.stop()
    told = [(kind, data.get("job"), data.get("ok")) for kind, data in await feed(db, ids["boss"])]
    assert told == [
        (kinds.JOB_FINISHED, "ping", False),
        (kinds.JOB_STARTED, "ping", None),
        (kinds.JOB_FINISHED, "ping", False),
        (kinds.JOB_STARTED, "backup", None),
        (kinds.JOB_FINISHED, "backup", True),
    ]
    finished = (await feed(db, ids["deputy"]))[-1][1]
    assert finished["result"] and finished["duration"] == 0.0
    assert await feed(db, ids["alice"]) == []


@pytest_twisted.ensureDeferred
async def test_demotion_drops_what_staff_were_told_and_keeps_the_rest(db: Database) -> None:
    ids = await people(db)
    admin = NodeAdmin(db=db, clock=clock_at(), waker=Woken())
    await admin.add({"name": "n3", "url": "http://127.0.0.1:9", "rsync_url": "rsync://h:1/r"})
    await db.run(
        lambda txn: eventstore.record(txn, ids["deputy"], kinds.FILE_DELETED, {"file_id": "f"}, NOW)
    )
    await db.run(change_txn, "deputy", {"is_staff": False})
    assert await feed(db, ids["deputy"]) == [(kinds.FILE_DELETED, {"file_id": "f"})]
    await admin.remove("n3")  # no longer staff: not told
    assert await feed(db, ids["deputy"]) == [(kinds.FILE_DELETED, {"file_id": "f"})]
    assert [data["change"] for _, data in await feed(db, ids["boss"])] == ["added", "removed"]


@pytest_twisted.ensureDeferred
async def test_over_http_staff_long_poll_sees_a_node_added_and_a_user_does_not(
    running_proxy: RunningProxy,
) -> None:
    token = await staff_token(running_proxy)
    alice = await running_proxy.register_and_login()
    status, start = await call(running_proxy, "GET", "/api/changes", token)
    assert status == 200
    _, alice_start = await call(running_proxy, "GET", "/api/changes", alice)
    added = {"name": "n4", "url": "http://127.0.0.1:9", "rsync_url": "rsync://127.0.0.1:9/r"}
    status, _ = await call(running_proxy, "POST", "/api/nodes/", token, added)
    assert status == 201
    status, changes = await call(
        running_proxy, "GET", f"/api/changes?since={start['last_id']}&timeout=5", token
    )
    assert status == 200
    assert [(e["type"], e["data"]) for e in changes["events"]][:1] == [
        ("node.changed", {"node": "n4", "change": "added"})
    ]
    status, nothing = await call(
        running_proxy, "GET", f"/api/changes?since={alice_start['last_id']}&timeout=0", alice
    )
    assert status == 200 and nothing["events"] == []
