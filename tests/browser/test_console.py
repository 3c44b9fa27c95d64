"""The staff console in Debian's Chromium against a real cluster (issue 12): the 403 page for
everyone else, and an account staff create with a quota, whose upload past it is refused on
the upload page with the quota message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.kit import assert_only_local, screenshot
from tests.browser.pages import login, make_file, register
from tests.clusterkit import STAFF, RemoteCluster

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_someone_not_staff_gets_a_page_that_says_the_console_is_for_staff(
    page: Page, cluster: RemoteCluster
) -> None:
    base = cluster.proxy.url
    register(page, base, "nadia", "Correct-Horse-aidan")
    expect(page.get_by_role("link", name="Console")).to_have_count(0)
    response = page.goto(f"{base}/admin/users/")
    assert response is not None and response.status == 403
    expect(page.get_by_text("your account is not staff")).to_be_visible()


def test_staff_create_an_account_whose_upload_past_its_quota_is_refused_on_the_page(
    page: Page, cluster: RemoteCluster, tmp_path: Path
) -> None:
    base = cluster.proxy.url
    login(page, base, *STAFF)
    page.get_by_role("link", name="Console").click()
    expect(page).to_have_url(f"{base}/admin/overview/")  # the console opens on its overview
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Accounts").click()
    expect(page).to_have_url(f"{base}/admin/users/")
    page.get_by_label("Username", exact=True).fill("quinta")
    page.get_by_label("Password", exact=True).fill("Tr0ub4dor-horse-9")
    page.get_by_label(re.compile(r"^Quota \(bytes")).fill("1MiB")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("Account quinta created.")).to_be_visible()
    row = page.locator('tr[data-username="quinta"]')
    expect(row).to_contain_text("1.0 MiB")
    screenshot(page, "console-users")
    page.get_by_role("button", name="Log out").click()

    login(page, base, "quinta", "Tr0ub4dor-horse-9")
    path = tmp_path / "too-big.bin"
    make_file(path, 2 * 2**20, seed=5)
    page.goto(f"{base}/archives/new/")
    page.set_input_files("#files", str(path))
    upload = page.locator('li.upload[data-filename="too-big.bin"]')
    expect(upload).to_have_attribute("data-state", "error")
    expect(upload).to_contain_text("quota exceeded")
    assert_only_local(page)
