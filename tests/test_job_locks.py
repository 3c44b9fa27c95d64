"""Jobs run once per cluster: the scheduler skips a run whose lock another proxy holds, the
PostgreSQL advisory locks themselves, and two real proxies on one database whose runs of a
job never overlap."""

from __future__ import annotations

import doctest
import http.server
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from common.db import Database, parse_database_url
from common.errors import Conflict
from proxy.migrations import migrate
from proxy.ops import joblocks
from proxy.ops.joblocks import AdvisoryLocks
from proxy.ops.jobs import JobScheduler
from proxy.ops.systemlog import SystemLog
from tests.clusterkit import eventually
from tests.conftest import _database_url
from tests.proc import BIN, ProxyProcess


class HeldElsewhere:
    """Locks another proxy holds while ``elsewhere`` names them; records what this one did."""

    def __init__(self, *elsewhere: str) -> None:
        self.elsewhere = set(elsewhere)
        self.taken: list[str] = []
        self.released: list[str] = []

    def acquire(self, name: str) -> Deferred[bool]:
        if name in self.elsewhere:
            return succeed(False)
        self.taken.append(name)
        return succeed(True)

    def release(self, name: str) -> Deferred[None]:
        self.released.append(name)
        return succeed(None)

    def close(self) -> None:
        pass


def test_the_lock_keys_examples_hold() -> None:
    results = doctest.testmod(joblocks)
    assert results.attempted >= 3 and results.failed == 0


@pytest_twisted.ensureDeferred
async def test_a_run_whose_lock_another_proxy_holds_is_skipped_and_tried_at_the_next_tick(
    tmp_path: Path,
) -> None:
    db = Database(parse_database_url(f"sqlite:///{tmp_path}/m.sqlite3"))
    try:
        await db.run(migrate)
        clock, locks, runs = Clock(), HeldElsewhere("replication"), []

        async def work() -> dict[str, int]:
            runs.append(clock.seconds())
            if len(runs) == 1:
                raise RuntimeError("a failing run lets go of its lock too")
            return {"copied": 0}

        scheduler = JobScheduler(db, clock, SystemLog(db, clock), locks=locks)
        scheduler.add("replication", work, 10)
        await scheduler.start()
        await scheduler.idle()
        assert runs == [] and locks.taken == []
        [job] = await scheduler.list()
        assert job["last_run"] is None
        with pytest.raises(Conflict, match="running on another proxy"):
            await scheduler.run_now("replication")

        locks.elsewhere.clear()
        clock.advance(10)
        await scheduler.idle()
        clock.advance(10)
        await scheduler.idle()
        scheduler.stop()
        assert runs == [10, 20]
        assert locks.taken == locks.released == ["replication", "replication"]
    finally:
        db.close()


@pytest.fixture
def pg_urls(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty schemas in the one PostgreSQL test database."""
    schema = contextmanager(_database_url)
    with schema("postgresql", tmp_path) as first, schema("postgresql", tmp_path) as second:
        yield first, second


@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_an_advisory_lock_is_one_holders_at_a_time_per_schema(
    pg_urls: tuple[str, str],
) -> None:
    one, other = (AdvisoryLocks(parse_database_url(pg_urls[0])) for _ in range(2))
    elsewhere = AdvisoryLocks(parse_database_url(pg_urls[1]))
    try:
        assert await one.acquire("metadata-backup") is True
        assert await other.acquire("metadata-backup") is False
        assert await other.acquire("s3-cleanup") is True  # each job its own lock
        assert await elsewhere.acquire("metadata-backup") is True  # another cluster's schema
        await one.release("metadata-backup")
        assert await other.acquire("metadata-backup") is True
        one.close()
        one = AdvisoryLocks(parse_database_url(pg_urls[0]))
        assert await one.acquire("s3-cleanup") is False
        other.close()  # a holder whose connection ends lets go at once
        other = AdvisoryLocks(parse_database_url(pg_urls[0]))
        assert await eventually_true(lambda: one.acquire("s3-cleanup"))
    finally:
        for locks in (one, other, elsewhere):
            locks.close()


async def eventually_true(attempt: Any, tries: int = 50) -> bool:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(tries):
        if await attempt():
            return True
        await deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
    return False


# ---------------------------------------------------------------- two real proxies


HOLD = 0.8
"""How long the slow node takes to answer a ping: a node-monitor run lasts that long."""


class SlowNode:
    """A stand-in node whose /health answers after ``HOLD`` s, noting when each ping was in
    flight and which proxy process sent it."""

    def __init__(self, proxies: dict[int, str]) -> None:
        self.proxies = proxies  # pid -> name, filled in as the proxies start
        self.pings: list[tuple[float, float, str]] = []
        self.in_flight: list[str] = []
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                started = time.monotonic()
                sender = node.sender(self.client_address[1])
                node.in_flight.append(sender)
                time.sleep(HOLD)
                ended = time.monotonic()  # before the answer: the run cannot end earlier
                node.in_flight.remove(sender)
                node.pings.append((started, ended, sender))
                health = {"name": "slow", "zone": "a", "status": "ok", "free_bytes": 1 << 30,
                          "total_bytes": 1 << 31}  # fmt: skip
                body = json.dumps(health).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sender(self, port: int) -> str:
        for pid, name in list(self.proxies.items()):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.laddr and conn.laddr.port == port:
                    return name
        return "?"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _cli(data: Path, url: str, *args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(data), "--database", url, *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_two_proxies_on_one_postgresql_never_run_a_job_at_the_same_time(
    pg_urls: tuple[str, str], tmp_path: Path
) -> None:
    url = pg_urls[0]
    senders: dict[int, str] = {}
    node = SlowNode(senders)
    env = {"PYARCHIVE_NODE_PING_INTERVAL": "1s"}
    first = ProxyProcess(tmp_path / "a", url, env=env)
    second = ProxyProcess(tmp_path / "b", url, env=env)
    try:
        first.start()
        assert first.process is not None
        senders[first.process.pid] = "a"
        password = "Sturdy-Kettle-77"
        _cli(first.data_dir, url, "create-admin", "boss",
             env={"PYARCHIVE_ADMIN_PASSWORD": password})  # fmt: skip
        second.start()
        assert second.process is not None
        senders[second.process.pid] = "b"
        _cli(first.data_dir, url, "nodes", "add", "slow", node.url,
             "rsync://pyarchive@127.0.0.1:1/incoming", "--zone", "a")  # fmt: skip
        token = second.login("boss", password)  # both proxies share the signing secret
        asked = []
        for _ in range(5):  # staff ask one proxy while the other one pings
            deadline = time.monotonic() + 30
            while not node.in_flight:  # polled often: a ping lasts only HOLD
                assert time.monotonic() < deadline, f"no ping: {node.pings}"
                time.sleep(0.01)
            other = second if node.in_flight[0] == "a" else first
            status, body = other.request(
                "POST", "/api/jobs/node-monitor/run", headers={"Authorization": f"JWT {token}"}
            )
            asked.append((status, body))
            if status == 409:
                break
        eventually(lambda: len(node.pings) >= 8, 30, "eight pings")
    finally:
        second.stop()
        first.stop()
        node.close()
    pings = sorted(node.pings)
    for (_, ended, by), (started, _, next_by) in itertools.pairwise(pings):
        assert started >= ended, f"a run by {next_by} began while one by {by} was going: {pings}"
    assert {by for _, _, by in pings} <= {"a", "b"}, pings
    assert asked[-1][0] == 409, asked
    assert "running on another proxy" in asked[-1][1]["detail"]
