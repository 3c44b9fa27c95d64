"""Accounts over HTTP: registration, login tokens, and who may call the storage API.

Every test talks to a real proxy on a loopback port, once over SQLite and once over PostgreSQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from argon2 import PasswordHasher

from common.db import Database, parse_database_url
from common.tokens import TokenClaims, issue_token
from proxy.catalog import store
from tests.conftest import RequestHeaders, RunningProxy, auth, proxy_with

PASSWORD = "s3cret-pass!"
PROTECTED = "/storage/files/"


async def register(proxy: RunningProxy, body: Any) -> tuple[int, Any]:
    response = await treq.post(f"{proxy.url}/api/auth/register", json=body)
    return response.code, await response.json()


async def login_json(proxy: RunningProxy, username: str, password: str) -> tuple[int, bytes]:
    response = await treq.post(
        f"{proxy.url}/api-token-auth/", json={"username": username, "password": password}
    )
    return response.code, await response.content()


async def get_protected(proxy: RunningProxy, headers: RequestHeaders) -> tuple[int, Any, Any]:
    response = await treq.get(f"{proxy.url}{PROTECTED}", headers=headers)
    content_type = response.headers.getRawHeaders("content-type", [""])[0]
    assert content_type == "application/json", content_type
    return response.code, await response.json(), response.headers


def secret_of(proxy: RunningProxy) -> str:
    return str(proxy.proxy.config.secret_key)


# ---------------------------------------------------------------- registration


@pytest_twisted.ensureDeferred
async def test_registering_answers_201_with_the_user_and_never_the_password(
    running_proxy: RunningProxy,
) -> None:
    code, body = await register(
        running_proxy, {"username": "alice", "password": PASSWORD, "email": "a@example.org"}
    )
    assert code == 201, body
    assert set(body) == {"id", "username", "email", "is_staff"}
    assert body["username"] == "alice"
    assert body["email"] == "a@example.org"
    assert body["is_staff"] is False
    assert PASSWORD not in repr(body)


WEAK_PASSWORDS: dict[str, tuple[Any, str]] = {
    "missing": (None, "password is required"),
    "empty": ("", "password is required"),
    "not text": (12345678, "password must be text"),
    "short": ("Ab1!xyz", "too short"),
    "numeric": ("1234567890", "entirely numeric"),
    "holds the username": ("my-alice-pass", "contain the username"),
    "few characters": ("abababab", "too simple"),
    "too long": ("Ab1!" * 300, "too long"),
}


@pytest_twisted.ensureDeferred
async def test_a_weak_or_missing_password_is_refused_with_the_reason(
    running_proxy: RunningProxy,
) -> None:
    for case, (password, reason) in WEAK_PASSWORDS.items():
        body: dict[str, Any] = {"username": "alice"}
        if password is not None:
            body["password"] = password
        code, answer = await register(running_proxy, body)
        assert code == 400, (case, answer)
        assert reason in answer["detail"], (case, answer)
        assert answer["field"] == "password", (case, answer)
    # None of them created the account: the name is still free.
    code, _ = await register(running_proxy, {"username": "alice", "password": PASSWORD})
    assert code == 201


BAD_USERNAMES: dict[str, Any] = {
    "missing": None,
    "empty": "",
    "space": "has space",
    "slash": "slash/name",
    "too long": "x" * 151,
    "tab": "tab\tname",
    "nul": "nul\x00name",
    "not text": 42,
}


@pytest_twisted.ensureDeferred
async def test_a_bad_username_is_refused(running_proxy: RunningProxy) -> None:
    for case, username in BAD_USERNAMES.items():
        body: dict[str, Any] = {"password": PASSWORD}
        if username is not None:
            body["username"] = username
        code, answer = await register(running_proxy, body)
        assert code == 400, (case, answer)
        assert "username" in answer["detail"], (case, answer)


@pytest_twisted.ensureDeferred
async def test_an_email_is_an_address_or_empty_or_null(running_proxy: RunningProxy) -> None:
    for case, email in {"no @": "alice", "object": {}, "number": 0, "false": False}.items():
        body = {"username": "alice", "password": PASSWORD, "email": email}
        code, answer = await register(running_proxy, body)
        assert (code, answer.get("field")) == (400, "email"), (case, answer)
    for number, email in enumerate(["", None]):
        body = {"username": f"alice{number}", "password": PASSWORD, "email": email}
        code, answer = await register(running_proxy, body)
        assert (code, answer["email"]) == (201, ""), answer


@pytest_twisted.ensureDeferred
async def test_a_taken_username_answers_409(running_proxy: RunningProxy) -> None:
    code, _ = await register(running_proxy, {"username": "alice", "password": PASSWORD})
    assert code == 201
    code, answer = await register(running_proxy, {"username": "alice", "password": "0ther-pass!"})
    assert code == 409, answer
    assert "already exists" in answer["detail"]
    # The first registration's password still works; the second did not overwrite it.
    code, _ = await login_json(running_proxy, "alice", PASSWORD)
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_registering_with_an_unknown_field_is_refused(running_proxy: RunningProxy) -> None:
    code, answer = await register(
        running_proxy, {"username": "alice", "password": PASSWORD, "is_staff": True}
    )
    assert code == 400, answer
    assert "is_staff" in answer["detail"]
    code, _ = await login_json(running_proxy, "alice", PASSWORD)
    assert code == 400  # no account was made


@pytest_twisted.ensureDeferred
async def test_the_password_is_stored_as_an_argon2_hash(running_proxy: RunningProxy) -> None:
    await running_proxy.register_and_login("alice", PASSWORD)
    db = Database(parse_database_url(running_proxy.proxy.config.database), pool_size=1)
    try:
        user = await db.run(store.user_by_name, "alice")
    finally:
        db.close()
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert PasswordHasher().verify(user.password_hash, PASSWORD)


# ---------------------------------------------------------------- login


@pytest_twisted.ensureDeferred
async def test_logging_in_with_json_gives_a_token_that_opens_the_api(
    running_proxy: RunningProxy,
) -> None:
    await register(running_proxy, {"username": "alice", "password": PASSWORD})
    code, raw = await login_json(running_proxy, "alice", PASSWORD)
    assert code == 200, raw
    token = json.loads(raw)["token"]
    code, body, _ = await get_protected(running_proxy, auth(token))
    assert code == 200, body
    assert body["count"] == 0


@pytest_twisted.ensureDeferred
async def test_logging_in_with_a_urlencoded_form_gives_a_token(
    running_proxy: RunningProxy,
) -> None:
    await register(running_proxy, {"username": "alice", "password": PASSWORD})
    response = await treq.post(
        f"{running_proxy.url}/api-token-auth/",
        data={"username": "alice", "password": PASSWORD},
    )
    assert response.code == 200, await response.text()
    token = (await response.json())["token"]
    code, _, _ = await get_protected(running_proxy, auth(token))
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_an_unknown_user_and_a_wrong_password_get_the_identical_answer(
    running_proxy: RunningProxy,
) -> None:
    await register(running_proxy, {"username": "alice", "password": PASSWORD})
    unknown = await login_json(running_proxy, "mallory", PASSWORD)
    wrong = await login_json(running_proxy, "alice", "not-the-password")
    assert unknown[0] == 400
    assert unknown == wrong


@pytest_twisted.ensureDeferred
async def test_logging_in_without_credentials_is_refused(running_proxy: RunningProxy) -> None:
    response = await treq.post(f"{running_proxy.url}/api-token-auth/", json={"username": "a"})
    assert response.code == 400
    assert "detail" in await response.json()


@pytest_twisted.ensureDeferred
async def test_a_login_form_with_too_many_fields_is_refused(running_proxy: RunningProxy) -> None:
    fields = {f"field{n}": "x" for n in range(60)}
    response = await treq.post(
        f"{running_proxy.url}/api-token-auth/",
        data={"username": "alice", "password": PASSWORD, **fields},
    )
    assert response.code == 400, await response.text()
    assert "too many fields" in (await response.json())["detail"]


# ---------------------------------------------------------------- tokens


@pytest_twisted.ensureDeferred
async def test_a_request_without_a_token_answers_401_json(running_proxy: RunningProxy) -> None:
    code, body, headers = await get_protected(running_proxy, {})
    assert code == 401
    assert body == {"detail": "Authentication credentials were not provided"}
    assert headers.getRawHeaders("www-authenticate") == ['JWT realm="api"']


MALFORMED_AUTHORIZATION = [
    "JWT",
    "JWT ",
    "Basic YWxpY2U6cGFzcw==",
    "Token abc",
    "JWTabc",
    "JWT not.a.token",
    "JWT e30.e30.e30",
]


@pytest_twisted.ensureDeferred
async def test_a_malformed_authorization_header_answers_401_json(
    running_proxy: RunningProxy,
) -> None:
    for value in MALFORMED_AUTHORIZATION:
        code, body, _ = await get_protected(running_proxy, {"Authorization": value})
        assert code == 401, (value, body)
        assert body["detail"], value


@pytest_twisted.ensureDeferred
async def test_a_token_signed_with_another_secret_answers_401(
    running_proxy: RunningProxy,
) -> None:
    await running_proxy.register_and_login("alice", PASSWORD)
    forged = issue_token(
        "another-secret-that-is-long-enough-for-hs256",
        TokenClaims(1, "alice", True),
        now=time.time(),
        lifetime=3600,
    )
    code, body, _ = await get_protected(running_proxy, auth(forged))
    assert code == 401
    assert body == {"detail": "Invalid token"}


@pytest_twisted.ensureDeferred
async def test_an_expired_token_answers_401(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login("alice", PASSWORD)
    code, listing, _ = await get_protected(running_proxy, auth(token))
    assert code == 200, listing
    day = 86400.0
    expired = issue_token(
        secret_of(running_proxy),
        TokenClaims(1, "alice", False),
        now=time.time() - 2 * day,
        lifetime=day,
    )
    code, body, _ = await get_protected(running_proxy, auth(expired))
    assert code == 401
    assert body == {"detail": "Token has expired"}


@pytest_twisted.ensureDeferred
async def test_the_token_lifetime_comes_from_the_configuration(
    database_url: str, tmp_path: Path
) -> None:
    # token_lifetime=0: every token is expired the moment it is issued
    async with proxy_with(database_url, tmp_path / "proxy", token_lifetime=0.0) as running:
        token = await running.register_and_login("alice", PASSWORD)
        code, body, _ = await get_protected(running, auth(token))
        assert (code, body) == (401, {"detail": "Token has expired"})


@pytest_twisted.ensureDeferred
async def test_a_token_is_accepted_with_the_bearer_scheme_too(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login("alice", PASSWORD)
    for scheme in ("JWT", "Bearer", "bearer"):
        code, body, _ = await get_protected(running_proxy, {"Authorization": f"{scheme} {token}"})
        assert code == 200, (scheme, body)
