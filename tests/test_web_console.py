"""The staff console's pages (issue 12): staff only, read from the database on every request;
the accounts page over the same rules as the users API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted

from tests.conftest import RunningProxy, proxy_with
from tests.webclient import WebClient

STAFF_PASSWORD = "Staff-Pass-2024x"


@pytest_twisted.async_yield_fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_with(database_url, tmp_path / "proxy") as running:
        yield running


async def staff_browser(site: RunningProxy, name: str = "boss") -> WebClient:
    await site.proxy.accounts.set_staff(name, STAFF_PASSWORD)
    browser = WebClient(site.url)
    assert (await browser.login(name, STAFF_PASSWORD)).status == 303
    return browser


@pytest_twisted.ensureDeferred
async def test_the_console_is_for_staff_and_says_why_to_anyone_else(site: RunningProxy) -> None:
    assert (await WebClient(site.url).get("/admin/users/")).status == 303  # log in first
    member = WebClient(site.url)
    await member.register("alice")
    page = await member.get("/admin/users/")
    assert page.status == 403 and "your account is not staff" in page.text
    assert "/admin/" not in (await member.get("/archives/")).text  # no console link
    boss = await staff_browser(site)
    assert 'href="/admin/"' in (await boss.get("/archives/")).text
    listed = await boss.get("/admin/users/")
    assert listed.status == 200
    assert 'data-username="alice"' in listed.text and 'data-username="boss"' in listed.text


@pytest_twisted.ensureDeferred
async def test_staff_create_an_account_with_a_quota_and_change_it(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    page = await boss.form(
        "/admin/users/",
        {"username": "carol", "password": "Tr0ub4dor-77x", "quota": "2GiB", "email": ""},
        form_page="/admin/users/",
    )
    assert page.status == 200 and "Account carol created." in page.text
    assert "2.0 GiB" in page.text
    page = await boss.form(
        "/admin/users/carol/", {"action": "quota", "quota": ""}, form_page="/admin/users/"
    )
    assert page.status == 200 and "Account carol updated." in page.text
    weak = await boss.form(
        "/admin/users/", {"username": "dan", "password": "short"}, form_page="/admin/users/"
    )
    assert weak.status == 400 and 'id="password-error"' in weak.text
    bad = await boss.form(
        "/admin/users/carol/", {"action": "quota", "quota": "lots"}, form_page="/admin/users/"
    )
    assert bad.status == 400 and "quota must be bytes" in bad.text


@pytest_twisted.ensureDeferred
async def test_disabling_from_the_console_ends_the_users_session_at_once(
    site: RunningProxy,
) -> None:
    boss = await staff_browser(site)
    member = WebClient(site.url)
    await member.register("erin")
    assert (await member.get("/archives/")).status == 200
    page = await boss.form("/admin/users/erin/", {"action": "disable"}, form_page="/admin/users/")
    assert page.status == 200
    assert (await member.get("/archives/")).status == 303
    await boss.form("/admin/users/erin/", {"action": "enable"}, form_page="/admin/users/")
    assert (await WebClient(site.url).login("erin")).status == 303


@pytest_twisted.ensureDeferred
async def test_a_demoted_staff_user_loses_the_console_on_the_next_request(
    site: RunningProxy,
) -> None:
    boss = await staff_browser(site)
    deputy = await staff_browser(site, "deputy")
    assert (await deputy.get("/admin/users/")).status == 200
    await boss.form("/admin/users/deputy/", {"action": "revoke-staff"}, form_page="/admin/users/")
    assert (await deputy.get("/admin/users/")).status == 403
    last = await boss.form(
        "/admin/users/boss/", {"action": "revoke-staff"}, form_page="/admin/users/"
    )
    assert last.status == 409 and "last staff account" in last.text
    csrfless = await boss.post("/admin/users/deputy/", {"action": "make-staff"})
    assert csrfless.status == 403
