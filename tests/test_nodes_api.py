"""Storage nodes over HTTP on a real proxy: the staff-only /api/nodes/ routes, and what files
look like on a proxy that has no nodes yet (no replicas; downloads served by the proxy)."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

import pytest_twisted
import treq

from tests.conftest import RunningProxy, answer, auth
from tests.contract_check import declared_routes

NODE = {
    "name": "n1",
    "url": "http://127.0.0.1:9",  # nothing listens there: pings fail
    "rsync_url": "rsync://127.0.0.1:9/replicas",
    "zone": "a",
}


async def call(
    proxy: RunningProxy, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = auth(token) if token is not None else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    return await answer(await treq.request(method, f"{proxy.url}{path}", **kwargs))


async def staff_token(proxy: RunningProxy) -> str:
    await proxy.proxy.accounts.set_staff("boss", "Staff-Pass-2024")
    response = await treq.post(
        f"{proxy.url}/api-token-auth/", json={"username": "boss", "password": "Staff-Pass-2024"}
    )
    assert response.code == 200, await response.text()
    return str((await response.json())["token"])


ROUTES = declared_routes("/api/nodes/", name="n1")


@pytest_twisted.ensureDeferred
async def test_the_node_routes_need_a_token(running_proxy: RunningProxy) -> None:
    for method, path, body in ROUTES:
        code, _ = await call(running_proxy, method, path, None, body)
        assert code == 401, (method, path)


@pytest_twisted.ensureDeferred
async def test_the_node_routes_are_refused_to_users_who_are_not_staff(
    running_proxy: RunningProxy,
) -> None:
    boss = await staff_token(running_proxy)
    assert (await call(running_proxy, "POST", "/api/nodes/", boss, NODE))[0] == 201
    alice = await running_proxy.register_and_login()
    for method, path, body in ROUTES:
        code, error = await call(running_proxy, method, path, alice, body)
        assert (code, error) == (403, {"detail": "Staff only"}), (method, path)
    code, nodes = await call(running_proxy, "GET", "/api/nodes/", boss)
    assert code == 200
    assert [(n["name"], n["status"]) for n in nodes] == [("n1", "down")]  # not drained


@pytest_twisted.ensureDeferred
async def test_a_registered_node_is_listed_as_down_until_a_ping_succeeds(
    running_proxy: RunningProxy,
) -> None:
    boss = await staff_token(running_proxy)
    assert await call(running_proxy, "GET", "/api/nodes/", boss) == (200, [])
    code, added = await call(running_proxy, "POST", "/api/nodes/", boss, NODE)
    assert code == 201
    code, nodes = await call(running_proxy, "GET", "/api/nodes/", boss)
    assert code == 200
    assert nodes == [added]
    assert added == {
        **NODE,
        "status": "down",  # never seen yet
        "state": "active",
        "free_bytes": None,
        "total_bytes": None,
        "last_seen": None,
        "rtt_ms": None,
        "replicas": 0,
    }


@pytest_twisted.ensureDeferred
async def test_registering_a_node_refuses_bad_fields_and_a_name_taken(
    running_proxy: RunningProxy,
) -> None:
    boss = await staff_token(running_proxy)
    assert (await call(running_proxy, "POST", "/api/nodes/", boss, NODE))[0] == 201
    code, error = await call(running_proxy, "POST", "/api/nodes/", boss, {**NODE, "zone": "b"})
    assert code == 409 and error["field"] == "name"
    # "http://[" and a fullwidth "#" make urlsplit raise: refused, not a 500.
    bad_urls = ("ftp://127.0.0.1:9", "http://[", "http://a\uff03b")
    others: tuple[dict[str, Any], ...] = ({"rsync_url": "http://127.0.0.1:9/r"}, {"zone": {}})
    for bad in (*({"url": url} for url in bad_urls), *others):
        code, error = await call(
            running_proxy, "POST", "/api/nodes/", boss, {**NODE, "name": "n2", **bad}
        )
        assert (code, error["field"]) == (400, next(iter(bad))), bad
    code, error = await call(running_proxy, "POST", "/api/nodes/", boss, {**NODE, "size": 1})
    assert (code, error["fields"]) == (400, ["size"])
    code, nodes = await call(running_proxy, "GET", "/api/nodes/", boss)
    assert [(n["name"], n["zone"]) for n in nodes] == [("n1", "a")]


@pytest_twisted.ensureDeferred
async def test_a_node_can_be_drained_and_made_active_again(running_proxy: RunningProxy) -> None:
    boss = await staff_token(running_proxy)
    await call(running_proxy, "POST", "/api/nodes/", boss, NODE)
    code, node = await call(running_proxy, "PATCH", "/api/nodes/n1/", boss, {"state": "draining"})
    assert code == 200
    assert (node["status"], node["state"]) == ("draining", "draining")
    code, nodes = await call(running_proxy, "GET", "/api/nodes/", boss)
    assert nodes[0]["status"] == "draining"
    code, node = await call(running_proxy, "PATCH", "/api/nodes/n1/", boss, {"state": "active"})
    assert (code, node["status"], node["state"]) == (200, "down", "active")


@pytest_twisted.ensureDeferred
async def test_changing_a_node_refuses_an_unknown_state_or_node(
    running_proxy: RunningProxy,
) -> None:
    boss = await staff_token(running_proxy)
    await call(running_proxy, "POST", "/api/nodes/", boss, NODE)
    code, error = await call(running_proxy, "PATCH", "/api/nodes/n1/", boss, {"state": "asleep"})
    assert (code, error["field"]) == (400, "state")
    code, error = await call(running_proxy, "PATCH", "/api/nodes/n1/", boss, {"name": "n9"})
    assert (code, error["fields"]) == (400, ["name"])
    code, _ = await call(running_proxy, "PATCH", "/api/nodes/n9/", boss, {"state": "draining"})
    assert code == 404
    code, nodes = await call(running_proxy, "GET", "/api/nodes/", boss)
    assert nodes[0]["state"] == "active"


@pytest_twisted.ensureDeferred
async def test_a_node_without_files_is_removed_once(running_proxy: RunningProxy) -> None:
    boss = await staff_token(running_proxy)
    await call(running_proxy, "POST", "/api/nodes/", boss, NODE)
    assert await call(running_proxy, "DELETE", "/api/nodes/n1/", boss) == (204, None)
    assert (await call(running_proxy, "DELETE", "/api/nodes/n1/", boss))[0] == 404
    assert await call(running_proxy, "GET", "/api/nodes/", boss) == (200, [])


# ---------------------------------------------------------------- files on a proxy without nodes


async def upload(proxy: RunningProxy, token: str, filename: str, content: bytes) -> str:
    """Store a whole file in one request; its file id."""
    query = urlencode({"filename": filename, "md5": hashlib.md5(content).hexdigest()})
    response = await treq.post(
        f"{proxy.url}/storage/tmp-upload/?{query}",
        data=content,
        headers={**auth(token), "Content-Type": "application/octet-stream"},
    )
    code, body = await answer(response)
    assert code == 200, body
    return str(body["file_id"])


@pytest_twisted.ensureDeferred
async def test_a_file_on_a_proxy_without_nodes_has_no_replicas(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = await upload(running_proxy, token, "notes.txt", b"kept on the proxy")
    code, detail = await call(running_proxy, "GET", f"/storage/files/{file_id}/", token)
    assert code == 200
    assert detail["replicas"] == []


@pytest_twisted.ensureDeferred
async def test_a_download_on_a_proxy_without_nodes_is_served_by_the_proxy(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    content = bytes(range(256)) * 100
    file_id = await upload(running_proxy, token, "bytes.bin", content)
    response = await treq.get(
        f"{running_proxy.url}/storage/download/{file_id}/", headers=auth(token)
    )
    assert response.code == 200
    assert response.headers.getRawHeaders("location") is None
    assert await response.content() == content
