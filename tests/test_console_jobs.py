"""The console's jobs page (issue 12) on a real proxy, SQLite and PostgreSQL: staff only; every
job with its interval, last run, result, duration and next run; intervals typed like ``5m``
(bad ones refused with the reason); "run now" starts a run and comes back to the page, which
shows it running (and reloads itself) until it is over, then its result; node jobs are
re-timed but not run from here."""

from __future__ import annotations

import doctest
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from proxy.ops.jobs import JobScheduler
from proxy.web.pages import console_jobs
from tests.conftest import RunningProxy, proxy_with
from tests.test_jobs_log import Counter
from tests.test_web_console import staff_browser
from tests.webclient import Page, WebClient

HOUR = 3600.0


@pytest_twisted.async_yield_fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_with(database_url, tmp_path / "proxy") as running:
        yield running


def scheduler(site: RunningProxy) -> JobScheduler:
    jobs = site.proxy.scheduler
    assert isinstance(jobs, JobScheduler)
    return jobs


def row(page: Page, name: str) -> str:
    """The table row of job ``name``."""
    found = re.search(rf'<tr data-job="{re.escape(name)}".*?</tr>', page.text, re.S)
    assert found is not None, page.text[:3000]
    return found[0]


async def run_now(browser: WebClient, name: str) -> Page:
    return await browser.form(f"/admin/jobs/{name}/run", {}, form_page="/admin/jobs/")


async def set_interval(browser: WebClient, name: str, **fields: str) -> Page:
    return await browser.form(f"/admin/jobs/{name}/interval", fields, form_page="/admin/jobs/")


def test_the_examples_in_the_docstrings_hold() -> None:
    results = doctest.testmod(console_jobs)
    assert results.attempted > 0 and results.failed == 0


@pytest_twisted.ensureDeferred
async def test_the_jobs_page_is_for_staff_only(site: RunningProxy) -> None:
    assert (await WebClient(site.url).get("/admin/jobs/")).status == 303  # log in first
    member = WebClient(site.url)
    await member.register("alice")
    shown = await member.get("/admin/jobs/")
    assert shown.status == 403 and "your account is not staff" in shown.text
    token = (await member.get("/archives/")).csrf
    refused = await member.post("/admin/jobs/scrub/interval", {"csrf_token": token,
                                "interval": "1m"})  # fmt: skip
    assert refused.status == 403
    assert scheduler(site).interval_of("scrub") == site.proxy.config.scrub_interval
    ran = await member.post("/admin/jobs/scrub/run", {"csrf_token": token})
    assert ran.status == 403


@pytest_twisted.ensureDeferred
async def test_every_job_is_listed_with_its_interval_and_runs(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    await scheduler(site).idle()
    page = await boss.get("/admin/jobs/")
    assert page.status == 200 and 'id="jobs"' in page.text
    listed = re.findall(r'<tr data-job="([^"]+)" data-state="(\w+)"', page.text)
    assert [name for name, _ in listed] == scheduler(site).names()
    assert {"node-monitor", "replication", "scrub", "metadata-backup"} <= dict(listed).keys()
    monitor = row(page, "node-monitor")  # runs at start, every 10 s
    assert 'value="10s"' in monitor and 'data-result="ok"' in monitor
    shown = r'<time datetime="[^"]+"><span>\d{4}-\d\d-\d\d</span> <span>\d\d:\d\d:\d\d UTC</span>'
    assert re.search(shown, monitor)
    assert 'data-result="never run"' in row(page, "scrub")  # now=False: not run yet


@pytest_twisted.ensureDeferred
async def test_staff_change_an_interval_typed_as_a_duration(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    page = await set_interval(boss, "scrub", interval="5m", action="set")
    assert page.status == 200 and "scrub now runs every 5m." in page.text
    assert 'value="5m"' in row(page, "scrub")
    assert scheduler(site).interval_of("scrub") == 300.0
    page = await set_interval(boss, "scrub", interval=" 90 ", action="set")
    assert "scrub now runs every 90s." in page.text
    assert scheduler(site).interval_of("scrub") == 90.0
    page = await set_interval(boss, "scrub", interval="", action="default")
    assert page.status == 200
    assert scheduler(site).interval_of("scrub") == site.proxy.config.scrub_interval


@pytest_twisted.ensureDeferred
async def test_a_bad_interval_is_refused_with_the_reason(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    for typed in ("soon", "0", "-5m", "31d", "5 minutes"):
        page = await set_interval(boss, "scrub", interval=typed, action="set")
        assert page.status == 400, typed
        assert "scrub: interval must be a number of seconds" in page.text, typed
        assert 'class="has-error"' in row(page, "scrub")
    empty = await set_interval(boss, "scrub", interval="  ", action="set")
    assert empty.status == 400 and "Type an interval" in empty.text
    assert scheduler(site).interval_of("scrub") == site.proxy.config.scrub_interval
    missing = await set_interval(boss, "nothing", interval="5m", action="set")
    assert missing.status == 404 and "No job named" in missing.text


@pytest_twisted.ensureDeferred
async def test_run_now_records_a_run_and_shows_its_result(site: RunningProxy) -> None:
    work = Counter({"checked": 3})
    scheduler(site).add("count", work, HOUR, now=False, description="counts things")
    boss = await staff_browser(site)
    assert 'data-result="never run"' in row(await boss.get("/admin/jobs/"), "count")
    started = await run_now(boss, "count")
    assert (started.status, started.location) == (303, "/admin/jobs/?run=count")
    await scheduler(site).idle()
    assert work.calls == 1
    page = await boss.get("/admin/jobs/?run=count")
    cells = row(page, "count")
    assert 'data-state="idle" data-result="ok"' in cells
    assert "{&#34;checked&#34;: 3}" in cells  # the result, escaped
    assert re.search(r"count finished at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: ok", page.text)

    work.fail_with = RuntimeError("the disk is full")
    assert (await run_now(boss, "count")).status == 303
    await scheduler(site).idle()
    failed = await boss.get("/admin/jobs/?run=count")
    assert 'data-result="failed"' in row(failed, "count")
    assert "count failed at" in failed.text and "RuntimeError: the disk is full" in failed.text
    missing = await run_now(boss, "nothing")
    assert missing.status == 404 and "No job named" in missing.text


@pytest_twisted.ensureDeferred
async def test_a_job_that_is_running_shows_it_until_it_is_over(site: RunningProxy) -> None:
    work = Counter({"done": True})
    work.hold = True
    scheduler(site).add("slow", work, HOUR, now=False)
    boss = await staff_browser(site)
    started = await run_now(boss, "slow")
    assert started.status == 303  # answered while the run is still going
    for _ in range(100):  # the run starts once it holds the job's lock (a query on PostgreSQL)
        if work.held:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert work.calls == 1 and len(work.held) == 1
    page = await boss.get("/admin/jobs/?run=slow")
    cells = row(page, "slow")
    assert 'data-state="running"' in cells and ">running</span>" in cells
    assert '<button type="submit" disabled>Run now</button>' in cells
    assert "slow is running; this page shows its result when it finishes" in page.text
    assert 'data-live-groups="jobs"' in page.text  # the page follows the run's events
    again = await run_now(boss, "slow")  # joins the run going: no second one
    assert again.status == 303 and work.calls == 1
    work.release()
    await scheduler(site).idle()
    page = await boss.get("/admin/jobs/?run=slow")
    assert 'data-state="idle" data-result="ok"' in row(page, "slow")
    assert "slow finished at" in page.text


@pytest_twisted.ensureDeferred
async def test_a_node_job_is_retimed_here_but_runs_on_its_node(site: RunningProxy) -> None:
    jobs = scheduler(site)
    jobs.report_remote("mirror@node1", {"interval": 30, "last_ok": True, "last_result": "3 parts",
                                        "last_run": 1_800_000_000.0, "running": True})  # fmt: skip
    boss = await staff_browser(site)
    page = await boss.get("/admin/jobs/")
    cells = row(page, "mirror@node1")
    assert 'data-state="running"' in cells and "on node1" in cells and "3 parts" in cells
    assert "/admin/jobs/mirror@node1/run" not in cells  # no button to run it
    refused = await run_now(boss, "mirror@node1")
    assert refused.status == 409 and "mirror@node1 runs on node node1" in refused.text
    page = await set_interval(boss, "mirror@node1", interval="2m", action="set")
    assert page.status == 200
    assert "mirror@node1 now runs every 2m. Node node1 gets it with the next mirror sync." in (
        page.text
    )
    assert jobs.interval_of("mirror@node1") == 120.0
