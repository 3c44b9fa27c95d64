"""Listing at scale (issue 15): the keyset cursor (``?after=``), the page counter kept beside
the account, and pages by number read from the nearer end, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
import pytest_twisted
import treq

from common.db import Database, Txn, parse_database_url
from proxy import migrations
from proxy.catalog import store
from proxy.catalog.files import cursor_token
from tests.conftest import RunningProxy, answer, auth


def _many_files(txn: Txn, owner_id: int, paths: list[str], first_id: int = 0) -> list[str]:
    """Files straight into the catalogue through the store's own functions; their ids."""
    now = time.time()
    blob, _ = store.ensure_blob(txn, owner_id, "ab" * 32, "cd" * 16, 1, now)
    made = []
    for number, path in enumerate(paths, start=first_id):
        name = path.rsplit("/", 1)[-1]
        file_id, _ = store.add_version(
            txn, owner_id, None, f"{owner_id:08x}{number:024x}", name, blob, now, "", path
        )
        made.append(file_id)
    return made


async def _owner(proxy: RunningProxy, name: str) -> int:
    user = await proxy.proxy.db.run(store.user_by_name, name)
    assert user is not None
    return int(user.id)


async def get(proxy: RunningProxy, token: str, path: str) -> tuple[int, Any]:
    return await answer(await treq.get(f"{proxy.url}{path}", headers=auth(token)))


async def _delete(proxy: RunningProxy, token: str, file_id: str) -> None:
    response = await treq.delete(f"{proxy.url}/storage/files/{file_id}/", headers=auth(token))
    assert response.code == 204, await response.text()


@pytest_twisted.ensureDeferred
async def test_paging_by_cursor_skips_and_repeats_nothing_while_files_come_and_go(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login("alice")
    await running_proxy.register_and_login("bob")
    db = running_proxy.proxy.db
    paths = [f"{'Dd'[n % 2]}/{n:03}" for n in range(60)]
    random.Random(5).shuffle(paths)  # ids (made in this order) are not in path order
    made_ids = await db.run(_many_files, await _owner(running_proxy, "alice"), paths)
    ids = dict(zip(paths, made_ids, strict=True))
    # Bob's files sort among Alice's: none may show up in her pages.
    await db.run(_many_files, await _owner(running_proxy, "bob"), paths, 100)

    seen: list[str] = []
    expected = sorted(paths)
    link: str | None = f"{running_proxy.url}/storage/files/?after=&page_size=7"
    owner = await _owner(running_proxy, "alice")
    made = 1000
    while link is not None:
        code, page = await answer(await treq.get(link, headers=auth(alice)))
        assert code == 200, page
        assert page["previous"] is None
        assert all(
            f["id"] in ids.values() or f["path"].startswith(("0", "z")) for f in page["results"]
        )
        seen += [f["path"] for f in page["results"]]
        link = page["next"]
        if link is None or len(seen) > 40:
            continue
        # Between pages: one file already listed goes, one not yet listed goes, one comes
        # before the position (not shown: it is behind) and one after it (shown in its place).
        await _delete(running_proxy, alice, ids[seen[-3]])
        ahead = next(p for p in reversed(expected) if p not in seen and p in ids)
        await _delete(running_proxy, alice, ids.pop(ahead))
        expected.remove(ahead)
        behind, after = f"0/{made}", f"z/{made}"
        await db.run(_many_files, owner, [behind, after], made)
        expected.append(after)
        made += 2
    assert len(seen) == len(set(seen))
    assert seen == sorted(expected)
    code, last = await get(running_proxy, alice, "/storage/files/?after=&page_size=1000")
    # Two went and two came per page turned: Alice still has 60 files.
    assert made > 1006
    assert last["count"] == len(last["results"]) == 60


@pytest_twisted.ensureDeferred
async def test_a_cursor_page_keeps_the_prefix_and_page_size_in_its_next_link(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login("alice")
    owner = await _owner(running_proxy, "alice")
    await running_proxy.proxy.db.run(_many_files, owner, [f"d 1/{n}" for n in range(5)] + ["e"])
    code, first = await get(running_proxy, alice, "/storage/files/?after=&page_size=2&prefix=d+1/")
    assert code == 200 and first["count"] == 5
    assert [f["path"] for f in first["results"]] == ["d 1/0", "d 1/1"]
    asked = dict(parse_qsl(urlsplit(first["next"]).query, keep_blank_values=True))
    last = first["results"][-1]
    assert asked == {"page_size": "2", "prefix": "d 1/", "after": cursor_token("d 1/1", last["id"])}
    seen = [f["path"] for f in first["results"]]
    link = first["next"]
    while link is not None:
        code, page = await answer(await treq.get(link, headers=auth(alice)))
        seen += [f["path"] for f in page["results"]]
        link = page["next"]
    assert seen == [f"d 1/{n}" for n in range(5)]


@pytest_twisted.ensureDeferred
async def test_a_tampered_or_made_up_cursor_is_refused_400_naming_after(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login("alice")
    owner = await _owner(running_proxy, "alice")
    ids = await running_proxy.proxy.db.run(_many_files, owner, ["a", "b", "c"])
    _, first = await get(running_proxy, alice, "/storage/files/?after=&page_size=1")
    token = dict(parse_qsl(urlsplit(first["next"]).query))["after"]
    text, check = token.split(".")
    flipped = ("B" if text[3] != "B" else "C").join((text[:3], text[4:]))
    made_up = cursor_token("b", ids[1]).split(".")[0] + "." + check
    for bad in (f"{flipped}.{check}", f"{text}.{check[::-1]}", text, made_up, "%FF", "..", "é"):
        code, body = await get(running_proxy, alice, f"/storage/files/?after={quote(bad)}")
        assert (code, body) == (400, {"detail": "Invalid cursor.", "field": "after"}), bad
    code, body = await get(running_proxy, alice, f"/storage/files/?page=2&after={token}")
    assert (code, body["field"]) == (400, "after")
    code, body = await get(running_proxy, alice, f"/storage/files/?after={token}")
    assert code == 200 and [f["path"] for f in body["results"]] == ["b", "c"]


@pytest_twisted.ensureDeferred
async def test_the_count_follows_uploads_new_versions_moves_and_deletions(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob")

    async def upload(token: str, path: str, content: bytes) -> str:
        query = urlencode({"filename": path.rsplit("/")[-1], "path": path,
                           "md5": hashlib.md5(content).hexdigest()})  # fmt: skip
        response = await treq.post(
            f"{running_proxy.url}/storage/tmp-upload/?{query}", data=content, headers=auth(token)
        )
        code, body = await answer(response)
        assert code == 200, body
        return str(body["file_id"])

    async def counts() -> tuple[int, int, int, int]:
        got = []
        for query in ("", "?after=", "?prefix=a/", "?after=&prefix=a/"):
            _, body = await get(running_proxy, alice, f"/storage/files/{query}")
            got.append(body["count"])
        return got[0], got[1], got[2], got[3]

    first = await upload(alice, "a/1", b"one")
    await upload(alice, "a/2", b"two")
    await upload(alice, "b/3", b"three")
    await upload(bob, "a/1", b"bob's")
    assert await counts() == (3, 3, 2, 2)
    await upload(alice, "a/1", b"one, again")  # a version, not a file
    assert await counts() == (3, 3, 2, 2)
    response = await treq.patch(
        f"{running_proxy.url}/storage/files/{first}/", json={"path": "b/1"}, headers=auth(alice)
    )
    assert response.code == 200, await response.text()
    assert await counts() == (3, 3, 1, 1)
    await _delete(running_proxy, alice, first)
    assert await counts() == (2, 2, 1, 1)

    def counted(txn: Txn) -> list[tuple[Any, ...]]:
        return txn.all(
            "SELECT u.id, u.file_count, (SELECT COUNT(*) FROM files f WHERE f.owner_id = u.id)"
            " FROM users u ORDER BY u.id"
        )

    assert [(int(c), int(n)) for _, c, n in await running_proxy.proxy.db.run(counted)] == [
        (2, 2),
        (1, 1),
    ]


@pytest_twisted.ensureDeferred
async def test_every_page_by_number_or_position_is_in_code_point_order_read_from_either_end(
    database_url: str,
) -> None:
    db = Database(parse_database_url(database_url))
    try:
        await db.run(migrations.migrate)
        user = await db.run(store.create_user, "alice", "", "x", False, time.time())
        assert user is not None
        paths = [f"{'ÉeE'[n % 3]}{n:02}" for n in range(23)]
        await db.run(_many_files, user.id, paths)
        in_order = sorted(paths)
        for size in (1, 4, 5, 22, 23, 1000):
            for offset in range(0, 23, size):
                count, files = await db.run(store.list_files, user.id, size, offset)
                assert count == 23
                assert [f.path for f in files] == in_order[offset : offset + size], (size, offset)
        count, files = await db.run(store.list_files, user.id, 5, 23)
        assert (count, files) == (23, [])
        # And by position, in the same code point order (PostgreSQL in its "C" collation).
        for size in (1, 4, 23):
            seen: list[str] = []
            after: tuple[str, str] | None = None
            while True:
                files, more = await db.run(store.files_after, user.id, size, after)
                seen += [f.path for f in files]
                if not more:
                    break
                after = (files[-1].path, files[-1].id)
            assert seen == in_order, size
    finally:
        db.close()


def _listing_migration() -> int:
    names = [name for name, _ in migrations.MIGRATIONS]
    return next(i for i, name in enumerate(names, start=1) if name.startswith("listing at scale"))


@pytest_twisted.ensureDeferred
async def test_the_migration_counts_the_files_each_account_already_has(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(parse_database_url(database_url))
    try:
        monkeypatch.setattr(
            migrations, "MIGRATIONS", migrations.MIGRATIONS[: _listing_migration() - 1]
        )
        await db.run(migrations.migrate)
        now = time.time()
        alice = await db.run(store.create_user, "alice", "", "x", False, now)
        bob = await db.run(store.create_user, "bob", "", "x", False, now)
        carol = await db.run(store.create_user, "carol", "", "x", False, now)
        assert alice is not None and bob is not None and carol is not None

        def old_files(txn: Txn, owner: int, paths: list[str]) -> None:
            for path in paths:
                txn.execute(
                    "INSERT INTO files (id, owner_id, filename, path, current_version,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
                    (f"{owner:04x}{path:0>28}", owner, path, path, now, now),
                )

        await db.run(old_files, alice.id, ["a", "b", "c"])
        await db.run(old_files, bob.id, ["a"])
        monkeypatch.undo()
        assert await db.run(migrations.migrate) >= 1
        assert [await db.run(store.count_files, u.id) for u in (alice, bob, carol)] == [3, 1, 0]
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_uploads_finishing_at_once_each_count_their_file_once(
    running_proxy: RunningProxy,
) -> None:
    from twisted.internet.defer import ensureDeferred, gatherResults

    alice = await running_proxy.register_and_login("alice")

    async def upload(path: str, content: bytes) -> int:
        query = urlencode({"filename": path, "md5": hashlib.md5(content).hexdigest()})
        response = await treq.post(
            f"{running_proxy.url}/storage/tmp-upload/?{query}", data=content, headers=auth(alice)
        )
        return int(response.code)

    # Twelve new files and four second uploads to the first four paths, all at once.
    asked = [(f"f{n}", b"%d" % n) for n in range(12)] + [
        (f"f{n}", b"again %d" % n) for n in range(4)
    ]
    codes = await gatherResults([ensureDeferred(upload(p, c)) for p, c in asked])
    assert codes == [200] * len(asked)
    _, body = await get(running_proxy, alice, "/storage/files/?after=")
    assert body["count"] == len(body["results"]) == 12


@pytest.mark.parametrize("counted", [None, 999], ids=["from-before-the-counter", "planted"])
def test_a_restored_snapshot_gets_each_accounts_file_count_from_its_files(
    database_url: str, counted: int | None
) -> None:
    from proxy.remote.restore_target import RestoreTarget, load_rows

    users = ["id", "username", "email", "password_hash", "is_staff", "created_at"]
    if counted is not None:
        users.append("file_count")
    files = ["id", "owner_id", "filename", "path", "current_version", "created_at", "updated_at"]
    user_rows = [[1, "alice", "", "x", 0, 1.0], [2, "bob", "", "x", 0, 1.0]]
    records: list[dict[str, Any]] = [
        {"table": "users", "row": dict(zip(users, row + [counted] * (counted is not None),
                                           strict=True))}
        for row in user_rows
    ]  # fmt: skip
    for number, owner in enumerate([1, 1, 1, 2]):
        row = [f"{number:032x}", owner, f"f{number}", f"f{number}", 1, 1.0, 1.0]
        records.append({"table": "files", "row": dict(zip(files, row, strict=True))})
    records.append({"end": {"rows": {"users": 2, "files": 4}}})
    header = {"tables": [{"name": "users", "columns": users}, {"name": "files", "columns": files}]}
    with RestoreTarget(parse_database_url(database_url)) as target:
        target.begin()
        migrations.migrate(target.txn)
        load_rows(target, header, iter(records))
        found = [store.count_files(target.txn, owner) for owner in (1, 2)]
        target.rollback()
    assert found == [3, 1]
