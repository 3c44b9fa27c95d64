"""S3 connections on a real proxy (SQLite and PostgreSQL) against a real S3 endpoint: moto's
server on a loopback port, reached by boto3 over HTTP. Staff add, list, change, validate,
activate and remove connections; nobody ever gets the secret key back, not in an answer, not in
a log line, not from the database column."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from moto.server import ThreadedMotoServer
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

from common.errors import BadRequest
from common.s3 import S3Settings, make_client
from proxy.remote import connection_fields
from proxy.remote.connections import probe
from tests.conftest import RunningProxy, auth, proxy_with
from tests.contract_check import declared_routes
from tests.proc import BIN, free_port
from tests.test_nodes_api import call, staff_token

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzqEXAMPLE-7f3Q"
ACCESS = "AKIAPYARCHIVETEST"
BUCKET = "pyarchive-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with the bucket BUCKET."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client(endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def client(endpoint: str) -> Any:
    return make_client(S3Settings(BUCKET, "us-east-1", ACCESS, SECRET, endpoint_url=endpoint))


def connection(endpoint: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "bucket": BUCKET,
        "access_key": ACCESS,
        "secret_key": SECRET,
        **changes,
    }


def secret_parts(secret: str = SECRET) -> list[str]:
    """The secret, and pieces of it distinctive enough that none may be shown either."""
    return [secret, secret[:-4], secret[4:20], secret[-12:-4]]


@implementer(ILogObserver)
class Recorder:
    """Every answer's text and every log line while it is installed."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lines: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        self.lines.append(f"{formatEvent(event)} {event!r}")

    async def call(
        self, proxy: RunningProxy, method: str, path: str, token: str | None, body: Any = None
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": auth(token) if token else {}}
        if body is not None:
            kwargs["json"] = body
        response = await treq.request(method, f"{proxy.url}{path}", **kwargs)
        text = await response.text()
        self.texts.append(text)
        return response.code, (json.loads(text) if text else None)

    def assert_no_secret(self, secret: str = SECRET) -> None:
        for piece in secret_parts(secret):
            for text in self.texts:
                assert piece not in text
            for line in self.lines:
                assert piece not in line


@pytest_twisted.async_yield_fixture
async def recorder() -> AsyncIterator[Recorder]:
    recording = Recorder()
    globalLogPublisher.addObserver(recording)
    try:
        yield recording
    finally:
        globalLogPublisher.removeObserver(recording)


async def stored_rows(proxy: RunningProxy, table: str) -> Any:
    return await proxy.proxy.db.run(lambda txn: txn.all(f"SELECT * FROM {table}"))


# ---------------------------------------------------------------- pure parts


def test_the_examples_in_the_docstrings_hold() -> None:
    results = doctest.testmod(connection_fields)
    assert results.attempted > 0 and results.failed == 0


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1", "http://", "http://user:pw@127.0.0.1:9000", "http://h:0",
     "http://h/bucket", "http://h?x=1", "127.0.0.1:9000", 5,
     # urlsplit raises ValueError on these two (a 500 before they were caught)
     "http://[", "http://a\uff03b"],
)  # fmt: skip
def test_an_endpoint_must_be_a_bare_http_url(url: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        connection_fields.check_endpoint(url)
    assert caught.value.extra == {"field": "endpoint_url"}


def test_a_probe_that_cannot_make_a_client_says_why_and_hides_the_secret() -> None:
    # botocore refuses region "0" before any request: that was a 500 from /validate.
    settings = S3Settings("bucket", "0", "AKIA", "0-very-secret-key", "http://127.0.0.1:9")
    ok, detail = probe(settings)
    assert not ok and detail.startswith("Making the S3 client failed: InvalidRegionError")
    assert settings.secret_key not in detail


# ---------------------------------------------------------------- over HTTP


# A real change for PATCH: an empty one is refused (400) before the name is looked up.
S3_ROUTES = declared_routes(
    "/api/s3-connections/",
    name="main",
    bodies={"POST": {"name": "x"}, "PATCH": {"region": "eu-west-1"}},
)


@pytest_twisted.ensureDeferred
async def test_the_s3_routes_need_a_token_and_staff(
    running_proxy: RunningProxy, s3_endpoint: str
) -> None:
    boss = await staff_token(running_proxy)
    code, _ = await call(
        running_proxy, "POST", "/api/s3-connections/", boss, connection(s3_endpoint)
    )
    assert code == 201
    alice = await running_proxy.register_and_login()
    for method, path, body in S3_ROUTES:
        assert (await call(running_proxy, method, path, None, body))[0] == 401, (method, path)
        code, error = await call(running_proxy, method, path, alice, body)
        assert (code, error) == (403, {"detail": "Staff only"}), (method, path)
    code, listing = await call(running_proxy, "GET", "/api/s3-connections/", boss)
    assert [(c["name"], c["region"]) for c in listing] == [("main", "us-east-1")]


@pytest_twisted.ensureDeferred
async def test_a_connection_is_added_listed_changed_and_removed(
    running_proxy: RunningProxy, s3_endpoint: str
) -> None:
    boss = await staff_token(running_proxy)
    code, added = await call(
        running_proxy, "POST", "/api/s3-connections/", boss, connection(s3_endpoint)
    )
    assert code == 201
    assert added == {
        "name": "main",
        "endpoint_url": s3_endpoint,
        "region": "us-east-1",
        "bucket": BUCKET,
        "prefix": "pyarchive",
        "access_key": ACCESS,
        "secret_key_hint": "…7f3Q",
        "secret_unreadable": False,
        "active": False,
        "validated_at": None,
        "validation_ok": None,
        "validation_detail": "",
        "created_at": added["created_at"],
        "updated_at": added["created_at"],
    }
    assert await call(running_proxy, "GET", "/api/s3-connections/", boss) == (200, [added])
    assert await call(running_proxy, "GET", "/api/s3-connections/main/", boss) == (200, added)

    code, changed = await call(
        running_proxy, "PATCH", "/api/s3-connections/main/", boss,
        {"prefix": "archive/one", "secret_key": "another-secret-key-9zZ9"},
    )  # fmt: skip
    assert code == 200
    assert (changed["prefix"], changed["secret_key_hint"]) == ("archive/one", "…9zZ9")
    assert changed["updated_at"] >= added["updated_at"]
    settings = await running_proxy.proxy.s3_connections.settings("main")
    assert (settings.secret_key, settings.object_key("ab")) == (
        "another-secret-key-9zZ9",
        "archive/one/ab",
    )

    assert await call(running_proxy, "DELETE", "/api/s3-connections/main/", boss) == (204, None)
    assert (await call(running_proxy, "GET", "/api/s3-connections/main/", boss))[0] == 404
    assert await call(running_proxy, "GET", "/api/s3-connections/", boss) == (200, [])
    logged = [e["event"] for e in (await call(running_proxy, "GET", "/api/system-log/", boss))[1]]
    assert {"s3.created", "s3.updated", "s3.deleted"} <= set(logged)


@pytest_twisted.ensureDeferred
async def test_bad_input_unknown_names_and_duplicates_are_refused(
    running_proxy: RunningProxy, s3_endpoint: str
) -> None:
    boss = await staff_token(running_proxy)
    good = connection(s3_endpoint)
    bad_fields = [
        ({k: v for k, v in good.items() if k != "region"}, "region"),
        ({k: v for k, v in good.items() if k != "secret_key"}, "secret_key"),
        ({**good, "secret_key": ""}, "secret_key"),
        ({**good, "secret_key": "has a space"}, "secret_key"),
        ({**good, "access_key": 12}, "access_key"),
        ({**good, "bucket": "Bad_Bucket"}, "bucket"),
        ({**good, "endpoint_url": "http://user:pw@127.0.0.1:9"}, "endpoint_url"),
        ({**good, "prefix": "/leading/slash"}, "prefix"),
        ({**good, "name": "no spaces please"}, "name"),
    ]
    for body, field in bad_fields:
        code, error = await call(running_proxy, "POST", "/api/s3-connections/", boss, body)
        assert (code, error.get("field")) == (400, field), body
    code, error = await call(
        running_proxy, "POST", "/api/s3-connections/", boss, {**good, "colour": "red"}
    )
    assert (code, error["fields"]) == (400, ["colour"])
    response = await treq.post(
        f"{running_proxy.url}/api/s3-connections/?secret_key=in-the-url",
        json={k: v for k, v in good.items() if k != "secret_key"},
        headers=auth(boss),
    )
    assert response.code == 400 and (await response.json())["fields"] == ["secret_key"]
    assert (await call(running_proxy, "GET", "/api/s3-connections/", boss)) == (200, [])

    assert (await call(running_proxy, "POST", "/api/s3-connections/", boss, good))[0] == 201
    code, error = await call(running_proxy, "POST", "/api/s3-connections/", boss, good)
    assert (code, error["field"]) == (409, "name")
    code, error = await call(
        running_proxy, "PATCH", "/api/s3-connections/main/", boss, {"name": "x"}
    )
    assert (code, error["fields"]) == (400, ["name"])
    code, error = await call(running_proxy, "PATCH", "/api/s3-connections/main/", boss, {})
    assert code == 400
    code, error = await call(
        running_proxy, "PATCH", "/api/s3-connections/main/", boss, {"bucket": "x"}
    )
    assert (code, error["field"]) == (400, "bucket")
    for method, path, change in S3_ROUTES[2:]:
        path = path.replace("/main/", "/nothing/")
        code, _ = await call(running_proxy, method, path, boss, change)
        assert code == 404, (method, path)


@pytest_twisted.ensureDeferred
async def test_validation_makes_real_requests_and_records_what_happened(
    running_proxy: RunningProxy, s3_endpoint: str
) -> None:
    boss = await staff_token(running_proxy)
    body = connection(s3_endpoint, prefix="validated")
    await call(running_proxy, "POST", "/api/s3-connections/", boss, body)
    code, checked = await call(running_proxy, "POST", "/api/s3-connections/main/validate", boss)
    assert code == 200
    assert (checked["validation_ok"], checked["validated_at"] is not None) == (True, True)
    assert "wrote and deleted validated/pyarchive-probe-" in checked["validation_detail"]
    left = client(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix="validated/")
    assert left.get("KeyCount", 0) == 0  # the probe object was removed

    code, changed = await call(
        running_proxy, "PATCH", "/api/s3-connections/main/", boss, {"bucket": "no-such-bucket"}
    )
    assert (changed["validation_ok"], changed["validated_at"]) == (None, None)  # forgotten
    code, checked = await call(running_proxy, "POST", "/api/s3-connections/main/validate", boss)
    assert code == 200
    assert checked["validation_ok"] is False
    assert checked["validation_detail"].startswith("HeadBucket failed: ClientError 404")
    assert "no such bucket" in checked["validation_detail"]
    code, shown = await call(running_proxy, "GET", "/api/s3-connections/main/", boss)
    assert shown == checked
    code, logged = await call(running_proxy, "GET", "/api/system-log/?level=warn", boss)
    assert [e["event"] for e in logged] == ["s3.validated"]


@pytest_twisted.ensureDeferred
async def test_validation_fails_while_s3_is_down_and_works_once_it_is_back(
    running_proxy: RunningProxy,
) -> None:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client(endpoint).create_bucket(Bucket=BUCKET)
        boss = await staff_token(running_proxy)
        await call(running_proxy, "POST", "/api/s3-connections/", boss, connection(endpoint))
        validate = "/api/s3-connections/main/validate"
        assert (await call(running_proxy, "POST", validate, boss))[1]["validation_ok"] is True
        server.stop()
        code, checked = await call(running_proxy, "POST", validate, boss)
        assert (code, checked["validation_ok"]) == (200, False)
        assert "EndpointConnectionError" in checked["validation_detail"]
        server.start()
        assert (await call(running_proxy, "POST", validate, boss))[1]["validation_ok"] is True
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_exactly_one_connection_is_active(
    running_proxy: RunningProxy, s3_endpoint: str
) -> None:
    boss = await staff_token(running_proxy)
    store = running_proxy.proxy.s3_connections
    assert await store.active() is None
    for name in ("one", "two"):
        body = connection(s3_endpoint, name=name, prefix=name)
        assert (await call(running_proxy, "POST", "/api/s3-connections/", boss, body))[0] == 201
    code, one = await call(running_proxy, "POST", "/api/s3-connections/one/activate", boss)
    assert (code, one["active"]) == (200, True)
    active = await store.active()
    assert active is not None
    assert (active.name, active.prefix, active.secret_key) == ("one", "one", SECRET)
    assert "wJalr" not in repr(active)
    code, two = await call(running_proxy, "POST", "/api/s3-connections/two/activate", boss)
    assert two["active"] is True
    code, listing = await call(running_proxy, "GET", "/api/s3-connections/", boss)
    assert [(c["name"], c["active"]) for c in listing] == [("one", False), ("two", True)]
    rows = await running_proxy.proxy.db.run(
        lambda txn: txn.all("SELECT name FROM s3_connections WHERE active = 1")
    )
    assert rows == [("two",)]
    active = await store.active()
    assert active is not None and active.name == "two"
    code, again = await call(running_proxy, "POST", "/api/s3-connections/two/activate", boss)
    assert (code, again["active"]) == (200, True)  # activating the active one is harmless
    code, error = await call(running_proxy, "DELETE", "/api/s3-connections/two/", boss)
    assert code == 409 and "activate another" in error["detail"]
    assert (await call(running_proxy, "DELETE", "/api/s3-connections/one/", boss))[0] == 204
    assert (await call(running_proxy, "POST", "/api/s3-connections/one/activate", boss))[0] == 404


@pytest_twisted.ensureDeferred
async def test_the_secret_never_appears_in_answers_logs_or_the_database(
    running_proxy: RunningProxy, s3_endpoint: str, recorder: Recorder
) -> None:
    boss = await staff_token(running_proxy)
    base = "/api/s3-connections/"
    steps: list[tuple[str, str, Any]] = [
        ("POST", base, connection(s3_endpoint)),
        ("POST", base, connection(s3_endpoint)),  # 409
        ("POST", base, connection(s3_endpoint, name="bad", bucket="B!")),  # 400
        ("POST", base, connection(s3_endpoint, name="other", bucket="missing-bucket")),
        ("GET", base, None),
        ("GET", f"{base}main/", None),
        ("POST", f"{base}main/validate", None),
        ("POST", f"{base}other/validate", None),  # fails: no such bucket
        ("PATCH", f"{base}main/", {"region": "eu-west-1", "secret_key": SECRET}),
        ("POST", f"{base}main/activate", None),
        ("DELETE", f"{base}main/", None),  # 409
        ("GET", "/api/system-log/?level=debug", None),
        ("GET", "/api/jobs/", None),
    ]
    for method, path, body in steps:
        await recorder.call(running_proxy, method, path, boss, body)
    assert await running_proxy.proxy.s3_connections.active() is not None
    assert len(recorder.texts) == len(steps)
    assert any("s3.validated" in line for line in recorder.lines)  # the log was captured
    recorder.assert_no_secret()
    for table in ("s3_connections", "system_log", "jobs"):
        rows = repr(await stored_rows(running_proxy, table))
        for piece in secret_parts():
            assert piece not in rows, table


@pytest_twisted.ensureDeferred
async def test_a_secret_sealed_under_another_key_is_flagged_until_sent_again(
    database_url: str, tmp_path: Path, s3_endpoint: str
) -> None:
    async with proxy_with(database_url, tmp_path / "proxy", encryption_key="key-one") as first:
        boss = await staff_token(first)
        await call(first, "POST", "/api/s3-connections/", boss, connection(s3_endpoint))
        await call(first, "POST", "/api/s3-connections/main/activate", boss)
    async with proxy_with(database_url, tmp_path / "proxy", encryption_key="key-two") as second:
        boss = await staff_token(second)
        code, shown = await call(second, "GET", "/api/s3-connections/main/", boss)
        assert code == 200
        assert (shown["secret_key_hint"], shown["secret_unreadable"], shown["active"]) == (
            None,
            True,
            True,
        )
        assert await second.proxy.s3_connections.active() is None
        assert await second.proxy.s3_connections.active() is None  # said once, not every time
        code, logged = await call(second, "GET", "/api/system-log/?level=error", boss)
        assert [e["event"] for e in logged] == ["s3.secret_unreadable"]
        assert "PATCH /api/s3-connections/main/" in logged[0]["message"]
        code, checked = await call(second, "POST", "/api/s3-connections/main/validate", boss)
        assert (code, checked["validation_ok"]) == (200, False)
        assert "cannot be opened" in checked["validation_detail"]
        code, fixed = await call(
            second, "PATCH", "/api/s3-connections/main/", boss, {"secret_key": SECRET}
        )
        assert (code, fixed["secret_key_hint"], fixed["secret_unreadable"]) == (
            200,
            "…7f3Q",
            False,
        )
        active = await second.proxy.s3_connections.active()
        assert active is not None and active.secret_key == SECRET


@pytest_twisted.ensureDeferred
async def test_a_connection_whose_secret_cannot_be_opened_is_not_activated(
    database_url: str, tmp_path: Path, s3_endpoint: str
) -> None:
    async with proxy_with(database_url, tmp_path / "proxy", encryption_key="key-one") as first:
        boss = await staff_token(first)
        await call(first, "POST", "/api/s3-connections/", boss, connection(s3_endpoint))
    async with proxy_with(database_url, tmp_path / "proxy", encryption_key="key-two") as second:
        boss = await staff_token(second)
        code, error = await call(second, "POST", "/api/s3-connections/main/activate", boss)
        assert (code, error["field"]) == (409, "secret_key")
        code, shown = await call(second, "GET", "/api/s3-connections/main/", boss)
        assert shown["active"] is False


# ---------------------------------------------------------------- the command line


def _proxy_cli(
    data_dir: Path, *args: str, secret: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYARCHIVE_")}
    if secret is not None:
        env["PYARCHIVE_S3_SECRET_KEY"] = secret
    return subprocess.run(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_command_line_adds_lists_validates_and_activates(
    tmp_path: Path, s3_endpoint: str
) -> None:
    data = tmp_path / "proxy"
    added = _proxy_cli(
        data, "s3", "add", "main", "--endpoint-url", s3_endpoint, "--region", "us-east-1",
        "--bucket", BUCKET, "--access-key", ACCESS, "--prefix", "cli", secret=SECRET,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "main\tinactive" in added.stdout and "…7f3Q" in added.stdout
    validated = _proxy_cli(data, "s3", "validate", "main")
    assert validated.returncode == 0, validated.stderr
    assert "wrote and deleted cli/pyarchive-probe-" in validated.stdout
    activated = _proxy_cli(data, "s3", "activate", "main")
    assert activated.returncode == 0 and "main\tactive" in activated.stdout
    moved = _proxy_cli(data, "s3", "update", "main", "--bucket", "no-such-bucket")
    assert moved.returncode == 0, moved.stderr
    failed = _proxy_cli(data, "s3", "validate", "main")
    assert failed.returncode == 1 and "does not work" in failed.stderr
    listed = _proxy_cli(data, "s3", "list")
    assert listed.returncode == 0 and "no-such-bucket" in listed.stdout
    for done in (added, validated, activated, moved, failed, listed):
        for piece in secret_parts():
            assert piece not in done.stdout + done.stderr
