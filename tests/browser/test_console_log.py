"""The console's system log and registration switch in Debian's Chromium against a real
cluster (issue 12): staff filter the log by level and by job and see only matching entries,
page to older ones with the filters kept, and close registration, which the register page
then says."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.kit import assert_only_local, screenshot
from tests.browser.pages import login
from tests.clusterkit import STAFF, RemoteCluster

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHANGES = 12  # interval changes of one job: more than one page of 10


def a_local_job(cluster: RemoteCluster) -> str:
    status, jobs = cluster.staff("GET", "/api/jobs/")
    assert status == 200, jobs
    return next(str(job["name"]) for job in jobs if "@" not in job["name"])


def rows(page: Page) -> list[dict[str, str]]:
    """The log table's rows as (id, level, job) attributes, top to bottom."""
    found = page.locator("#system-log tbody tr").evaluate_all(
        "rows => rows.map(r => ({id: r.dataset.id, level: r.dataset.level, job: r.dataset.job}))"
    )
    return [dict(row) for row in found]


def test_staff_filter_the_log_by_level_and_job_and_page_to_older_entries(
    page: Page, cluster: RemoteCluster
) -> None:
    base = cluster.proxy.url
    job = a_local_job(cluster)
    for n in range(CHANGES):  # each change is an info entry about the job
        status, body = cluster.staff("PATCH", f"/api/jobs/{job}/", {"interval": 3600 + n})
        assert status == 200, body
    credentials = json.dumps({"username": "ghost", "password": "not-a-password-1"})
    status, _ = cluster.proxy.request(
        "POST", "/api-token-auth/", credentials, {"Content-Type": "application/json"}
    )
    assert status == 400  # a failed login: a warn entry about no job

    login(page, base, *STAFF)
    page.goto(f"{base}/admin/users/")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="System log").click()
    expect(page).to_have_url(f"{base}/admin/log/")

    # Level warn and above: the failed login is there, nothing below warn is.
    page.get_by_label("Level and above").select_option("warn")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("failed login as 'ghost'")).to_be_visible()
    shown = rows(page)
    assert shown and {row["level"] for row in shown} <= {"warn", "error"}

    # That job, info and above, ten to a page.
    page.get_by_label("Level and above").select_option("info")
    page.get_by_label("Job", exact=True).fill(job)
    page.get_by_label("Per page").select_option("10")
    page.get_by_role("button", name="Show").click()
    first = rows(page)
    assert len(first) == 10 and {row["job"] for row in first} == {job}
    assert {row["level"] for row in first} <= {"info", "warn", "error"}
    expect(page.get_by_text(re.compile(rf"job {job} now runs every 3611\b"))).to_be_visible()
    entry = page.locator("#system-log tbody tr", has_text="now runs every 3611")
    entry.get_by_text("Details").click()
    expect(entry.locator("dl")).to_contain_text("interval")
    screenshot(page, "console-log")

    page.get_by_role("link", name="Older entries").click()
    expect(page).to_have_url(re.compile(r"before=\d+"))
    older = rows(page)
    assert older and {row["job"] for row in older} == {job}
    assert not {row["id"] for row in older} & {row["id"] for row in first}
    expect(page.get_by_label("Job", exact=True)).to_have_value(job)  # the filters are kept
    expect(page.get_by_text(re.compile(rf"job {job} now runs every 3600\b"))).to_be_visible()
    page.get_by_role("link", name="Newest").click()
    assert [row["id"] for row in rows(page)] == [row["id"] for row in first]
    assert_only_local(page)
    cluster.staff("PATCH", f"/api/jobs/{job}/", {"interval": None})  # back to its default


def test_staff_close_registration_and_the_register_page_says_so(
    page: Page, cluster: RemoteCluster
) -> None:
    base = cluster.proxy.url
    login(page, base, *STAFF)
    page.goto(f"{base}/admin/users/")
    switch = page.locator("#registration")
    expect(switch).to_contain_text("Registration: open")
    switch.get_by_role("button", name="Close registration").click()
    expect(page.get_by_role("status")).to_have_text("Registration is closed.")
    expect(switch).to_contain_text("Registration: closed")
    page.get_by_role("button", name="Log out").click()

    page.goto(f"{base}/register/")
    expect(page.get_by_text("Registration is closed here")).to_be_visible()
    expect(page.get_by_role("button", name="Register")).to_have_count(0)
    assert_only_local(page)

    status, body = cluster.staff("PATCH", "/api/settings/", {"allow_registration": True})
    assert status == 200 and body["allow_registration"] is True
    page.goto(f"{base}/register/")
    expect(page.get_by_role("button", name="Register")).to_be_visible()
