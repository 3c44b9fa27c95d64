"""Shared fixtures: a metadata database of each kind, and a real proxy on a loopback port.

Every metadata test runs twice, on SQLite and on PostgreSQL (127.0.0.1:5432, user postgres,
database ``pyarchive_test``, one fresh schema per test). Without a reachable PostgreSQL those
variants are skipped with the reason, except when ``CI`` is set: then they fail.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
import treq
from twisted.internet.address import IPv4Address

from tests.contract_check import check_answer

if TYPE_CHECKING:
    from tests.s3server import S3Server

PG_HOST = os.environ.get("PYARCHIVE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PYARCHIVE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PYARCHIVE_TEST_PG_USER", "postgres")
PG_DATABASE = "pyarchive_test"


def _pg_connect(dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=3
    )


_pg_problem: str | None = None
_pg_checked = False


def _postgres_available() -> str | None:
    """None if the test database is usable, else why not (checked once per run)."""
    global _pg_checked, _pg_problem
    if _pg_checked:
        return _pg_problem
    _pg_checked = True
    try:
        conn = _pg_connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {PG_DATABASE}")
        conn.close()
    except Exception as exc:  # any reason at all: report it
        _pg_problem = f"PostgreSQL at {PG_HOST}:{PG_PORT} is not usable: {exc}".strip()
    return _pg_problem


def require_postgres() -> None:
    problem = _postgres_available()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI is set, so PostgreSQL tests must run)")
    pytest.skip(problem)


def _database_url(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory}/meta.sqlite3"
        return
    require_postgres()
    schema = "t_" + uuid.uuid4().hex[:16]
    conn = _pg_connect(PG_DATABASE)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}?schema={schema}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty metadata database of each kind."""
    yield from _database_url(request.param, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same, shared by one module's tests (for a proxy process that outlives a test)."""
    yield from _database_url(request.param, tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto's S3 server over real HTTP (``tests/s3server.py``), one per test module; each
    test takes a bucket of its own (``s3.bucket()``). A module may define its own ``s3``."""
    from tests.s3server import S3Server

    server = S3Server().start()
    try:
        yield server
    finally:
        server.close()


@dataclass
class RunningProxy:
    url: str
    proxy: Any
    data_dir: Path

    async def register_and_login(
        self, username: str = "alice", password: str = "s3cret-pass!"
    ) -> str:
        response = await treq.post(
            f"{self.url}/api/auth/register",
            json={"username": username, "password": password},
        )
        assert response.code == 201, await response.text()
        response = await treq.post(
            f"{self.url}/api-token-auth/", json={"username": username, "password": password}
        )
        assert response.code == 200, await response.text()
        return str((await response.json())["token"])


@asynccontextmanager
async def proxy_with(
    database_url: str, data_dir: Path, *, clock: Any = None, **settings: Any
) -> AsyncIterator[RunningProxy]:
    """The real proxy, in this process, on a free loopback port, with some settings changed
    (and time read from ``clock`` if one is given)."""
    from twisted.internet import reactor

    from proxy.config import ProxyConfig
    from proxy.service import build_proxy

    config = replace(
        ProxyConfig(),
        data_dir=str(data_dir),
        listen="tcp:0:interface=127.0.0.1",
        database=database_url,
        secret_key="test-secret-" + uuid.uuid4().hex,
        **settings,
    )
    proxy = build_proxy(config, reactor, clock=clock)
    port = await proxy.start()
    address = port.getHost()
    assert isinstance(address, IPv4Address), address
    try:
        yield RunningProxy(f"http://127.0.0.1:{address.port}", proxy, data_dir)
    finally:
        await proxy.stop()


@pytest_twisted.async_yield_fixture
async def running_proxy(database_url: str, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    """The real proxy, in this process, on a free loopback port, over each database."""
    async with proxy_with(database_url, tmp_path / "proxy") as running:
        yield running


# What treq's ``headers=`` takes: its dict type is invariant, so a ``dict[str, str]`` is not
# one; helpers that build request headers return this.
RequestHeaders = dict[str | bytes, str | bytes]


def auth(token: str) -> RequestHeaders:
    return {"Authorization": f"JWT {token}"}


def request_headers(headers: Mapping[str, str]) -> RequestHeaders:
    """The same headers, typed as treq's ``headers=`` takes them."""
    return {name: value for name, value in headers.items()}


async def answer(response: Any) -> tuple[int, Any]:
    """Status and JSON body of a treq response: every answer of the API but a 204 is JSON."""
    raw = await response.content()
    if response.code == 204:
        assert raw == b"", (response.code, raw[:200])
        return response.code, None
    content_type = response.headers.getRawHeaders("content-type", [""])[0]
    assert content_type == "application/json", (response.code, content_type, raw[:200])
    body = json.loads(raw)
    request = response.request
    check_answer(request.method.decode(), request.absoluteURI.decode(), response.code, body)
    return response.code, body
