"""Who may get in, as staff steer it (issue 12): recent failed logins per account and per
address with who waits now, clearing either's throttle (the login works at once), and the
self-registration switch (API and pages, at once, kept across a restart); staff only, logged
in the system log, never a password shown."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet.task import Clock

from common.db import Txn
from proxy.api.views import isotime
from proxy.catalog import settings
from proxy.catalog.throttle import record_failure
from proxy.web.pages.admin import seconds_text
from tests.conftest import RunningProxy, answer, proxy_with
from tests.test_users_api import call, staff_token, token
from tests.test_web_console import STAFF_PASSWORD, staff_browser
from tests.webclient import WebClient

# The proxy's clock starts at this run's real time (tokens are checked against it by PyJWT
# too) and then moves only when a test moves it.
START = float(int(time.time()))
WRONG = "wrong-password-Xy"


@pytest_twisted.async_yield_fixture
async def timed(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[RunningProxy, Clock]]:
    """A proxy whose time moves only when the test says (throttles wait seconds)."""
    clock = Clock()
    clock.advance(START)
    async with proxy_with(database_url, tmp_path / "proxy", clock=clock) as running:
        yield running, clock


async def staff_both(site: RunningProxy) -> tuple[WebClient, str]:
    """The staff account "boss" in a browser, and a token of it (made staff once: making
    someone staff again sets the password again, which signs out what came before)."""
    browser = await staff_browser(site)
    return browser, await token(site, "boss", STAFF_PASSWORD)


async def fail_logins(site: RunningProxy, username: str, times: int) -> None:
    for _ in range(times):
        page = await WebClient(site.url).login(username, WRONG)
        assert page.status == 400, page.text[:500]


async def log_events(site: RunningProxy, token: str, event: str) -> list[dict[str, Any]]:
    code, body = await call(site, "GET", "/api/system-log/?limit=1000", token)
    assert code == 200
    return [entry for entry in body if entry["event"] == event]


async def api_login(site: RunningProxy, username: str, password: str = "s3cret-pass!") -> int:
    response = await treq.post(
        f"{site.url}/api-token-auth/", json={"username": username, "password": password}
    )
    code, _ = await answer(response)
    return code


# ---------------------------------------------------------------- failed logins


@pytest_twisted.ensureDeferred
async def test_staff_see_recent_failed_logins_per_account_and_address_and_who_waits(
    timed: tuple[RunningProxy, Clock],
) -> None:
    site, clock = timed
    board, boss = await staff_both(site)
    await WebClient(site.url).register("alice")
    await fail_logins(site, "alice", 5)  # four are free; the fifth makes the next one wait 1 s
    clock.advance(3)
    await fail_logins(site, "nobody-here", 2)  # a name with no account: listed as tried
    code, body = await call(site, "GET", "/api/login-failures/", boss)
    assert code == 200
    assert body["accounts"] == [
        {
            "username": "nobody-here",
            "failures": 2,
            "last_failure": isotime(START + 3),
            "throttled_until": None,
        },
        {  # its wait ended (1 s) before the clock moved 3 s on
            "username": "alice",
            "failures": 5,
            "last_failure": isotime(START),
            "throttled_until": None,
        },
    ]
    assert body["addresses"] == [
        {
            "address": "127.0.0.1",
            "failures": 7,
            "last_failure": isotime(START + 3),
            "throttled_until": None,
        }
    ]
    await fail_logins(site, "alice", 1)  # the sixth: 2 s to wait from now
    _, body = await call(site, "GET", "/api/login-failures/", boss)
    alice = next(a for a in body["accounts"] if a["username"] == "alice")
    assert (alice["failures"], alice["throttled_until"]) == (6, isotime(START + 5))
    page = await board.get("/admin/users/")
    assert page.status == 200
    at = page.text.index('data-account="alice"')
    row = page.text[at : page.text.index("</tr>", at)]
    assert "<td>6</td>" in row and f"until {seconds_text(START + 5)}" in row
    assert 'data-address="127.0.0.1"' in page.text and 'data-account="nobody-here"' in page.text
    assert WRONG not in page.text and WRONG not in str(body)  # never a password
    # Failures older than the 15 minutes that count are not listed.
    clock.advance(15 * 60 + 1)
    assert (await call(site, "GET", "/api/login-failures/", boss))[1] == {
        "accounts": [],
        "addresses": [],
    }


@pytest_twisted.ensureDeferred
async def test_only_staff_see_failed_logins_or_clear_them(
    timed: tuple[RunningProxy, Clock],
) -> None:
    site, _ = timed
    user = await site.register_and_login("mallory")
    member = WebClient(site.url)
    assert (await member.login("mallory")).status == 303
    for method, path in (
        ("GET", "/api/login-failures/"),
        ("DELETE", "/api/login-failures/accounts/alice"),
        ("DELETE", "/api/login-failures/addresses/127.0.0.1"),
        ("GET", "/api/settings/"),
        ("PATCH", "/api/settings/"),
    ):
        assert (await call(site, method, path, user))[0] == 403, (method, path)
        assert (await call(site, method, path, None))[0] == 401, (method, path)
    page = await member.get("/admin/users/")
    assert page.status == 403 and "failed-logins" not in page.text
    shown = await member.get("/archives/")
    refused = await member.post(
        "/admin/users/access/throttle/",
        {"csrf_token": shown.csrf, "kind": "account", "key": "mallory"},
    )
    assert refused.status == 403


@pytest_twisted.ensureDeferred
async def test_clearing_an_accounts_throttle_lets_it_log_in_at_once(
    timed: tuple[RunningProxy, Clock],
) -> None:
    site, _ = timed
    board, boss = await staff_both(site)
    await WebClient(site.url).register("judy")
    await fail_logins(site, "judy", 5)
    assert (await WebClient(site.url).login("judy")).status == 429  # the right password waits
    page = await board.form(
        "/admin/users/access/throttle/", {"kind": "account", "key": "judy"},
        form_page="/admin/users/",
    )  # fmt: skip
    assert page.status == 200 and "Cleared 5 failed logins of account judy." in page.text
    assert 'data-account="judy"' not in page.text
    assert (await WebClient(site.url).login("judy")).status == 303  # no time has passed
    [cleared] = await log_events(site, boss, "auth.throttle_cleared")
    assert cleared["data"] == {"kind": "account", "key": "judy", "cleared": 5, "by": "boss"}
    assert cleared["level"] == "info" and "boss cleared 5" in cleared["message"]
    bad = await board.form(
        "/admin/users/access/throttle/", {"kind": "everyone", "key": "x"},
        form_page="/admin/users/",
    )  # fmt: skip
    assert bad.status == 400 and "Choose an account or an address" in bad.text
    # Through the API, nothing to clear is no error: it says so.
    code, body = await call(site, "DELETE", "/api/login-failures/accounts/judy", boss)
    assert (code, body) == (200, {"cleared": 0})


def _failures_from(address: str, count: int, at: float) -> Any:
    def insert(txn: Txn) -> None:
        for index in range(count):
            record_failure(txn, f"guess{index}", address, at)

    return insert


@pytest_twisted.ensureDeferred
async def test_clearing_an_addresss_throttle_lets_everyone_there_log_in_at_once(
    timed: tuple[RunningProxy, Clock],
) -> None:
    site, clock = timed
    board, boss = await staff_both(site)
    await WebClient(site.url).register("yuri")
    # 21 failures from this address over many names: the address waits, even for yuri.
    await site.proxy.db.run(_failures_from("127.0.0.1", 21, clock.seconds()))
    assert await api_login(site, "yuri") == 429
    code, body = await call(site, "GET", "/api/login-failures/", boss)
    [place] = body["addresses"]
    assert place["address"] == "127.0.0.1" and place["failures"] == 21
    assert place["throttled_until"] == isotime(clock.seconds() + 1)
    code, body = await call(site, "DELETE", "/api/login-failures/addresses/127.0.0.1", boss)
    assert (code, body) == (200, {"cleared": 21})
    assert await api_login(site, "yuri") == 200
    # Another address, cleared from the page, as recorded (IPv6 too).
    await site.proxy.db.run(_failures_from("2001:db8::7", 3, clock.seconds()))
    page = await board.form(
        "/admin/users/access/throttle/", {"kind": "address", "key": "2001:db8::7"},
        form_page="/admin/users/",
    )  # fmt: skip
    assert "Cleared 3 failed logins of address 2001:db8::7." in page.text
    # A peer without an address (a UNIX socket) is recorded as '': the page clears it too.
    await site.proxy.db.run(_failures_from("", 1, clock.seconds()))
    page = await board.form(
        "/admin/users/access/throttle/", {"kind": "address", "key": ""}, form_page="/admin/users/"
    )
    assert "Cleared 1 failed login of the empty address (as recorded)." in page.text
    assert (await call(site, "GET", "/api/login-failures/", boss))[1]["addresses"] == []
    logged = await log_events(site, boss, "auth.throttle_cleared")
    assert [(e["data"]["key"], e["data"]["cleared"]) for e in logged] == [
        ("", 1),
        ("2001:db8::7", 3),
        ("127.0.0.1", 21),
    ]


# ---------------------------------------------------------------- the registration switch


async def api_register(site: RunningProxy, username: str) -> tuple[int, Any]:
    response = await treq.post(
        f"{site.url}/api/auth/register", json={"username": username, "password": "s3cret-pass!"}
    )
    return await answer(response)


async def page_register(site: RunningProxy, username: str) -> Any:
    visitor = WebClient(site.url)
    fields = {"username": username, "password": "s3cret-pass!", "password_again": "s3cret-pass!"}
    return await visitor.form("/register/", fields, form_page="/login/")


@pytest_twisted.ensureDeferred
async def test_staff_close_and_reopen_registration_at_once_and_it_outlasts_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(database_url, tmp_path / "proxy") as site:
        board, boss = await staff_both(site)
        code, body = await call(site, "GET", "/api/settings/", boss)
        assert (code, body) == (
            200,
            {"allow_registration": True, "allow_registration_source": "config"},
        )
        shown = await board.get("/admin/users/")
        assert '<strong id="registration-state">open</strong>' in shown.text
        page = await board.form(
            "/admin/users/access/registration/", {"action": "close"}, form_page="/admin/users/"
        )
        assert page.status == 200 and "Registration is closed." in page.text
        assert '<strong id="registration-state">closed</strong>' in page.text
        assert "Open registration" in page.text
        # At once, for the API and for the pages.
        code, body = await api_register(site, "erin")
        assert code == 403 and "Registration is closed" in body["detail"]
        register_page = await WebClient(site.url).get("/register/")
        assert "Registration is closed here" in register_page.text
        assert 'action="/register/"' not in register_page.text
        posted = await page_register(site, "erin")
        assert posted.status == 403 and "Registration is closed here" in posted.text
        bad = await board.form(
            "/admin/users/access/registration/", {"action": "maybe"}, form_page="/admin/users/"
        )
        assert bad.status == 400 and "open or to close" in bad.text
    # A new proxy on the same database (its config still says open) keeps it closed.
    async with proxy_with(database_url, tmp_path / "proxy") as site:
        assert (await api_register(site, "erin"))[0] == 403
        assert "Registration is closed here" in (await WebClient(site.url).get("/register/")).text
        boss = await staff_token(site)
        code, body = await call(site, "GET", "/api/settings/", boss)
        assert body == {"allow_registration": False, "allow_registration_source": "staff"}
        assert (await call(site, "PATCH", "/api/settings/", boss, {}))[1] == body  # no change
        code, body = await call(
            site, "PATCH", "/api/settings/", boss, {"allow_registration": "perhaps"}
        )
        assert code == 400 and body["field"] == "allow_registration"
        code, body = await call(site, "PATCH", "/api/settings/", boss, {"allow_registration": True})
        assert (code, body) == (
            200,
            {"allow_registration": True, "allow_registration_source": "staff"},
        )
        assert (await api_register(site, "erin"))[0] == 201
        assert (await page_register(site, "fred")).status == 303
        logged = await log_events(site, boss, "settings.registration")
        assert [(e["data"]["allow_registration"], e["data"]["by"]) for e in logged] == [
            (True, "boss"),
            (False, "boss"),
        ]


@pytest_twisted.ensureDeferred
async def test_a_config_that_closes_registration_is_only_the_default(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(database_url, tmp_path / "p", allow_registration=False) as site:
        boss = await staff_token(site)
        _, body = await call(site, "GET", "/api/settings/", boss)
        assert body == {"allow_registration": False, "allow_registration_source": "config"}
        assert (await api_register(site, "gina"))[0] == 403
        assert await site.proxy.db.run(settings.read_setting, settings.REGISTRATION) is None
        await call(site, "PATCH", "/api/settings/", boss, {"allow_registration": True})
        assert await site.proxy.db.run(settings.read_setting, settings.REGISTRATION) == "true"
        assert (await api_register(site, "gina"))[0] == 201
