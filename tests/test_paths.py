"""Files have paths (issue 13): the path rules, both upload dialects with a path, versions by
path, listing by prefix a page at a time in a stable order, and the migration that gave
existing files their filename as path. Both databases."""

from __future__ import annotations

import doctest
import hashlib
import random
import time
import unicodedata
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import pytest_twisted
import treq

from common.db import Database, Txn, parse_database_url
from common.errors import BadRequest
from proxy import migrations
from proxy.catalog import store
from proxy.catalog.files import MAX_PAGE_SIZE, parse_page_size
from proxy.uploads import tus
from proxy.uploads.rules import name_and_path, validate_listing_text, validate_path
from tests.conftest import RunningProxy, answer, auth
from tests.test_api_uploads import multipart
from tests.test_tus_protocol import create, meta, patch

# ---------------------------------------------------------------- the rules, pure

NFD_CAFE = unicodedata.normalize("NFD", "café")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("report.pdf", "report.pdf"),
        ("photos/2024/cat.jpg", "photos/2024/cat.jpg"),
        ("a b/c d.txt", "a b/c d.txt"),
        ("50%_off/.hidden", "50%_off/.hidden"),
        ("...", "..."),
        (f"{NFD_CAFE}/menu.txt", "café/menu.txt"),
        ("x" * 255, "x" * 255),
        ("/".join(["d" * 200] * 5), "/".join(["d" * 200] * 5)),  # 1004 bytes
        ("é" * 127 + "/a", "é" * 127 + "/a"),  # 254 bytes in its first segment
    ],
)
def test_a_good_path_is_kept_nfc_normalised(given: str, kept: str) -> None:
    assert validate_path(given) == kept


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("", "required"),
        (None, "required"),
        (7, "required"),
        ("/etc/passwd", "relative"),
        ("a/", "empty segment"),
        ("a//b", "empty segment"),
        ("./a", "'.' or '..'"),
        ("a/./b", "'.' or '..'"),
        ("a/../b", "'.' or '..'"),
        ("..", "'.' or '..'"),
        ("a\\b", "'\\'"),
        ("a\x00b", "control"),
        ("a/b\nc", "control"),
        ("a\x7f", "control"),
        ("a\x85b", "control"),
        ("a/ /b", "only spaces"),
        ("x" * 256, "255 bytes"),
        ("a/" + "é" * 128, "255 bytes"),
        ("/".join(["d" * 200] * 6), "1024 bytes"),
        ("a\udcffb", "Unicode"),
    ],
)
def test_a_bad_path_is_refused_naming_the_field(given: object, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        validate_path(given)
    assert reason in refused.value.detail
    assert refused.value.extra == {"field": "path"}


def test_the_filename_is_the_paths_last_segment_and_the_path_defaults_to_the_filename() -> None:
    assert name_and_path(None, "docs/a.txt") == ("a.txt", "docs/a.txt")
    assert name_and_path("a.txt", "docs/a.txt") == ("a.txt", "docs/a.txt")
    assert name_and_path("a.txt", "") == ("a.txt", "a.txt")
    assert name_and_path(NFD_CAFE, None) == (NFD_CAFE, "café")  # the name as given
    assert name_and_path(NFD_CAFE, "x/café") == (NFD_CAFE, "x/café")
    with pytest.raises(BadRequest) as refused:
        name_and_path("b.txt", "docs/a.txt")
    assert refused.value.extra == {"field": "filename"}
    with pytest.raises(BadRequest) as refused:
        name_and_path("", None)
    assert refused.value.extra == {"field": "filename"}


@pytest.mark.parametrize("given", ["0", "1001", "-1", "1.5", "abc", "²", "99999999999"])
def test_a_page_size_outside_1_to_1000_is_refused(given: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_page_size(given, 20)
    assert refused.value.extra == {"field": "page_size"}


def test_a_page_size_from_1_to_1000_is_taken_and_none_is_the_default() -> None:
    assert [parse_page_size(v, 20) for v in ("1", "1000", "", None)] == [1, 1000, 20, 20]
    assert MAX_PAGE_SIZE == 1000


def test_a_listing_prefix_is_any_text_without_control_characters() -> None:
    assert validate_listing_text("50%_", "prefix") == "50%_"
    assert validate_listing_text(NFD_CAFE, "prefix") == "café"
    with pytest.raises(BadRequest) as refused:
        validate_listing_text("a\tb", "path")
    assert refused.value.extra == {"field": "path"}


@pytest.mark.parametrize("module", [store, tus], ids=lambda m: m.__name__)
def test_the_examples_in_the_path_helpers_docstrings_hold(module: Any) -> None:
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0


# ---------------------------------------------------------------- over HTTP


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


async def post_whole(
    proxy: RunningProxy, token: str, content: bytes, **query: str
) -> tuple[int, Any]:
    """One-request upload of a raw body with these query arguments (md5 added)."""
    url = f"{proxy.url}/storage/tmp-upload/?" + urlencode({"md5": md5(content), **query})
    headers = {**auth(token), "Content-Type": "application/octet-stream"}
    return await answer(await treq.post(url, data=content, headers=headers))


async def stored(proxy: RunningProxy, token: str, content: bytes, **query: str) -> Any:
    code, body = await post_whole(proxy, token, content, **query)
    assert code == 200 and body["status"] == 2, body
    return body


async def get(proxy: RunningProxy, token: str, path: str) -> tuple[int, Any]:
    return await answer(await treq.get(f"{proxy.url}{path}", headers=auth(token)))


async def listing(proxy: RunningProxy, token: str, **query: str) -> Any:
    code, body = await get(proxy, token, "/storage/files/?" + urlencode(query))
    assert code == 200, body
    return body


@pytest_twisted.ensureDeferred
async def test_a_seed_upload_names_its_path_in_the_query_or_the_form(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    whole = await stored(running_proxy, token, b"one", path="docs/2024/a.txt")
    assert (whole["filename"], whole["path"]) == ("a.txt", "docs/2024/a.txt")

    # A form's first chunk with `path` beside a file part of another name: the path names it.
    content = b"form bytes"
    body, ctype = multipart({"path": "docs/b.txt"}, content, file_name="blob")
    headers = {
        **auth(token),
        "Content-Type": ctype,
        "Content-Range": f"bytes 0-{len(content) - 1}/{len(content)}",
    }
    code, started = await answer(
        await treq.put(f"{running_proxy.url}/storage/tmp-upload/", data=body, headers=headers)
    )
    assert code == 200, started
    assert (started["filename"], started["path"]) == ("b.txt", "docs/b.txt")
    code, done = await answer(
        await treq.post(started["url"], json={"md5": md5(content)}, headers=auth(token))
    )
    assert code == 200 and done["path"] == "docs/b.txt", done
    code, detail = await get(running_proxy, token, f"/storage/files/{done['file_id']}/")
    assert code == 200
    assert (detail["filename"], detail["path"]) == ("b.txt", "docs/b.txt")

    # Without a path, the path is the filename, as before paths.
    plain = await stored(running_proxy, token, b"plain", filename="plain.txt")
    assert plain["path"] == "plain.txt"
    shown = await listing(running_proxy, token)
    assert [f["path"] for f in shown["results"]] == ["docs/2024/a.txt", "docs/b.txt", "plain.txt"]


@pytest_twisted.ensureDeferred
async def test_a_bad_path_or_a_name_that_is_not_its_last_segment_is_400_with_the_field(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    for bad in ("/etc/passwd", "a/../b", "a//b", "a\\b", "x" * 256):
        code, body = await post_whole(running_proxy, token, b"x", path=bad)
        assert code == 400 and body["field"] == "path", (bad, body)
        assert body["detail"]
    code, body = await post_whole(running_proxy, token, b"x", path="d/a.txt", filename="b.txt")
    assert (code, body["field"]) == (400, "filename"), body
    response, _ = await create(running_proxy, token, 1, Upload_Metadata=meta(path="../x"))
    assert response.code == 400
    assert (await get(running_proxy, token, "/storage/files/"))[1]["count"] == 0


@pytest_twisted.ensureDeferred
async def test_a_tus_upload_takes_its_path_from_the_metadata(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    _, url = await create(
        running_proxy, token, 3, Upload_Metadata=meta(path="photos/cat.jpg", name="cat.jpg")
    )
    await patch(url, token, 0, b"cat")
    upload_id = url.rsplit("/", 1)[1]
    code, upload = await get(running_proxy, token, f"/storage/tmp-upload/{upload_id}/")
    assert code == 200 and upload["path"] == "photos/cat.jpg", upload
    code, detail = await get(running_proxy, token, f"/storage/files/{upload['file_id']}/")
    assert (detail["filename"], detail["path"]) == ("cat.jpg", "photos/cat.jpg")


@pytest_twisted.ensureDeferred
async def test_a_second_upload_to_the_same_path_adds_version_2_in_either_dialect(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    first = await stored(running_proxy, token, b"v1", path="notes/todo.txt")
    second = await stored(running_proxy, token, b"v2", path="notes/todo.txt")
    assert (second["file_id"], second["version"]) == (first["file_id"], 2)
    _, url = await create(running_proxy, token, 2, Upload_Metadata=meta(path="notes/todo.txt"))
    await patch(url, token, 0, b"v3")
    code, upload = await get(running_proxy, token, f"/storage/tmp-upload/{url.rsplit('/', 1)[1]}/")
    assert (upload["file_id"], upload["version"]) == (first["file_id"], 3)
    # The same name in another folder is another file; NFC and NFD spell one path.
    other = await stored(running_proxy, token, b"w", path="old/notes/todo.txt")
    assert (other["version"], other["file_id"] != first["file_id"]) == (1, True)
    cafe = await stored(running_proxy, token, b"c1", path="café/menu")
    again = await stored(running_proxy, token, b"c2", path=f"{NFD_CAFE}/menu")
    assert (again["file_id"], again["version"]) == (cafe["file_id"], 2)
    code, detail = await get(running_proxy, token, f"/storage/files/{first['file_id']}/")
    assert code == 200
    assert [v["number"] for v in detail["versions"]] == [3, 2, 1]
    assert detail["path"] == "notes/todo.txt"


@pytest_twisted.ensureDeferred
async def test_a_file_from_before_paths_with_a_name_nfc_changes_still_gets_the_next_version(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    old = await stored(running_proxy, token, b"v1", filename="placeholder")
    db = running_proxy.proxy.db
    # As the migration left it: the name as it was sent (NFD here) is its path.
    await db.run(
        lambda txn: txn.execute(
            "UPDATE files SET filename = ?, path = ? WHERE id = ?",
            (NFD_CAFE, NFD_CAFE, old["file_id"]),
        )
    )
    again = await stored(running_proxy, token, b"v2", filename=NFD_CAFE)
    assert (again["file_id"], again["version"]) == (old["file_id"], 2)
    # In a folder, the NFC path is another file.
    other = await stored(running_proxy, token, b"v3", path=f"d/{NFD_CAFE}")
    assert (other["path"], other["version"]) == ("d/café", 1)


@pytest_twisted.ensureDeferred
async def test_a_parent_gives_the_upload_its_path_and_another_path_is_refused(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    first = await stored(running_proxy, token, b"v1", path="a/b.txt")
    again = await stored(running_proxy, token, b"v2", filename="b.txt", parent=first["file_id"])
    assert (again["file_id"], again["version"], again["path"]) == (first["file_id"], 2, "a/b.txt")
    code, body = await post_whole(
        running_proxy, token, b"v3", path="c/b.txt", parent=first["file_id"]
    )
    assert (code, body["field"]) == (400, "path"), body


@pytest_twisted.ensureDeferred
async def test_two_users_may_keep_a_file_at_the_same_path(running_proxy: RunningProxy) -> None:
    alice = await running_proxy.register_and_login("alice")
    bob = await running_proxy.register_and_login("bob")
    hers = await stored(running_proxy, alice, b"alice's", path="shared/plan.txt")
    his = await stored(running_proxy, bob, b"bob's", path="shared/plan.txt")
    assert hers["file_id"] != his["file_id"] and his["version"] == 1
    found = await listing(running_proxy, bob, path="shared/plan.txt")
    assert [f["id"] for f in found["results"]] == [his["file_id"]]


@pytest_twisted.ensureDeferred
async def test_each_listed_file_says_where_its_current_version_stands_in_s3(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    kept = await stored(running_proxy, token, b"kept locally", path="a/local.txt")
    gone = await stored(running_proxy, token, b"only in S3", path="a/remote.txt")

    def released(txn: Txn) -> None:
        txn.execute(
            "UPDATE blobs SET remote_state = 'remote', remote_verified = 1 WHERE sha256 = ?",
            (hashlib.sha256(b"only in S3").hexdigest(),),
        )

    await running_proxy.proxy.db.run(released)
    found = {f["id"]: f for f in (await listing(running_proxy, token, prefix="a/"))["results"]}
    shown = {key: (f["remote_state"], f["remote_verified"]) for key, f in found.items()}
    assert shown == {kept["file_id"]: ("local", False), gone["file_id"]: ("remote", True)}


@pytest_twisted.ensureDeferred
async def test_a_prefix_takes_percent_underscore_and_case_literally_and_path_finds_one_file(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    paths = ["50%/a", "50x/b", "a_b/c", "axb/d", "A_B/e", "a_b", "a_b/f"]
    for number, path in enumerate(paths):
        await stored(running_proxy, token, b"%d" % number, path=path)

    def shown(body: Any) -> list[str]:
        return [f["path"] for f in body["results"]]

    assert shown(await listing(running_proxy, token, prefix="50%")) == ["50%/a"]
    assert shown(await listing(running_proxy, token, prefix="a_b/")) == ["a_b/c", "a_b/f"]
    assert shown(await listing(running_proxy, token, prefix="a_")) == ["a_b", "a_b/c", "a_b/f"]
    assert shown(await listing(running_proxy, token, prefix="A")) == ["A_B/e"]
    assert (await listing(running_proxy, token, prefix="zzz"))["count"] == 0
    exact = await listing(running_proxy, token, path="a_b")
    assert (exact["count"], shown(exact)) == (1, ["a_b"])
    assert (await listing(running_proxy, token, path="a_"))["count"] == 0
    for field, value in (("prefix", "a\x01"), ("path", "a\nb")):
        code, body = await get(running_proxy, token, f"/storage/files/?{field}={quote(value)}")
        assert (code, body["field"]) == (400, field), body


@pytest_twisted.ensureDeferred
async def test_page_size_is_1_to_1000_and_the_links_keep_it_and_the_prefix(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    for number in range(5):
        await stored(running_proxy, token, b"%d" % number, path=f"d 1/{number}.txt")
    await stored(running_proxy, token, b"other", path="e/x.txt")
    for bad in ("0", "1001", "-3", "two"):
        code, body = await get(running_proxy, token, f"/storage/files/?page_size={bad}")
        assert code == 400 and body["field"] == "page_size", (bad, body)
    first = await listing(running_proxy, token, page_size="2", prefix="d 1/")
    assert (first["count"], len(first["results"]), first["previous"]) == (5, 2, None)
    assert first["next"] == f"{running_proxy.url}/storage/files/?page=2&page_size=2&prefix=d+1%2F"
    seen = [f["path"] for f in first["results"]]
    link = first["next"]
    while link is not None:
        code, page = await answer(await treq.get(link, headers=auth(token)))
        assert code == 200
        seen += [f["path"] for f in page["results"]]
        link = page["next"]
    assert seen == [f"d 1/{number}.txt" for number in range(5)]
    assert (
        page["previous"] == f"{running_proxy.url}/storage/files/?page=2&page_size=2&prefix=d+1%2F"
    )
    assert len((await listing(running_proxy, token, page_size="1000"))["results"]) == 6


def _many_files(txn: Txn, owner_id: int, paths: list[str]) -> None:
    """Files straight into the catalogue (uploading 2,500 would only be slower)."""
    now = time.time()
    blob, _ = store.ensure_blob(txn, owner_id, "ab" * 32, "cd" * 16, 1, now)
    for number, path in enumerate(paths):
        name = path.rsplit("/", 1)[-1]
        store.add_version(txn, owner_id, None, f"{number:032x}", name, blob, now, "", path)


@pytest_twisted.ensureDeferred
async def test_2500_files_page_by_1000_in_path_order_without_duplicates_or_gaps(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    db = running_proxy.proxy.db
    owner = (await db.run(store.user_by_name, "alice")).id
    shapes = ["f{:04}.bin", "Dir/{:04}", "dir/{:04}", "a_b/{:04}", "a-b/{:04}", "é/{:04}", "Z{:04}"]
    paths = [shapes[n % len(shapes)].format(n) for n in range(2500)]
    random.Random(13).shuffle(paths)  # ids (made in this order) are not in path order
    await db.run(_many_files, owner, paths)

    seen: list[str] = []
    link: str | None = f"{running_proxy.url}/storage/files/?page_size=1000"
    pages = 0
    while link is not None:
        code, page = await answer(await treq.get(link, headers=auth(token)))
        assert code == 200 and page["count"] == 2500
        seen += [f["path"] for f in page["results"]]
        link, pages = page["next"], pages + 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 2500
    assert seen == sorted(paths)  # code point order, the same on both databases


# ---------------------------------------------------------------- the migration


def _paths_migration() -> int:
    """The paths migration's number (wherever a merge puts it)."""
    names = [name for name, _ in migrations.MIGRATIONS]
    return next(i for i, name in enumerate(names, start=1) if name.startswith("files have paths"))


def _rows_of_the_old_schema(txn: Txn) -> None:
    now = time.time()
    for user_id, name in ((1, "alice"), (2, "bob")):
        txn.execute(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, '', ?)",
            (user_id, name, now),
        )
    txn.execute(
        "INSERT INTO blobs (id, sha256, md5, size, created_at) VALUES (1, ?, ?, 1, ?)",
        ("ab" * 32, "cd" * 16, now),
    )
    for file_id, owner, filename in (
        ("f1", 1, "a.txt"),
        ("f2", 1, "b 50%.txt"),
        ("f3", 2, "a.txt"),
    ):
        txn.execute(
            "INSERT INTO files (id, owner_id, filename, current_version, created_at, updated_at)"
            " VALUES (?, ?, ?, 1, ?, ?)",
            (file_id, owner, filename, now, now),
        )
        txn.execute(
            "INSERT INTO versions (file_id, number, blob_id, filename, created_at)"
            " VALUES (?, 1, 1, ?, ?)",
            (file_id, filename, now),
        )
    txn.execute(
        "INSERT INTO uploads (id, owner_id, filename, created_at, expires_at)"
        " VALUES ('u1', 1, 'half.bin', ?, ?)",
        (now, now + 3600),
    )


@pytest_twisted.ensureDeferred
async def test_the_migration_gives_existing_files_their_filename_as_path(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(parse_database_url(database_url))
    try:
        before = migrations.MIGRATIONS[: _paths_migration() - 1]
        monkeypatch.setattr(migrations, "MIGRATIONS", before)
        await db.run(migrations.migrate)
        await db.run(_rows_of_the_old_schema)
        monkeypatch.undo()
        assert await db.run(migrations.migrate) >= 1

        def files(txn: Txn) -> list[tuple[Any, ...]]:
            return txn.all("SELECT id, owner_id, filename, path FROM files ORDER BY id")

        assert await db.run(files) == [
            ("f1", 1, "a.txt", "a.txt"),
            ("f2", 1, "b 50%.txt", "b 50%.txt"),
            ("f3", 2, "a.txt", "a.txt"),
        ]
        got = await db.run(store.get_file, "f2", 1)
        assert got is not None and (got.filename, got.path, got.current_version) == (
            "b 50%.txt",
            "b 50%.txt",
            1,
        )
        # An upload to an old file's path adds its version 2; a path is unique per owner.
        blob = store.Blob(1, "ab" * 32, "cd" * 16, 1)
        added = await db.run(store.add_version, 1, None, "n" * 32, "a.txt", blob, 1.0, "", "a.txt")
        assert added == ("f1", 2)

        def duplicate(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO files (id, owner_id, filename, path, current_version, created_at,"
                " updated_at) VALUES ('f9', 1, 'a.txt', 'a.txt', 1, 0, 0)"
            )

        with pytest.raises(Exception, match=r"(?i)unique"):
            await db.run(duplicate)
        upload_path = await db.run(lambda txn: txn.scalar("SELECT path FROM uploads"))
        assert upload_path == ""  # an older upload: its filename is its path at completion
    finally:
        db.close()


def test_a_snapshot_from_before_paths_restores_with_each_files_filename_as_its_path(
    database_url: str,
) -> None:
    from proxy.remote.restore_target import RestoreTarget, load_rows

    users = ["id", "username", "email", "password_hash", "is_staff", "created_at"]
    old_files = ["id", "owner_id", "filename", "current_version", "created_at", "updated_at"]
    header = {
        "tables": [{"name": "users", "columns": users}, {"name": "files", "columns": old_files}]
    }
    records: list[dict[str, Any]] = [
        {"table": "users", "row": dict(zip(users, [1, "alice", "", "h", 0, 1.0], strict=True))},
        *(
            {"table": "files", "row": dict(zip(old_files, [i, 1, n, 1, 1.0, 1.0], strict=True))}
            for i, n in (("f1" * 16, "a.txt"), ("f2" * 16, "b.txt"))
        ),
        {"end": {"rows": {"users": 1, "files": 2}}},
    ]
    with RestoreTarget(parse_database_url(database_url)) as target:
        target.begin()
        migrations.migrate(target.txn)
        assert load_rows(target, header, iter(records))[0] == {"users": 1, "files": 2}
        rows = target.txn.all("SELECT id, filename, path FROM files ORDER BY id")
        target.rollback()
    assert [tuple(row) for row in rows] == [
        ("f1" * 16, "a.txt", "a.txt"), ("f2" * 16, "b.txt", "b.txt")
    ]  # fmt: skip
