"""Moving (renaming) a file, ``PATCH /storage/files/<id>/`` (issue 13: the sync moves what it
deletes on the server into a trash folder, so that it stays recoverable): the file keeps its
id and versions and is listed at its new path; a taken path is 409 and a bad one 400, with
nothing changed; only its owner can move it; the owner is told (``file.moved``). Both
databases."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest_twisted
import treq

from tests.conftest import RunningProxy, answer, auth
from tests.test_events_api import md5


async def stored(proxy: RunningProxy, token: str, path: str, content: bytes) -> dict[str, Any]:
    url = f"{proxy.url}/storage/tmp-upload/?" + urlencode(
        {"filename": path.rpartition("/")[2], "path": path, "md5": md5(content)}
    )
    response = await treq.post(
        url, data=content, headers={**auth(token), "Content-Type": "application/octet-stream"}
    )
    code, body = await answer(response)
    assert code == 200, body
    return dict(body)


async def move(proxy: RunningProxy, token: str, file_id: str, body: Any) -> tuple[int, Any]:
    return await answer(
        await treq.patch(f"{proxy.url}/storage/files/{file_id}/", json=body, headers=auth(token))
    )


async def paths(proxy: RunningProxy, token: str) -> list[str]:
    code, body = await answer(
        await treq.get(f"{proxy.url}/storage/files/?page_size=1000", headers=auth(token))
    )
    assert code == 200, body
    return [item["path"] for item in body["results"]]


@pytest_twisted.ensureDeferred
async def test_a_moved_file_keeps_its_id_and_versions_at_its_new_path(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    first = await stored(running_proxy, token, "docs/a.txt", b"one")
    await stored(running_proxy, token, "docs/a.txt", b"two")  # version 2
    code, moved = await move(running_proxy, token, first["file_id"], {"path": "old/a-2024.txt"})
    assert code == 200, moved
    assert (moved["id"], moved["path"], moved["filename"]) == (
        first["file_id"], "old/a-2024.txt", "a-2024.txt",
    )  # fmt: skip
    assert [v["number"] for v in moved["versions"]] == [2, 1]
    assert await paths(running_proxy, token) == ["old/a-2024.txt"]
    again = await stored(running_proxy, token, "docs/a.txt", b"three")  # the old path is free
    assert again["file_id"] != first["file_id"]


@pytest_twisted.ensureDeferred
async def test_a_taken_or_bad_path_is_refused_and_changes_nothing(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    a = await stored(running_proxy, token, "a.txt", b"a")
    await stored(running_proxy, token, "b.txt", b"b")
    code, body = await move(running_proxy, token, a["file_id"], {"path": "b.txt"})
    assert (code, body["detail"]) == (409, "Another of your files is at that path")
    for bad in ("/abs.txt", "x/../y", "", "a//b"):
        code, body = await move(running_proxy, token, a["file_id"], {"path": bad})
        assert code == 400 and body.get("field") == "path", (bad, body)
    code, body = await move(running_proxy, token, a["file_id"], {"name": "c.txt"})
    assert code == 400
    assert await paths(running_proxy, token) == ["a.txt", "b.txt"]


@pytest_twisted.ensureDeferred
async def test_only_the_owner_moves_a_file_and_is_told(running_proxy: RunningProxy) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob", "an0ther-pass!")
    made = await stored(running_proxy, alice, "mine.txt", b"m")
    code, _ = await move(running_proxy, bob, made["file_id"], {"path": "stolen.txt"})
    assert code == 404
    code, _ = await move(running_proxy, alice, made["file_id"], {"path": "kept/mine.txt"})
    assert code == 200
    code, changes = await answer(
        await treq.get(f"{running_proxy.url}/api/changes?since=0&timeout=0", headers=auth(alice))
    )
    assert code == 200
    moved = [e["data"] for e in changes["events"] if e["type"] == "file.moved"]
    assert moved == [{"file_id": made["file_id"], "path": "kept/mine.txt", "filename": "mine.txt"}]
    assert await paths(running_proxy, bob) == []
