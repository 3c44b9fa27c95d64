"""The console's jobs and S3 pages in Debian's Chromium against a real cluster (issue 12):
staff run the metadata backup now and see its run recorded; staff add a second S3 connection
through the form (another bucket on the cluster's moto server), validate it, see it valid and
make it active, and never see its secret again. The S3 test runs last and puts the cluster's
own connection back: the cluster is shared by the module."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from common.s3 import make_client
from tests.browser.kit import assert_only_local, screenshot
from tests.browser.pages import login
from tests.clusterkit import STAFF, RemoteCluster

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SECOND_SECRET = "Browser-S3cret/Qz8Lw3Nv6Tb1Xk4Rm9"


def test_staff_run_the_metadata_backup_now_and_see_its_run(
    page: Page, cluster: RemoteCluster
) -> None:
    base = cluster.proxy.url
    login(page, base, *STAFF)
    page.goto(f"{base}/admin/jobs/")
    backup = page.locator('#jobs tr[data-job="metadata-backup"]')
    expect(backup).to_have_attribute("data-result", "never run")  # it waits a day at start
    expect(page.locator('#jobs tr[data-job="node-monitor"]')).to_have_attribute("data-result", "ok")
    backup.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(f"{base}/admin/jobs/?run=metadata-backup")
    expect(backup).to_have_attribute("data-state", "idle")  # the page follows the run's events
    expect(backup).to_have_attribute("data-result", "ok")
    expect(backup.locator("time").first).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
    )
    expect(page.get_by_text("metadata-backup finished at")).to_be_visible()
    status, jobs = cluster.staff("GET", "/api/jobs/")
    [listed] = [job for job in jobs if job["name"] == "metadata-backup"]
    assert status == 200 and listed["last_ok"] is True and listed["last_run"] is not None
    assert backup.get_attribute("data-last-run") == listed["last_run"]

    scrub = page.locator('#jobs tr[data-job="scrub"]')
    scrub.get_by_label("Interval of scrub").fill("2h")
    scrub.get_by_role("button", name="Set interval").click()
    expect(page.get_by_text("scrub now runs every 2h.")).to_be_visible()
    expect(scrub.get_by_label("Interval of scrub")).to_have_value("2h")
    screenshot(page, "console-jobs")
    # The form's answer takes the jobs page's address (what the live refresher re-reads: the
    # form's own address answers a GET with 405, and the page stopped following events).
    expect(page).to_have_url(f"{base}/admin/jobs/")

    # A run asked for elsewhere (the API, another browser) shows here without a reload.
    before = scrub.get_attribute("data-last-run")
    status, _ = cluster.staff("POST", "/api/jobs/scrub/run")
    assert status == 200
    expect(scrub).not_to_have_attribute("data-last-run", before or "", timeout=10_000)
    expect(scrub).to_have_attribute("data-result", "ok")

    scrub.get_by_label("Interval of scrub").fill("often")
    scrub.get_by_role("button", name="Set interval").click()
    expect(page.get_by_role("alert")).to_contain_text("scrub: interval must be a number")
    expect(scrub).to_have_class("has-error")
    assert_only_local(page)


def test_staff_add_validate_and_activate_a_second_s3_connection(
    page: Page, cluster: RemoteCluster
) -> None:
    base = cluster.proxy.url
    s3 = cluster.s3
    bucket = f"second-{uuid.uuid4().hex[:12]}"
    make_client(s3).create_bucket(Bucket=bucket)
    login(page, base, *STAFF)
    page.goto(f"{base}/admin/s3/")
    expect(page.locator(f'tr[data-connection="{s3.name}"]')).to_have_attribute("data-active", "yes")
    page.get_by_label("Name", exact=True).fill("second")
    page.get_by_label("Endpoint (empty for AWS)").fill(s3.endpoint_url or "")
    page.get_by_label("Region", exact=True).fill(s3.region)
    page.get_by_label("Bucket", exact=True).fill(bucket)
    page.get_by_label("Access key", exact=True).fill(s3.access_key)
    page.get_by_label("Secret key", exact=True).fill(SECOND_SECRET)
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_text("S3 connection second added.")).to_be_visible()
    second = page.locator('tr[data-connection="second"]')
    expect(second).to_contain_text("never validated")
    expect(page.get_by_label("Secret key", exact=True)).to_have_value("")

    second.get_by_role("button", name="Validate").click()
    expect(page.get_by_text("second is valid:")).to_be_visible()
    expect(second.locator(".validation")).to_contain_text("valid")
    expect(second).to_have_attribute("data-valid", "yes")
    second.get_by_role("button", name="Make active").click()
    expect(page.get_by_text("second is now the active connection")).to_be_visible()
    expect(second).to_have_attribute("data-active", "yes")
    expect(page.locator(f'tr[data-connection="{s3.name}"]')).to_have_attribute("data-active", "no")
    screenshot(page, "console-s3")
    assert SECOND_SECRET not in page.content()

    page.goto(f"{base}/admin/s3/second/")
    expect(page.get_by_label("New secret key (empty keeps the saved one)")).to_have_value("")
    assert SECOND_SECRET not in page.content()
    status, active = cluster.staff("GET", "/api/s3-connections/second/")
    assert status == 200 and active["active"] is True and active["bucket"] == bucket

    page.goto(f"{base}/admin/s3/")  # the cluster's own connection back for what follows
    page.locator(f'tr[data-connection="{s3.name}"]').get_by_role(
        "button", name="Make active"
    ).click()
    expect(page.locator(f'tr[data-connection="{s3.name}"]')).to_have_attribute("data-active", "yes")
    assert_only_local(page)
