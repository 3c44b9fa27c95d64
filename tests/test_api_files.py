"""Stored files over HTTP: listing, versions, rollback, deletion, downloads with ranges, and
the service routes (health, API description, documentation, unknown paths and methods)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any
from urllib.parse import urlencode

import pytest_twisted
import treq

from proxy.api.app import ProxyApp
from proxy.api.docs_page import redoc_asset_path
from proxy.api.openapi import operations
from tests.conftest import RunningProxy, answer, auth

# Read off the route declarations, not kept by hand.
ROUTES = [(op.method, op.path) for op in operations()]

CONTENT = random.Random(11).randbytes(32_634)  # the size of the seed's documented example


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def store(
    proxy: RunningProxy, token: str, filename: str, content: bytes, **query: str
) -> dict[str, Any]:
    """Upload a whole file in one request; the completed upload's JSON."""
    url = f"{proxy.url}/storage/tmp-upload/?" + urlencode(
        {"filename": filename, "md5": md5(content), **query}
    )
    response = await treq.post(
        url, data=content, headers={**auth(token), "Content-Type": "application/octet-stream"}
    )
    code, body = await answer(response)
    assert code == 200, body
    assert body["status"] == 2
    return dict(body)


async def get(proxy: RunningProxy, token: str, path: str) -> tuple[int, Any]:
    return await answer(await treq.get(f"{proxy.url}{path}", headers=auth(token)))


async def fetch(
    proxy: RunningProxy, token: str, file_id: str, query: str = "", **more: str
) -> tuple[int, Any, bytes]:
    """Status, headers and body of a download (Content-Length, which Twisted's client keeps
    apart from the other headers, is put back among them)."""
    response = await treq.get(
        f"{proxy.url}/storage/download/{file_id}/{query}", headers=dict(auth(token), **more)
    )
    headers = response.headers.copy()
    if isinstance(response.length, int):
        headers.setRawHeaders("content-length", [str(response.length)])
    return response.code, headers, bytes(await response.content())


def one(headers: Any, name: str) -> str:
    values = headers.getRawHeaders(name)
    assert values is not None and len(values) == 1, (name, values)
    return str(values[0])


def blob_names(proxy: RunningProxy) -> set[str]:
    """sha256s of the blob files on disk (named ``<sha256>.<blob id>``)."""
    return {path.name.split(".")[0] for path in (proxy.data_dir / "blobs").glob("*/*")}


# ---------------------------------------------------------------- listing


@pytest_twisted.ensureDeferred
async def test_files_are_listed_twenty_to_a_page_with_links_between_pages(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    for number in range(25):
        await store(running_proxy, token, f"file-{number:02}.txt", b"content %d" % number)

    code, first = await get(running_proxy, token, "/storage/files/")
    assert code == 200
    assert first["count"] == 25
    assert len(first["results"]) == 20
    assert first["previous"] is None
    assert first["next"] == f"{running_proxy.url}/storage/files/?page=2"

    code, second = await get(running_proxy, token, "/storage/files/?page=2")
    assert code == 200
    assert second["count"] == 25
    assert len(second["results"]) == 5
    assert second["next"] is None
    assert second["previous"] == f"{running_proxy.url}/storage/files/?page=1"
    names = {f["filename"] for f in first["results"] + second["results"]}
    assert names == {f"file-{number:02}.txt" for number in range(25)}

    for page in ("3", "0", "abc", "-1", "99999999999999999999", "%C2%B2", "%D9%A1", "1.0"):
        code, body = await get(running_proxy, token, f"/storage/files/?page={page}")
        assert (code, body) == (404, {"detail": "Invalid page."}), page


@pytest_twisted.ensureDeferred
async def test_an_empty_listing_is_one_empty_page(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    code, body = await get(running_proxy, token, "/storage/files/")
    assert (code, body) == (200, {"count": 0, "next": None, "previous": None, "results": []})


@pytest_twisted.ensureDeferred
async def test_the_listing_holds_only_the_callers_files(running_proxy: RunningProxy) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob")
    await store(running_proxy, alice, "alice.txt", b"alice's")
    await store(running_proxy, bob, "bob.txt", b"bob's")
    await store(running_proxy, bob, "shared-name.txt", b"bob's other")
    await store(running_proxy, alice, "shared-name.txt", b"alice's other")

    _, listing = await get(running_proxy, alice, "/storage/files/")
    assert listing["count"] == 2
    assert sorted(f["filename"] for f in listing["results"]) == ["alice.txt", "shared-name.txt"]
    for found in listing["results"]:
        assert [v["number"] for v in found["versions"]] == [1]


@pytest_twisted.ensureDeferred
async def test_a_file_in_the_listing_has_its_sizes_checksums_and_links(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    done = await store(running_proxy, token, "some-image.png", CONTENT)
    _, listing = await get(running_proxy, token, "/storage/files/")
    [found] = listing["results"]
    file_id = done["file_id"]
    assert found["id"] == file_id
    assert found["filename"] == "some-image.png"
    assert found["size"] == len(CONTENT)
    assert found["md5"] == md5(CONTENT)
    assert found["sha256"] == sha256(CONTENT)
    assert found["download_url"] == f"{running_proxy.url}/storage/download/{file_id}/"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", found["created_at"])
    [version] = found["versions"]
    assert version["number"] == 1
    assert (version["size"], version["md5"], version["sha256"]) == (
        len(CONTENT),
        md5(CONTENT),
        sha256(CONTENT),
    )
    code, detail = await get(running_proxy, token, f"/storage/files/{file_id}/")
    assert code == 200
    assert detail.pop("replicas") == []  # no storage nodes here: the proxy keeps it
    # Both say where it stands in the S3 tier; the detail adds the rest of the remote tier:
    # nothing mirrored yet, so no parts.
    assert (found["remote_state"], found["remote_verified"]) == ("local", False)
    assert detail.pop("parts") == []
    assert detail.pop("mirror_node") is None
    assert detail.pop("mirror_detail") == ""
    assert detail.pop("restore") == {
        "node": None,
        "parts_restored": 0,
        "parts_total": 0,
        "detail": "",
    }
    assert detail.pop("cache_url") == f"{running_proxy.url}/storage/files/{file_id}/cache"
    assert detail.pop("uncache_url") == f"{running_proxy.url}/storage/files/{file_id}/uncache"
    assert detail == found


# ---------------------------------------------------------------- versions and rollback


@pytest_twisted.ensureDeferred
async def test_uploading_the_same_filename_again_adds_a_version_listed_newest_first(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    first = await store(running_proxy, token, "notes.txt", b"first draft")
    second = await store(running_proxy, token, "notes.txt", b"second draft")
    assert second["file_id"] == first["file_id"]
    assert (first["version"], second["version"]) == (1, 2)

    code, found = await get(running_proxy, token, f"/storage/files/{first['file_id']}/")
    assert code == 200
    assert found["version"] == 2
    assert found["md5"] == md5(b"second draft")
    assert [v["number"] for v in found["versions"]] == [2, 1]
    assert [v["md5"] for v in found["versions"]] == [md5(b"second draft"), md5(b"first draft")]
    _, listing = await get(running_proxy, token, "/storage/files/")
    assert listing["count"] == 1


@pytest_twisted.ensureDeferred
async def test_rolling_back_makes_an_old_version_current_as_a_new_version(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "notes.txt", b"first draft"))["file_id"]
    await store(running_proxy, token, "notes.txt", b"second draft")
    blobs_before = blob_names(running_proxy)

    response = await treq.post(
        f"{running_proxy.url}/storage/files/{file_id}/rollback/",
        json={"version": 1},
        headers=auth(token),
    )
    code, found = await answer(response)
    assert code == 200, found
    assert found["version"] == 3
    assert [v["number"] for v in found["versions"]] == [3, 2, 1]
    newest, _, oldest = found["versions"]
    assert newest["md5"] == oldest["md5"] == found["md5"] == md5(b"first draft")
    assert newest["sha256"] == oldest["sha256"]
    assert blob_names(running_proxy) == blobs_before  # the content is shared, not copied
    code, _, body = await fetch(running_proxy, token, file_id)
    assert (code, body) == (200, b"first draft")


@pytest_twisted.ensureDeferred
async def test_rolling_back_takes_the_version_as_a_form_field_too(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "notes.txt", b"first draft"))["file_id"]
    await store(running_proxy, token, "notes.txt", b"second draft")
    response = await treq.post(
        f"{running_proxy.url}/storage/files/{file_id}/rollback/",
        data={"version": "1"},
        headers=auth(token),
    )
    code, found = await answer(response)
    assert (code, found["version"], found["md5"]) == (200, 3, md5(b"first draft"))


@pytest_twisted.ensureDeferred
async def test_rolling_back_to_a_missing_or_malformed_version_is_refused(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "notes.txt", b"first draft"))["file_id"]
    url = f"{running_proxy.url}/storage/files/{file_id}/rollback/"
    cases: list[tuple[Any, int]] = [
        ({"version": 2}, 404),
        ({"version": 0}, 400),
        ({"version": -1}, 400),
        ({"version": "one"}, 400),
        ({"version": True}, 400),
        ({"version": 1.5}, 400),
        ({}, 400),
        ({"version": 1, "force": True}, 400),
    ]
    for body, status in cases:
        code, refusal = await answer(await treq.post(url, json=body, headers=auth(token)))
        assert code == status, (body, refusal)
        assert refusal["detail"], body
    _, found = await get(running_proxy, token, f"/storage/files/{file_id}/")
    assert [v["number"] for v in found["versions"]] == [1]


# ---------------------------------------------------------------- deletion


@pytest_twisted.ensureDeferred
async def test_deleting_a_file_removes_it_and_the_content_nothing_else_uses(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    doomed = await store(running_proxy, token, "doomed.txt", b"only here")
    await store(running_proxy, token, "doomed.txt", b"shared content")  # version 2
    kept = await store(running_proxy, token, "kept.txt", b"shared content")
    assert blob_names(running_proxy) == {sha256(b"only here"), sha256(b"shared content")}

    response = await treq.delete(
        f"{running_proxy.url}/storage/files/{doomed['file_id']}/", headers=auth(token)
    )
    code, _ = await answer(response)
    assert code == 204
    code, body = await get(running_proxy, token, f"/storage/files/{doomed['file_id']}/")
    assert (code, body) == (404, {"detail": "File not found"})
    code, _, _ = await fetch(running_proxy, token, doomed["file_id"])
    assert code == 404
    assert blob_names(running_proxy) == {sha256(b"shared content")}

    _, listing = await get(running_proxy, token, "/storage/files/")
    assert [f["id"] for f in listing["results"]] == [kept["file_id"]]
    code, _, body = await fetch(running_proxy, token, kept["file_id"])
    assert (code, body) == (200, b"shared content")

    response = await treq.delete(
        f"{running_proxy.url}/storage/files/{doomed['file_id']}/", headers=auth(token)
    )
    assert response.code == 404


# ---------------------------------------------------------------- downloads


@pytest_twisted.ensureDeferred
async def test_a_download_sends_the_whole_file_with_its_name_and_etag(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "Résumé 2024.pdf", CONTENT))["file_id"]
    code, headers, body = await fetch(running_proxy, token, file_id)
    assert code == 200
    assert body == CONTENT
    assert one(headers, "content-length") == str(len(CONTENT))
    assert one(headers, "accept-ranges") == "bytes"
    assert one(headers, "etag") == f'"{sha256(CONTENT)}"'
    disposition = one(headers, "content-disposition")
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%202024.pdf" in disposition


@pytest_twisted.ensureDeferred
async def test_a_head_request_gets_a_downloads_headers_without_the_body(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "some-image.png", CONTENT))["file_id"]
    response = await treq.head(
        f"{running_proxy.url}/storage/download/{file_id}/", headers=auth(token)
    )
    assert response.code == 200
    assert await response.content() == b""
    assert one(response.headers, "etag") == f'"{sha256(CONTENT)}"'
    assert "some-image.png" in one(response.headers, "content-disposition")


@pytest_twisted.ensureDeferred
async def test_a_download_serves_single_byte_ranges(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "some-image.png", CONTENT))["file_id"]
    size = len(CONTENT)

    code, headers, body = await fetch(running_proxy, token, file_id, Range="bytes=0-29999")
    assert code == 206
    assert body == CONTENT[:30000]
    assert one(headers, "content-range") == f"bytes 0-29999/{size}"
    first = body

    # The seed's README asks for one byte past the end; it is clipped to the file.
    code, headers, body = await fetch(running_proxy, token, file_id, Range="bytes=30000-32634")
    assert code == 206
    assert one(headers, "content-range") == f"bytes 30000-{size - 1}/{size}"
    assert first + body == CONTENT

    code, headers, body = await fetch(running_proxy, token, file_id, Range="bytes=-100")
    assert (code, body) == (206, CONTENT[-100:])
    assert one(headers, "content-range") == f"bytes {size - 100}-{size - 1}/{size}"

    code, headers, body = await fetch(running_proxy, token, file_id, Range="bytes=32000-")
    assert (code, body) == (206, CONTENT[32000:])


@pytest_twisted.ensureDeferred
async def test_an_unsatisfiable_range_answers_416_with_the_size(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "some-image.png", CONTENT))["file_id"]
    code, headers, _ = await fetch(running_proxy, token, file_id, Range="bytes=40000-50000")
    assert code == 416
    assert one(headers, "content-range") == f"bytes */{len(CONTENT)}"


@pytest_twisted.ensureDeferred
async def test_if_range_gets_the_range_only_while_the_etag_matches(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "some-image.png", CONTENT))["file_id"]
    etag = f'"{sha256(CONTENT)}"'

    code, _, body = await fetch(
        running_proxy, token, file_id, Range="bytes=10-19", **{"If-Range": etag}
    )
    assert (code, body) == (206, CONTENT[10:20])

    code, _, body = await fetch(
        running_proxy, token, file_id, Range="bytes=10-19", **{"If-Range": f'"{"0" * 64}"'}
    )
    assert (code, body) == (200, CONTENT)


@pytest_twisted.ensureDeferred
async def test_a_download_of_an_old_version_serves_its_content(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "notes.txt", b"first draft"))["file_id"]
    await store(running_proxy, token, "notes.txt", b"second draft")
    assert (await fetch(running_proxy, token, file_id))[2] == b"second draft"
    code, headers, body = await fetch(running_proxy, token, file_id, "?version=1")
    assert (code, body) == (200, b"first draft")
    assert one(headers, "etag") == f'"{sha256(b"first draft")}"'
    assert (await fetch(running_proxy, token, file_id, "?version=2"))[2] == b"second draft"
    for bad in ("?version=3", "?version=0", "?version=x", "?version=%C2%B9", "?colour=blue"):
        code, _, body = await fetch(running_proxy, token, file_id, bad)
        assert code in {400, 404}, (bad, code)
        assert json.loads(body)["detail"], bad


@pytest_twisted.ensureDeferred
async def test_an_empty_file_downloads_as_an_empty_body(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "empty.txt", b""))["file_id"]
    code, headers, body = await fetch(running_proxy, token, file_id)
    assert (code, body) == (200, b"")
    assert one(headers, "content-length") == "0"


# ---------------------------------------------------------------- whose file


@pytest_twisted.ensureDeferred
async def test_another_users_file_is_not_found_for_any_operation(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob")
    file_id = (await store(running_proxy, alice, "private.txt", b"alice only"))["file_id"]
    base = f"{running_proxy.url}/storage"
    attempts = {
        "detail": treq.get(f"{base}/files/{file_id}/", headers=auth(bob)),
        "delete": treq.delete(f"{base}/files/{file_id}/", headers=auth(bob)),
        "rollback": treq.post(
            f"{base}/files/{file_id}/rollback/", json={"version": 1}, headers=auth(bob)
        ),
        "download": treq.get(f"{base}/download/{file_id}/", headers=auth(bob)),
    }
    for operation, attempt in attempts.items():
        code, body = await answer(await attempt)
        assert (code, body) == (404, {"detail": "File not found"}), operation
    code, found = await get(running_proxy, alice, f"/storage/files/{file_id}/")
    assert (code, [v["number"] for v in found["versions"]]) == (200, [1])
    assert (await fetch(running_proxy, alice, file_id))[2] == b"alice only"


@pytest_twisted.ensureDeferred
async def test_an_unknown_file_id_is_not_found(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    for file_id in ("0" * 32, "not-an-id", "A" * 32):
        code, body = await get(running_proxy, token, f"/storage/files/{file_id}/")
        assert (code, body) == (404, {"detail": "File not found"}), file_id
        code, _, _ = await fetch(running_proxy, token, file_id)
        assert code == 404, file_id


@pytest_twisted.ensureDeferred
async def test_the_file_routes_need_a_token(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    file_id = (await store(running_proxy, token, "private.txt", b"secret"))["file_id"]
    base = f"{running_proxy.url}/storage"
    for attempt in [
        treq.get(f"{base}/files/"),
        treq.get(f"{base}/files/{file_id}/"),
        treq.delete(f"{base}/files/{file_id}/"),
        treq.post(f"{base}/files/{file_id}/rollback/", json={"version": 1}),
        treq.get(f"{base}/download/{file_id}/"),
    ]:
        code, body = await answer(await attempt)
        assert code == 401, body
    assert (await fetch(running_proxy, token, file_id))[2] == b"secret"


# ---------------------------------------------------------------- service routes


@pytest_twisted.ensureDeferred
async def test_health_answers_ok_without_a_token(running_proxy: RunningProxy) -> None:
    code, body = await answer(await treq.get(f"{running_proxy.url}/health"))
    assert (code, body) == (200, {"status": "ok"})


@pytest_twisted.ensureDeferred
async def test_the_api_description_is_served_and_names_this_server(
    running_proxy: RunningProxy,
) -> None:
    code, spec = await answer(await treq.get(f"{running_proxy.url}/openapi.json"))
    assert code == 200
    assert spec["openapi"].startswith("3.")
    assert spec["servers"] == [{"url": running_proxy.url}]
    described = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete", "head", "options"}
    }
    assert described == set(ROUTES)


def test_every_documented_route_is_a_route_of_the_app_and_back() -> None:
    served = set()
    for rule in ProxyApp.app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        served |= {
            (method, path)
            for method in rule.methods or ()
            if not (method == "HEAD" and "GET" in (rule.methods or ()))  # werkzeug adds it
        }
    assert served == set(ROUTES)


@pytest_twisted.ensureDeferred
async def test_the_documentation_page_is_html_served_by_the_proxy(
    running_proxy: RunningProxy,
) -> None:
    response = await treq.get(f"{running_proxy.url}/docs/redoc/")
    assert response.code == 200
    assert one(response.headers, "content-type").startswith("text/html")
    page = await response.text()
    assert 'spec-url="/openapi.json"' in page
    [script] = re.findall(r'<script src="([^"]+)"', page)
    assert script.startswith("/"), "the page must load ReDoc from the proxy, not a CDN"

    asset = await treq.get(f"{running_proxy.url}{script}")
    bundle = redoc_asset_path()
    if bundle is None:  # not fetched on this machine: the proxy says how to get it
        code, body = await answer(asset)
        assert code == 404
        assert "fetch-assets" in body["detail"]
    else:
        assert asset.code == 200
        # text/javascript, as documented (RFC 9239); it was application/javascript before.
        assert one(asset.headers, "content-type") == "text/javascript"
        assert await asset.content() == bundle.read_bytes()


@pytest_twisted.ensureDeferred
async def test_an_unknown_path_answers_404_json(running_proxy: RunningProxy) -> None:
    for path in ("/nothing-here", "/storage/", "/storage/files/x/y/z/"):
        code, body = await answer(await treq.get(f"{running_proxy.url}{path}"))
        assert code == 404, path
        assert body["detail"], path


@pytest_twisted.ensureDeferred
async def test_a_wrong_method_answers_405_json(running_proxy: RunningProxy) -> None:
    cases = [
        ("DELETE", "/health"),
        ("PUT", "/storage/files/"),
        ("PATCH", "/storage/tmp-upload/"),
        ("GET", "/api-token-auth/"),
    ]
    for method, path in cases:
        response = await treq.request(method, f"{running_proxy.url}{path}")
        code, body = await answer(response)
        assert code == 405, (method, path)
        assert body["detail"], (method, path)


@pytest_twisted.ensureDeferred
async def test_a_path_without_its_trailing_slash_is_redirected_in_json_and_does_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    cases = [
        ("GET", "/storage/files?page=1", "/storage/files/?page=1"),
        ("PUT", "/storage/tmp-upload?filename=a.txt", "/storage/tmp-upload/?filename=a.txt"),
        ("POST", "/api-token-auth", "/api-token-auth/"),
    ]
    for method, path, location in cases:
        response = await treq.request(
            method,
            f"{running_proxy.url}{path}",
            data=b"abc",
            headers={**auth(token), "Content-Range": "bytes 0-2/3"},
            allow_redirects=False,
        )
        code, body = await answer(response)
        assert code == 308, (path, code, body)
        assert body["location"] == location
        assert response.headers.getRawHeaders("location") == [location]
    assert list((running_proxy.data_dir / "staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_content_deleted_while_the_same_content_is_uploaded_again_stays_for_the_new_file(
    running_proxy: RunningProxy,
) -> None:
    """The deletion's file removal comes after its commit; an upload of the same bytes that
    completes in between gets a blob row, and file, of its own, which the removal leaves."""
    from proxy.catalog import store as sql
    from proxy.uploads.staging import StagingArea

    token = await running_proxy.register_and_login()
    first = await store(running_proxy, token, "a.bin", b"same bytes")
    db = running_proxy.proxy.db
    owner = (await db.run(sql.user_by_name, "alice")).id
    orphans = await db.run(sql.delete_file, first["file_id"], 0.0)  # committed, files not yet gone
    assert orphans and orphans[0][0] == sha256(b"same bytes")
    second = await store(running_proxy, token, "b.bin", b"same bytes")
    StagingArea(running_proxy.data_dir).remove_blobs(orphans)  # the deletion finishes late
    code, _, body = await fetch(running_proxy, token, second["file_id"])
    assert (code, body) == (200, b"same bytes")
    assert (await db.run(sql.get_file, first["file_id"], owner)) is None
