"""Jobs and the system log: the scheduler on a real database with time from ``task.Clock``
(runs, failures, no overlap, intervals that survive a restart, jobs on nodes), the system log's
filters and pruning, what other parts record in it (node up/down, failed logins), and the
staff-only routes on a real proxy. Every database test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import doctest
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from common.db import Database, parse_database_url
from common.errors import BadRequest, Conflict, NotFound
from proxy.cluster import nodestore
from proxy.cluster.monitor import NodeMonitor
from proxy.migrations import migrate
from proxy.ops import jobrules, systemlog
from proxy.ops.jobs import JobScheduler, parse_interval
from proxy.ops.systemlog import SystemLog, parse_log_query
from tests.conftest import RunningProxy, auth, proxy_with
from tests.contract_check import declared_routes
from tests.nodefakes import UnplayedNodeApi
from tests.test_nodes_api import call, staff_token

NOW = 1_800_000_000.0


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


class Counter:
    """A job's work: counts its runs, fails while told to, and can be held mid-run."""

    def __init__(self, result: Any = None) -> None:
        self.calls = 0
        self.fail_with: Exception | None = None
        self.hold = False
        self.held: list[Deferred[None]] = []
        self.result = result

    async def __call__(self) -> Any:
        self.calls += 1
        if self.hold:
            gate: Deferred[None] = Deferred()
            self.held.append(gate)
            await gate
        if self.fail_with is not None:
            raise self.fail_with
        return self.result

    def release(self) -> None:
        gates, self.held = self.held, []
        for gate in gates:
            gate.callback(None)


async def listed(scheduler: JobScheduler, name: str) -> dict[str, Any]:
    [job] = [job for job in await scheduler.list() if job["name"] == name]
    return job


async def entries(syslog: SystemLog, **asked: Any) -> list[dict[str, Any]]:
    return await syslog.query(**asked)


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("module", [jobrules, systemlog], ids=lambda m: m.__name__)
def test_the_examples_in_the_docstrings_hold(module: Any) -> None:
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0


@pytest.mark.parametrize("bad", [0, -5, 30 * 86400 + 1, "soon", "", True, float("nan"), [60]])
def test_an_interval_out_of_range_or_unreadable_is_refused(bad: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_interval(bad)
    assert caught.value.extra == {"field": "interval"}


def test_an_interval_may_be_seconds_a_duration_or_null() -> None:
    assert parse_interval(1) == 1.0
    assert parse_interval(0.5) == 0.5
    assert parse_interval("90") == 90.0
    assert parse_interval("1h") == 3600.0
    assert parse_interval(30 * 86400) == 30 * 86400.0
    assert parse_interval(None) is None


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "-5"}, "since"),
        ({"since": "nan"}, "since"),
        ({"level": "loud"}, "level"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
def test_a_malformed_log_query_names_the_field(args: dict[str, str], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_log_query(args)
    assert caught.value.extra == {"field": field}


def test_since_takes_iso_times_in_any_zone_and_unix_seconds() -> None:
    assert parse_log_query({"since": "2027-01-15T08:00:00Z"}).since == NOW
    assert parse_log_query({"since": "2027-01-15T08:00:00"}).since == NOW  # UTC if unsaid
    assert parse_log_query({"since": "2027-01-15T10:00:00+02:00"}).since == NOW
    assert parse_log_query({"since": str(NOW)}).since == NOW
    assert parse_log_query({}) == systemlog.LogQuery(None, None, None, 200)


# ---------------------------------------------------------------- the scheduler


@pytest_twisted.ensureDeferred
async def test_a_job_runs_at_start_then_every_interval_and_each_run_is_recorded(
    db: Database,
) -> None:
    clock = clock_at()
    work = Counter({"checked": 3})
    scheduler = JobScheduler(db, clock, SystemLog(db, clock))
    scheduler.add("count", work, 10.0, description="counts")
    await scheduler.start()
    await scheduler.idle()
    assert work.calls == 1
    job = await listed(scheduler, "count")
    assert job == {
        "name": "count",
        "description": "counts",
        "interval": 10.0,
        "last_run": "2027-01-15T08:00:00Z",
        "last_duration": 0.0,
        "last_ok": True,
        "last_result": '{"checked": 3}',
        "next_run": "2027-01-15T08:00:10Z",
        "running": False,
        "where": "proxy",
    }
    clock.advance(9.9)
    assert work.calls == 1
    clock.advance(0.1)
    await scheduler.idle()
    assert work.calls == 2
    assert (await listed(scheduler, "count"))["last_run"] == "2027-01-15T08:00:10Z"
    stored = await db.run(lambda txn: txn.one("SELECT last_run, last_ok, next_run FROM jobs"))
    assert stored == (NOW + 10, 1, NOW + 20)
    scheduler.stop()


@pytest_twisted.ensureDeferred
async def test_a_job_added_without_now_waits_one_interval(db: Database) -> None:
    clock = clock_at()
    work = Counter()
    scheduler = JobScheduler(db, clock, SystemLog(db, clock))
    scheduler.add("later", work, 600.0, now=False)
    await scheduler.start()
    assert work.calls == 0
    assert (await listed(scheduler, "later"))["next_run"] == "2027-01-15T08:10:00Z"
    clock.advance(600)
    await scheduler.idle()
    assert work.calls == 1
    scheduler.stop()


@pytest_twisted.ensureDeferred
async def test_a_failing_job_is_recorded_and_its_loop_goes_on(db: Database) -> None:
    clock = clock_at()
    syslog = SystemLog(db, clock)
    work = Counter()
    work.fail_with = RuntimeError("bucket unreachable")
    scheduler = JobScheduler(db, clock, syslog)
    scheduler.add("flaky", work, 5.0)
    await scheduler.start()
    await scheduler.idle()
    job = await listed(scheduler, "flaky")
    assert (job["last_ok"], job["last_result"]) == (False, "RuntimeError: bucket unreachable")
    clock.advance(5)
    await scheduler.idle()
    assert work.calls == 2  # the loop did not die
    work.fail_with = None
    clock.advance(5)
    await scheduler.idle()
    assert work.calls == 3
    job = await listed(scheduler, "flaky")
    assert (job["last_ok"], job["last_result"]) == (True, "")
    logged = await entries(syslog, job="flaky")
    assert [e["event"] for e in logged] == ["job.recovered", "job.failed", "job.failed"]
    failed = logged[-1]
    assert failed["level"] == "error"
    assert failed["data"]["result"] == "RuntimeError: bucket unreachable"
    assert "bucket unreachable" in failed["message"]
    scheduler.stop()


@pytest_twisted.ensureDeferred
async def test_successful_runs_of_frequent_jobs_stay_out_of_the_system_log(
    db: Database,
) -> None:
    clock = clock_at()
    syslog = SystemLog(db, clock)
    scheduler = JobScheduler(db, clock, syslog)
    scheduler.add("often", Counter(), 5.0)
    scheduler.add("daily", Counter({"done": 1}), 86400.0)
    await scheduler.start()
    await scheduler.idle()
    clock.advance(5)
    await scheduler.idle()
    assert await entries(syslog, job="often") == []
    [daily] = await entries(syslog, job="daily")
    assert (daily["event"], daily["level"], daily["data"]["result"]) == (
        "job.finished",
        "info",
        '{"done": 1}',
    )
    scheduler.stop()


@pytest_twisted.ensureDeferred
async def test_a_run_never_overlaps_itself_and_run_now_joins_the_run_in_progress(
    db: Database,
) -> None:
    clock = clock_at()
    work = Counter({"n": 1})
    work.hold = True
    scheduler = JobScheduler(db, clock, SystemLog(db, clock))
    scheduler.add("slow", work, 10.0)
    await scheduler.start()
    assert work.calls == 1
    clock.advance(35)  # three ticks pass while the first run is held
    assert work.calls == 1
    assert (await listed(scheduler, "slow"))["running"] is True
    joined = defer.ensureDeferred(scheduler.run_now("slow"))
    also = defer.ensureDeferred(scheduler.run_now("slow"))
    assert work.calls == 1 and not joined.called
    work.release()
    first, second = await joined, await also
    assert (first.ok, first.result) == (True, {"n": 1})
    assert second is first
    assert work.calls == 1
    assert (await listed(scheduler, "slow"))["running"] is False
    clock.advance(5)  # the loop keeps to its own multiples of 10 s: next at 40
    assert work.calls == 2
    work.hold = False
    work.release()
    await scheduler.idle()
    outcome = await scheduler.run_now("slow")  # idle now: a run of its own
    assert (work.calls, outcome.ok) == (3, True)
    scheduler.stop()


@pytest_twisted.ensureDeferred
async def test_run_now_runs_a_job_between_ticks_and_reports_a_failure(db: Database) -> None:
    clock = clock_at()
    work = Counter()
    scheduler = JobScheduler(db, clock, SystemLog(db, clock))
    scheduler.add("once", work, 3600.0, now=False)
    await scheduler.start()
    work.fail_with = ValueError("no such bucket")
    outcome = await scheduler.run_now("once")
    assert (outcome.ok, outcome.text) == (False, "ValueError: no such bucket")
    assert work.calls == 1
    assert (await listed(scheduler, "once"))["next_run"] == "2027-01-15T09:00:00Z"
    with pytest.raises(NotFound):
        await scheduler.run_now("nothing")
    scheduler.stop()


@pytest_twisted.ensureDeferred
async def test_a_changed_interval_restarts_the_loop_and_survives_a_new_scheduler(
    db: Database,
) -> None:
    clock = clock_at()
    work = Counter()
    scheduler = JobScheduler(db, clock, SystemLog(db, clock))
    scheduler.add("tick", work, 10.0)
    await scheduler.start()
    await scheduler.idle()
    changed = await scheduler.set_interval("tick", 60.0)
    assert (changed["interval"], changed["next_run"]) == (60.0, "2027-01-15T08:01:00Z")
    clock.advance(30)
    assert work.calls == 1  # the old 10 s loop is gone
    clock.advance(30)
    await scheduler.idle()
    assert work.calls == 2
    scheduler.stop()

    again = JobScheduler(db, clock, SystemLog(db, clock))
    again.add("tick", Counter(), 10.0)  # the configured default
    await again.start()
    await again.idle()
    assert (await listed(again, "tick"))["interval"] == 60.0
    assert again.interval_of("tick") == 60.0
    assert (await listed(again, "tick"))["last_ok"] is True  # the last run is remembered
    reset = await again.set_interval("tick", None)  # back to the default
    assert reset["interval"] == 10.0
    again.stop()

    third = JobScheduler(db, clock, SystemLog(db, clock))
    third.add("tick", Counter(), 15.0)  # a new configured default is honoured
    await third.start()
    await third.idle()
    assert (await listed(third, "tick"))["interval"] == 15.0
    third.stop()


@pytest_twisted.ensureDeferred
async def test_a_job_added_after_start_runs_too(db: Database) -> None:
    clock = clock_at()
    scheduler = JobScheduler(db, clock, SystemLog(db, clock))
    await scheduler.start()
    late = Counter()
    scheduler.add("late", late, 10.0)
    for _ in range(100):
        if late.calls:
            break
        await treq_pause()
    await scheduler.idle()
    assert late.calls == 1
    with pytest.raises(ValueError):
        scheduler.add("late", late, 10.0)
    with pytest.raises(ValueError):
        scheduler.add("bad", late, 0.0)
    scheduler.stop()


async def treq_pause() -> None:
    """Let the reactor turn once (for work that waits on a database thread)."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_jobs_on_nodes_are_listed_timed_by_staff_and_not_run_from_the_proxy(
    db: Database,
) -> None:
    clock = clock_at()
    scheduler = JobScheduler(db, clock, SystemLog(db, clock))
    await scheduler.start()
    assert scheduler.interval_of("mirror@node1") is None
    scheduler.report_remote(
        "mirror@node1",
        {"name": "mirror", "interval": 30.0, "running": True, "last_run": NOW - 30,
         "last_duration": 1.23456, "last_ok": True, "last_result": "3 parts uploaded",
         "next_run": NOW + 10, "where": "node1"},
    )  # fmt: skip
    assert await scheduler.list() == [
        {
            "name": "mirror@node1",
            "description": "the mirror loop of storage node node1",
            "interval": 30.0,
            "last_run": "2027-01-15T07:59:30Z",
            "last_duration": 1.235,
            "last_ok": True,
            "last_result": "3 parts uploaded",
            "next_run": "2027-01-15T08:00:10Z",
            "running": True,
            "where": "node1",
        }
    ]
    assert scheduler.interval_of("mirror@node1") is None  # the node keeps its own
    changed = await scheduler.set_interval("mirror@node1", 120.0)
    assert changed["interval"] == 120.0
    assert scheduler.interval_of("mirror@node1") == 120.0
    with pytest.raises(Conflict) as caught:
        await scheduler.run_now("mirror@node1")
    assert "runs on node node1" in caught.value.detail and "120 s" in caught.value.detail
    with pytest.raises(NotFound):
        await scheduler.set_interval("mirror@node9", 60.0)
    scheduler.stop()

    again = JobScheduler(db, clock, SystemLog(db, clock))
    await again.start()
    assert again.interval_of("mirror@node1") == 120.0  # before the node reports again
    assert [job["name"] for job in await again.list()] == ["mirror@node1"]
    again.stop()


# ---------------------------------------------------------------- the system log


@pytest_twisted.ensureDeferred
async def test_the_system_log_filters_by_level_time_and_job_newest_first(db: Database) -> None:
    clock = clock_at()
    syslog = SystemLog(db, clock)
    await syslog.record("debug", "x.debug", "detail", job="scrub")
    clock.advance(10)
    await syslog.record("info", "x.info", "fine", job="scrub", checked=3)
    clock.advance(10)
    await syslog.record("warn", "x.warn", "hmm")
    clock.advance(10)
    await syslog.record("error", "x.error", "bad", job="scrub")
    events = lambda found: [e["event"] for e in found]  # noqa: E731
    assert events(await syslog.query()) == ["x.error", "x.warn", "x.info", "x.debug"]
    assert events(await syslog.query(level="warn")) == ["x.error", "x.warn"]
    assert events(await syslog.query(level="info", job="scrub")) == ["x.error", "x.info"]
    assert events(await syslog.query(since=NOW + 10)) == ["x.error", "x.warn", "x.info"]
    assert events(await syslog.query(limit=2)) == ["x.error", "x.warn"]
    [info] = [e for e in await syslog.query(job="scrub") if e["event"] == "x.info"]
    assert info == {
        "id": info["id"],
        "at": "2027-01-15T08:00:10Z",
        "level": "info",
        "event": "x.info",
        "job": "scrub",
        "message": "fine",
        "data": {"checked": 3},
    }


@pytest_twisted.ensureDeferred
async def test_recording_hides_secret_sounding_data_and_never_raises(db: Database) -> None:
    clock = clock_at()
    syslog = SystemLog(db, clock)
    await syslog.record("warn", "x", "m", secret_key="abc123", password="hunter2", node="n1")
    [entry] = await syslog.query()
    assert entry["data"] == {"secret_key": "[hidden]", "password": "[hidden]", "node": "n1"}
    await syslog.record("loud", "x", "an unknown level is dropped, not raised")
    assert len(await syslog.query()) == 1


@pytest_twisted.ensureDeferred
async def test_pruning_drops_entries_older_than_the_retention(db: Database) -> None:
    clock = clock_at()
    syslog = SystemLog(db, clock)
    await syslog.record("info", "old", "from long ago")
    clock.advance(31 * 86400)
    await syslog.record("info", "new", "today")
    assert await syslog.prune(30 * 86400) == 1
    assert [e["event"] for e in await syslog.query()] == ["new"]


class StubHealth(UnplayedNodeApi):
    """The node client's /health, answered or refused as the test says."""

    def __init__(self) -> None:
        self.up = False

    async def health(self, url: str) -> dict[str, Any]:
        if not self.up:
            raise ConnectionRefusedError(url)
        return {"status": "ok", "free_bytes": 10, "total_bytes": 20}


@pytest_twisted.ensureDeferred
async def test_node_down_and_up_transitions_are_recorded(db: Database) -> None:
    clock = clock_at()
    syslog = SystemLog(db, clock)
    await db.run(nodestore.add_node, "n1", "http://127.0.0.1:9", "rsync://127.0.0.1:9/r", "a", NOW)
    client = StubHealth()
    monitor = NodeMonitor(db=db, client=client, clock=clock, down_after=2, syslog=syslog)
    await monitor.run_once()  # never seen: down at once
    await monitor.run_once()  # still down: no new entry
    client.up = True
    clock.advance(10)
    await monitor.run_once()
    client.up = False
    clock.advance(10)
    await monitor.run_once()  # one miss is not down yet
    clock.advance(10)
    await monitor.run_once()
    found = [(e["event"], e["level"], e["message"], e["data"]) for e in await syslog.query()]
    assert found == [
        ("node.down", "warn", "node n1 is down", {"node": "n1", "was": "up"}),
        ("node.up", "info", "node n1 is up", {"node": "n1", "was": "down"}),
        ("node.down", "warn", "node n1 is down", {"node": "n1", "was": "unknown"}),
    ]


# ---------------------------------------------------------------- over HTTP


JOB_ROUTES = declared_routes("/api/jobs/", "/api/system-log/", name="scrub")


@pytest_twisted.ensureDeferred
async def test_the_job_and_log_routes_need_a_token_and_staff(running_proxy: RunningProxy) -> None:
    alice = await running_proxy.register_and_login()
    for method, path, body in JOB_ROUTES:
        assert (await call(running_proxy, method, path, None, body))[0] == 401, path
        code, error = await call(running_proxy, method, path, alice, body)
        assert (code, error) == (403, {"detail": "Staff only"}), (method, path)


@pytest_twisted.ensureDeferred
async def test_staff_see_the_proxy_jobs_and_run_one_now(running_proxy: RunningProxy) -> None:
    boss = await staff_token(running_proxy)
    code, listing = await call(running_proxy, "GET", "/api/jobs/", boss)
    assert code == 200
    names = [job["name"] for job in listing]
    assert names == sorted(names)
    builtin = {"expire-uploads", "node-monitor", "replication", "scrub"}
    assert builtin <= set(names)
    assert {job["where"] for job in listing if job["name"] in builtin} == {"proxy"}
    scrub = next(j for j in listing if j["name"] == "scrub")
    assert (scrub["interval"], scrub["last_run"]) == (86400.0, None)
    assert scrub["description"]
    code, ran = await call(running_proxy, "POST", "/api/jobs/scrub/run", boss)
    assert (code, ran) == (
        200,
        {"job": "scrub", "ok": True, "result": {"checked": 0, "corrupt": 0, "unreachable": 0}},
    )
    code, listing = await call(running_proxy, "GET", "/api/jobs/", boss)
    scrub = next(j for j in listing if j["name"] == "scrub")
    assert scrub["last_ok"] is True and scrub["last_run"] is not None
    assert json.loads(scrub["last_result"]) == ran["result"]
    code, logged = await call(running_proxy, "GET", "/api/system-log/?job=scrub", boss)
    assert code == 200
    assert [e["event"] for e in logged] == ["job.finished"]
    code, error = await call(running_proxy, "POST", "/api/jobs/nothing/run", boss)
    assert code == 404 and "scrub" in error["detail"]


@pytest_twisted.ensureDeferred
async def test_changing_an_interval_is_checked(running_proxy: RunningProxy) -> None:
    boss = await staff_token(running_proxy)
    for bad in ({"interval": 0}, {"interval": -1}, {"interval": 31 * 86400}, {"interval": "x"},
                {}):  # fmt: skip
        code, error = await call(running_proxy, "PATCH", "/api/jobs/scrub/", boss, bad)
        assert (code, error.get("field")) == (400, "interval"), bad
    code, error = await call(running_proxy, "PATCH", "/api/jobs/scrub/", boss, {"every": 5})
    assert (code, error["fields"]) == (400, ["every"])
    code, _ = await call(running_proxy, "PATCH", "/api/jobs/nothing/", boss, {"interval": 60})
    assert code == 404
    code, job = await call(running_proxy, "PATCH", "/api/jobs/scrub/", boss, {"interval": "2h"})
    assert (code, job["name"], job["interval"]) == (200, "scrub", 7200.0)


@pytest_twisted.ensureDeferred
async def test_a_changed_interval_survives_a_proxy_rebuild(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(database_url, tmp_path / "proxy") as first:
        boss = await staff_token(first)
        code, _ = await call(first, "PATCH", "/api/jobs/scrub/", boss, {"interval": 3600})
        assert code == 200
    async with proxy_with(database_url, tmp_path / "proxy") as second:
        boss = await staff_token(second)
        code, listing = await call(second, "GET", "/api/jobs/", boss)
        intervals = {job["name"]: job["interval"] for job in listing}
        assert intervals["scrub"] == 3600.0
        assert intervals["node-monitor"] == 10.0  # untouched jobs keep the configured value


@pytest_twisted.ensureDeferred
async def test_a_failed_login_is_recorded_without_the_password(
    running_proxy: RunningProxy,
) -> None:
    await running_proxy.register_and_login("alice", "s3cret-pass!")
    wrong = "Wr0ng-Distinctive-Passw0rd"
    for username in ("alice", "mallory"):
        response = await treq.post(
            f"{running_proxy.url}/api-token-auth/", json={"username": username, "password": wrong}
        )
        assert response.code == 400
    boss = await staff_token(running_proxy)
    response = await treq.get(f"{running_proxy.url}/api/system-log/?level=warn", headers=auth(boss))
    text = await response.text()
    assert response.code == 200
    assert wrong not in text
    failed = [e for e in json.loads(text) if e["event"] == "auth.login_failed"]
    assert [(e["level"], e["data"]["username"], e["data"]["known_user"]) for e in failed] == [
        ("warn", "mallory", False),
        ("warn", "alice", True),
    ]
    rows = await running_proxy.proxy.db.run(lambda txn: txn.all("SELECT * FROM system_log"))
    assert wrong not in repr(rows)


@pytest_twisted.ensureDeferred
async def test_the_log_route_checks_its_query(running_proxy: RunningProxy) -> None:
    boss = await staff_token(running_proxy)
    for query, field in (("since=soon", "since"), ("level=loud", "level"), ("limit=0", "limit")):
        code, error = await call(running_proxy, "GET", f"/api/system-log/?{query}", boss)
        assert (code, error["field"]) == (400, field), query
    code, error = await call(running_proxy, "GET", "/api/system-log/?colour=red", boss)
    assert (code, error["fields"]) == (400, ["colour"])
    code, found = await call(running_proxy, "GET", "/api/system-log/?since=2999-01-01T00:00Z", boss)
    assert (code, found) == (200, [])


@pytest_twisted.ensureDeferred
async def test_the_expire_job_prunes_the_system_log(database_url: str, tmp_path: Path) -> None:
    clock = clock_at()
    async with proxy_with(
        database_url, tmp_path / "proxy", clock=clock, system_log_retention=86400.0
    ) as running:
        await running.proxy.syslog.record("info", "test.old", "from yesterday")
        clock.advance(86400 + 1)
        await running.proxy.syslog.record("info", "test.new", "from today")
        boss = await staff_token(running)
        code, ran = await call(running, "POST", "/api/jobs/expire-uploads/run", boss)
        assert code == 200 and ran["ok"] is True
        assert "pruned_log_entries" in ran["result"]  # the loop's own run may have done it
        code, logged = await call(running, "GET", "/api/system-log/", boss)
        events = [e["event"] for e in logged]
        assert "test.new" in events and "test.old" not in events
