"""Accounts kept in the database and administered by staff: rights and state are read on
every request, so what staff decide applies to the very next one (issue 12)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq

from tests.conftest import RunningProxy, answer, auth, proxy_with
from tests.webclient import WebClient

STAFF_PASSWORD = "Staff-Pass-2024x"


async def staff_token(proxy: RunningProxy, name: str = "boss") -> str:
    await proxy.proxy.accounts.set_staff(name, STAFF_PASSWORD)
    return await token(proxy, name, STAFF_PASSWORD)


async def token(proxy: RunningProxy, name: str, password: str = "s3cret-pass!") -> str:
    response = await treq.post(
        f"{proxy.url}/api-token-auth/", json={"username": name, "password": password}
    )
    code, body = await answer(response)
    assert code == 200, body
    return str(body["token"])


async def call(
    proxy: RunningProxy, method: str, path: str, who: str | None, body: Any = None
) -> tuple[int, Any]:
    headers = auth(who) if who else {}
    response = (
        await treq.request(method, f"{proxy.url}{path}", headers=headers, json=body)
        if body is not None
        else await treq.request(method, f"{proxy.url}{path}", headers=headers)
    )
    return await answer(response)


@pytest_twisted.async_yield_fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_with(database_url, tmp_path / "proxy") as running:
        yield running


@pytest_twisted.ensureDeferred
async def test_staff_list_and_see_accounts_and_nobody_else_may(site: RunningProxy) -> None:
    boss = await staff_token(site)
    user = await site.register_and_login("alice")
    code, body = await call(site, "GET", "/api/users/", boss)
    assert code == 200
    names = {a["username"]: a for a in body["results"]}
    assert set(names) == {"alice", "boss"}
    alice = names["alice"]
    assert (alice["is_staff"], alice["is_active"], alice["quota"], alice["used"]) == (
        False,
        True,
        None,
        0,
    )
    assert alice["last_login"] is not None
    assert (await call(site, "GET", "/api/users/", user))[0] == 403
    assert (await call(site, "GET", "/api/users/", None))[0] == 401
    assert (await call(site, "GET", "/api/users/alice/", boss))[1]["username"] == "alice"
    assert (await call(site, "GET", "/api/users/nobody/", boss))[0] == 404


@pytest_twisted.ensureDeferred
async def test_a_disabled_account_is_out_at_once_token_and_session(site: RunningProxy) -> None:
    boss = await staff_token(site)
    user = await site.register_and_login("bob")
    browser = WebClient(site.url)
    assert (await browser.login("bob")).status == 303
    assert (await browser.get("/archives/")).status == 200
    code, body = await call(site, "PATCH", "/api/users/bob/", boss, {"is_active": False})
    assert code == 200 and body["is_active"] is False
    assert (await call(site, "GET", "/storage/files/", user))[0] == 401
    assert (await browser.get("/archives/")).status == 303  # the session ended too
    refused = await WebClient(site.url).login("bob")
    assert refused.status == 403 and "disabled" in refused.text
    response = await treq.post(
        f"{site.url}/api-token-auth/", json={"username": "bob", "password": "s3cret-pass!"}
    )
    assert response.code == 403
    await call(site, "PATCH", "/api/users/bob/", boss, {"is_active": True})
    assert (await call(site, "GET", "/storage/files/", user))[0] == 401  # stays signed out
    fresh = await token(site, "bob")
    assert (await call(site, "GET", "/storage/files/", fresh))[0] == 200


@pytest_twisted.ensureDeferred
async def test_staff_rights_are_read_from_the_database_on_every_request(site: RunningProxy) -> None:
    boss = await staff_token(site)
    user = await site.register_and_login("carol")
    assert (await call(site, "GET", "/api/nodes/", user))[0] == 403
    assert (await call(site, "PATCH", "/api/users/carol/", boss, {"is_staff": True}))[0] == 200
    assert (await call(site, "GET", "/api/nodes/", user))[0] == 200  # the same token
    assert (await call(site, "PATCH", "/api/users/carol/", boss, {"is_staff": False}))[0] == 200
    assert (await call(site, "GET", "/api/nodes/", user))[0] == 403


@pytest_twisted.ensureDeferred
async def test_the_last_active_staff_account_keeps_its_rights(site: RunningProxy) -> None:
    boss = await staff_token(site)
    code, body = await call(site, "PATCH", "/api/users/boss/", boss, {"is_staff": False})
    assert code == 409 and "last staff" in body["detail"]
    code, body = await call(site, "PATCH", "/api/users/boss/", boss, {"is_active": False})
    assert code == 409
    second = await staff_token(site, "deputy")
    assert (await call(site, "PATCH", "/api/users/boss/", second, {"is_staff": False}))[0] == 200
    code, _ = await call(site, "PATCH", "/api/users/deputy/", second, {"is_staff": False})
    assert code == 409
    assert (await call(site, "GET", "/api/users/", boss))[0] == 403


@pytest_twisted.ensureDeferred
async def test_staff_set_a_quota_and_the_user_sees_it_with_their_use(site: RunningProxy) -> None:
    boss = await staff_token(site)
    user = await site.register_and_login("dave")
    code, me = await call(site, "GET", "/api/me", user)
    assert code == 200 and (me["username"], me["used"], me["quota"]) == ("dave", 0, None)
    code, body = await call(site, "PATCH", "/api/users/dave/", boss, {"quota": 5_000_000})
    assert code == 200 and body["quota"] == 5_000_000
    assert (await call(site, "GET", "/api/me", user))[1]["quota"] == 5_000_000
    code, body = await call(site, "PATCH", "/api/users/dave/", boss, {"quota": -1})
    assert code == 400
    assert (await call(site, "PATCH", "/api/users/dave/", boss, {"quota": None}))[1][
        "quota"
    ] is None


@pytest_twisted.ensureDeferred
async def test_staff_create_accounts_also_when_registration_is_closed(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(database_url, tmp_path / "p", allow_registration=False) as proxy:
        response = await treq.post(
            f"{proxy.url}/api/auth/register",
            json={"username": "erin", "password": "s3cret-pass!"},
        )
        assert response.code == 403 and "closed" in (await response.json())["detail"]
        page = await WebClient(proxy.url).get("/register/")
        assert (
            "Registration is closed" in page.text
            and '<form method="post" action="/register/"' not in page.text
        )
        boss = await staff_token(proxy)
        code, body = await call(
            proxy, "POST", "/api/users/", boss,
            {"username": "erin", "password": "s3cret-pass!", "quota": 1000},
        )  # fmt: skip
        assert code == 201 and body["quota"] == 1000 and body["is_staff"] is False
        assert (await call(proxy, "POST", "/api/users/", boss,
                           {"username": "erin", "password": "s3cret-pass!"}))[0] == 409  # fmt: skip
        await token(proxy, "erin")


@pytest_twisted.ensureDeferred
async def test_a_password_reset_by_staff_signs_out_and_must_be_changed(site: RunningProxy) -> None:
    boss = await staff_token(site)
    user = await site.register_and_login("frank")
    code, body = await call(
        site, "POST", "/api/users/frank/password", boss, {"password": "temporary-pass-1"}
    )
    assert code == 200 and body["must_change_password"] is True
    assert (await call(site, "GET", "/api/me", user))[0] == 401
    browser = WebClient(site.url)
    page = await browser.login("frank", "temporary-pass-1")
    assert (page.status, page.location) == (303, "/profile/")
    profile = await browser.get("/profile/")
    assert 'id="must-change"' in profile.text
    changed = await browser.form(
        "/profile/password",
        {"current_password": "temporary-pass-1", "new_password": "my-own-pass-22",
         "new_password_again": "my-own-pass-22"},
        form_page="/profile/",
    )  # fmt: skip
    assert changed.status == 200 and 'id="must-change"' not in changed.text


@pytest_twisted.ensureDeferred
async def test_sign_out_everywhere_ends_every_token(site: RunningProxy) -> None:
    first = await site.register_and_login("gina")
    second = await token(site, "gina")
    code, _ = await call(site, "POST", "/api/me/sign-out-everywhere", first)
    assert code == 200
    assert (await call(site, "GET", "/api/me", first))[0] == 401
    assert (await call(site, "GET", "/api/me", second))[0] == 401


@pytest_twisted.ensureDeferred
async def test_a_quota_staff_set_is_enforced_at_the_next_upload(site: RunningProxy) -> None:
    boss = await staff_token(site)
    user = await site.register_and_login("hugo")
    assert (await call(site, "PATCH", "/api/users/hugo/", boss, {"quota": 1000}))[0] == 200
    response = await treq.post(
        f"{site.url}/files/",
        headers={**auth(user), "Tus-Resumable": "1.0.0", "Upload-Length": "1001"},
    )
    code, body = await answer(response)
    assert code == 413 and (body["detail"], body["quota"], body["used"]) == (
        "quota exceeded",
        1000,
        0,
    )
    assert (await call(site, "PATCH", "/api/users/hugo/", boss, {"quota": None}))[0] == 200
    response = await treq.post(
        f"{site.url}/files/",
        headers={**auth(user), "Tus-Resumable": "1.0.0", "Upload-Length": "1001"},
    )
    assert response.code == 201
