"""The console's system log page and the API's range and pages (issue 12): filters by level
(and above), job and time range, newest first, a page at a time with no entry lost or shown
twice, each entry's details; bad filters said on the page (400); staff only."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted

from common.db import Database, Txn
from proxy.ops.systemlog import LEVELS, LogQuery, SystemLog
from tests.conftest import RunningProxy, proxy_with
from tests.test_users_api import call, staff_token
from tests.test_web_console import staff_browser
from tests.webclient import Page, WebClient

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z: long before anything the proxy logs itself
JOBS = ("scrub", "mirror-sync", "")
COUNT = 120
END = T0 + COUNT  # after every seeded entry, before the proxy's own
_MESSAGE = re.compile(r"seeded (\d{3})\b")
_OLDER = re.compile(r'href="/admin/log/(\?[^"]*)" rel="next"')


def _seed_txn(txn: Txn) -> None:
    """120 entries, three to a second (so paging must break ties by id), every level and job
    in turn, each with data."""
    for i in range(COUNT):
        SystemLog.record_txn(
            txn, T0 + i // 3, LEVELS[i % 4], f"test.e{i % 4}", f"seeded {i:03d}",
            JOBS[i % 3], {"index": i, "node": f"node{i % 2}", "nested": {"ok": True}},
        )  # fmt: skip


async def seed(db: Database) -> None:
    await db.run(_seed_txn)


def expected(
    level: str | None = None, job: str | None = None, since: float = T0, until: float = END
) -> list[int]:
    """The seeded entries' indexes a query should give, newest first (time, then id)."""
    shown = LEVELS[LEVELS.index(level) :] if level else LEVELS
    found = [
        i
        for i in range(COUNT)
        if LEVELS[i % 4] in shown
        and (job is None or JOBS[i % 3] == job)
        and since <= T0 + i // 3 <= until
    ]
    return sorted(found, key=lambda i: (T0 + i // 3, i), reverse=True)


def indexes(page: Page) -> list[int]:
    return [int(m) for m in _MESSAGE.findall(page.text)]


async def every_page(browser: WebClient, first: str) -> tuple[list[int], int]:
    """Follow the "older" links from ``first``: every index shown, and how many pages."""
    seen: list[int] = []
    path: str | None = first
    pages = 0
    while path is not None:
        page = await browser.get(path)
        assert page.status == 200, page.text[:800]
        seen.extend(indexes(page))
        pages += 1
        older = _OLDER.search(page.text)
        path = "/admin/log/" + html.unescape(older[1]) if older else None
        assert pages <= 20, "the pages never end"
    return seen, pages


@pytest_twisted.async_yield_fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_with(database_url, tmp_path / "proxy") as running:
        await seed(running.proxy.db)
        yield running


# ---------------------------------------------------------------- the page


@pytest_twisted.ensureDeferred
async def test_the_log_page_pages_through_every_entry_newest_first_once_each(
    site: RunningProxy,
) -> None:
    boss = await staff_browser(site)
    seen, pages = await every_page(boss, f"/admin/log/?until={END}&limit=25")
    assert seen == expected()
    assert len(seen) == len(set(seen)) == COUNT
    assert pages == 5  # 25 + 25 + 25 + 25 + 20
    first = await boss.get(f"/admin/log/?until={END}&limit=25")
    assert 'rel="first"' not in first.text  # the newest page has no "Newest" link
    older = _OLDER.search(first.text)
    assert older is not None
    second = await boss.get("/admin/log/" + html.unescape(older[1]))
    assert 'href="/admin/log/?until=' in second.text and 'rel="first"' in second.text


@pytest_twisted.ensureDeferred
async def test_the_log_page_filters_by_level_and_above_job_and_time_range(
    site: RunningProxy,
) -> None:
    boss = await staff_browser(site)
    since, until = T0 + 10, T0 + 29  # 2025-01-01T00:00:10Z to 00:00:29Z, both included
    query = "level=warn&job=scrub&since=2025-01-01T00:00:10Z&until=2025-01-01T00:00:29Z"
    seen, _ = await every_page(boss, f"/admin/log/?{query}&limit=10")
    want = expected("warn", "scrub", since, until)
    assert seen == want and want  # not vacuous
    page = await boss.get(f"/admin/log/?{query}")
    assert all(f'data-level="{level}"' not in page.text for level in ("debug", "info"))
    assert 'data-job="mirror-sync"' not in page.text and 'data-job=""' not in page.text
    # The form keeps what was asked.
    assert '<option value="warn" selected>' in page.text
    assert 'value="scrub"' in page.text and 'value="2025-01-01T00:00:10Z"' in page.text
    # Unix seconds and a zone other than UTC mean the same range.
    other = await boss.get(f"/admin/log/?level=warn&job=scrub&since={since}&until={until}")
    assert indexes(other) == want
    zoned = "since=2025-01-01T01:00:10%2B01:00&until=2025-01-01T01:00:29%2B01:00"
    assert indexes(await boss.get(f"/admin/log/?level=warn&job=scrub&{zoned}")) == want
    # No job given: every job; level error alone.
    errors = await boss.get(f"/admin/log/?level=error&until={END}&limit=100")
    assert indexes(errors) == expected("error")


@pytest_twisted.ensureDeferred
async def test_each_entry_shows_its_details(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    page = await boss.get(f"/admin/log/?until={T0}")  # the first second: entries 0, 1 and 2
    assert indexes(page) == [2, 1, 0]
    at = page.text.index("seeded 001")
    row = page.text[page.text.rindex("<tr ", 0, at) : page.text.index("</tr>", at)]
    assert 'data-level="info"' in row and 'data-job="mirror-sync"' in row
    assert "<details>" in row and "<summary>Details</summary>" in row
    assert "<dt>index</dt><dd><code>1</code></dd>" in row
    assert "<dt>node</dt><dd><code>node1</code></dd>" in row
    assert "<dt>nested</dt><dd><code>{&#34;ok&#34;: true}</code></dd>" in row
    assert '<time datetime="2025-01-01T00:00:00Z">2025-01-01 00:00:00</time>' in row


@pytest_twisted.ensureDeferred
async def test_bad_filters_are_refused_on_the_page_with_a_message(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    cases = {
        "since=yesterday": "since must be an ISO 8601 time",
        "until=soon": "until must be an ISO 8601 time",
        "until=-5": "until must be a time after 1970",
        "since=200&until=100": "since must not be later than until",
        "level=loud": "level must be one of debug, info, warn, error",
        "before=abc": "before must be the id of a log entry",
        "limit=7": "entries per page must be one of 10, 25, 50, 100",
    }
    for query, message in cases.items():
        page = await boss.get(f"/admin/log/?{query}")
        assert page.status == 400, query
        assert 'role="alert"' in page.text and message in page.text, query
        assert 'id="system-log"' not in page.text  # no entries under a wrong filter
        assert "Filter the log" in page.text  # the form stays, to be corrected


@pytest_twisted.ensureDeferred
async def test_the_log_page_is_for_staff_only(site: RunningProxy) -> None:
    anonymous = await WebClient(site.url).get("/admin/log/")
    assert anonymous.status == 303 and anonymous.location == "/login/?next=/admin/log/"
    member = WebClient(site.url)
    await member.register("alice")
    refused = await member.get("/admin/log/")
    assert refused.status == 403 and "your account is not staff" in refused.text
    assert "seeded" not in refused.text
    boss = await staff_browser(site)
    shown = await boss.get("/admin/log/")
    assert shown.status == 200 and 'aria-current="page">System log' in shown.text


# ---------------------------------------------------------------- the API and the store


async def api_pages(site: RunningProxy, token: str, query: str) -> list[int]:
    seen: list[int] = []
    before = ""
    while True:
        code, body = await call(site, "GET", f"/api/system-log/?{query}{before}", token)
        assert code == 200, body
        if not body:
            return seen
        seen.extend(int(_MESSAGE.fullmatch(e["message"])[1]) for e in body)  # type: ignore[index]
        before = f"&before={body[-1]['id']}"
        assert len(seen) <= COUNT


@pytest_twisted.ensureDeferred
async def test_the_api_pages_with_before_and_takes_a_time_range(site: RunningProxy) -> None:
    boss = await staff_token(site)
    assert await api_pages(site, boss, f"until={END}&limit=7") == expected()
    ranged = await api_pages(site, boss, f"level=info&since={T0 + 5}&until={T0 + 14}&limit=4")
    assert ranged == expected("info", since=T0 + 5, until=T0 + 14) and ranged
    code, body = await call(site, "GET", "/api/system-log/?since=200&until=100", boss)
    assert (code, body) == (400, {"detail": "since must not be later than until", "field": "until"})
    code, body = await call(site, "GET", "/api/system-log/?before=-1", boss)
    assert code == 400 and body["field"] == "before"
    code, body = await call(site, "GET", "/api/system-log/?before=0", boss)
    assert (code, body) == (200, [])  # no entry 0: nothing is older than what is not there


async def _newer(db: Database, at: float, count: int) -> None:
    def insert(txn: Txn) -> None:
        for n in range(count):
            SystemLog.record_txn(txn, at, "info", "test.newer", f"newer {n}", "scrub", {})

    await db.run(insert)


@pytest_twisted.ensureDeferred
async def test_entries_arriving_between_pages_neither_shift_nor_repeat_the_next_page(
    site: RunningProxy,
) -> None:
    syslog = site.proxy.syslog
    assert syslog is not None
    asked = LogQuery(until=END, limit=30)
    first, more = await syslog.page(asked)
    assert more and len(first) == 30 and first[-1]["message"] == "seeded 090"
    # New entries: some at the very time of the page's last entry (T0 + 30; the keyset
    # breaks the tie by id, so they are newer than it and belong before it), some newer
    # than everything. Neither pushes an entry already seen onto the next page.
    await _newer(site.proxy.db, T0 + 30, 5)
    await _newer(site.proxy.db, T0 + 100, 5)
    rest: list[dict[str, Any]] = []
    cursor = first[-1]["id"]
    while True:
        page, more = await syslog.page(LogQuery(until=END, limit=30, before=cursor))
        rest.extend(page)
        if not more:
            break
        cursor = page[-1]["id"]
    got = [int(_MESSAGE.fullmatch(e["message"])[1]) for e in first + rest]  # type: ignore[index]
    assert got == expected()
