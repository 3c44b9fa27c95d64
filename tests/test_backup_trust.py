"""The bucket cannot be turned against the server: every node holds the S3 credentials, so a
snapshot may have been planted by a compromised node. Against moto's S3 server over real HTTP
and both metadata databases: snapshots are signed with a key nodes never see and a restore
refuses what it cannot verify (unless told ``--trust-unsigned``); every restored row is
checked with the API's rules (a blob name that is a path, a ``..`` path, a staff account);
pruning and "the newest" ignore future-dated and unsigned objects; a snapshot without
newlines, or too large, is refused while being read.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.python.threadpool import ThreadPool

from common.s3 import S3Settings, make_client
from proxy.remote import restore_rows
from proxy.remote.restore import Limits, RestoreError, Trust
from proxy.remote.snapshots import SIGNATURE, signature, snapshot_name
from proxy.uploads.staging import StagingArea
from tests.proc import free_port
from tests.test_backup import (
    BACKUP_KEY,
    NOW,
    S3_SECRET,
    backup_of,
    fill_catalogue,
    migrated,
    restore,
    snapshot_lines,
    snapshot_of_catalogue,
    table,
)

Rows = list[dict[str, Any]]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> S3Settings:
    settings = S3Settings(
        bucket=f"trust-{uuid.uuid4().hex[:12]}", region="us-east-1", access_key="testing",
        secret_key=S3_SECRET, endpoint_url=s3_endpoint, prefix="pa", name="main",
    )  # fmt: skip
    make_client(settings).create_bucket(Bucket=settings.bucket)
    return settings


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    threadpool = ThreadPool(minthreads=0, maxthreads=2, name="trust-test")
    threadpool.start()
    yield threadpool
    threadpool.stop()


TRUSTING = Trust(BACKUP_KEY, unsigned=True)  # the operator said --trust-unsigned


def plant(
    s3: S3Settings,
    name: str,
    body: bytes,
    *,
    key: str | None = None,
    metadata: dict[str, str] | None = None,
) -> str:
    """An object under metadata/ as a compromised node would write it: with a right sha256
    (anyone can compute one), signed only if ``key`` is given."""
    sha = hashlib.sha256(body).hexdigest()
    meta = {"sha256": sha, **(metadata or {})}
    if key is not None:
        meta[SIGNATURE] = signature(key, name, sha, len(body))
    object_key = s3.metadata_prefix + name
    make_client(s3).put_object(Bucket=s3.bucket, Key=object_key, Body=body, Metadata=meta)
    return object_key


def packed(lines: Rows) -> bytes:
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return gzip.compress(text.encode(), mtime=0)


def tampered(lines: Rows, edit: Callable[[Rows], Rows]) -> bytes:
    """A genuine snapshot's lines with its rows edited and the trailer made to match."""
    header, rows = lines[0], edit([dict(r, row=dict(r["row"])) for r in lines[1:-1]])
    counts = {t["name"]: 0 for t in header["tables"]}
    for row in rows:
        counts[row["table"]] += 1
    return packed([header, *rows, {"end": {"rows": counts}}])


def later(hours: float) -> str:
    return snapshot_name(NOW + hours * 3600, "ffffffff")


# Planted at the second the genuine snapshot was taken, sorting after it by name.
SORTS_AFTER = snapshot_name(NOW, "ffffffff")


async def empty(database_url: str) -> bool:
    db = await migrated(database_url)
    try:
        counts = [await table(db, f"SELECT COUNT(*) FROM {t}") for t in ("users", "blobs")]
    finally:
        db.close()
    return counts == [[(0,)], [(0,)]]


# ---------------------------------------------------------------- signatures


@pytest_twisted.ensureDeferred
async def test_a_genuinely_signed_snapshot_restores_and_says_it_was_verified(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    key = await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)
    head = make_client(s3).head_object(Bucket=s3.bucket, Key=key)
    assert head["Metadata"][SIGNATURE].startswith("hmac-sha256:")
    said: list[str] = []
    summary = await restore(database_url, s3, say=said.append)
    assert summary["signed"] is True and summary["users"] == 3
    assert any("signature and sha256 verified" in line for line in said), said


@pytest_twisted.ensureDeferred
async def test_an_unsigned_or_wrongly_signed_snapshot_is_refused_without_trust_unsigned(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    source = await migrated(f"sqlite:///{tmp_path}/source.sqlite3")
    try:
        await source.run(fill_catalogue, s3)
        job, _ = backup_of(source, pool, s3, key="some-other-proxys-key")
        other = (await job.run_once())["snapshot"]
    finally:
        source.close()
    name = other.rsplit("/", 1)[1]
    with pytest.raises(RestoreError, match=r"none of the 1 snapshot\(s\) .* is signed by this "
                                           r"backup key: refused; --trust-unsigned"):  # fmt: skip
        await restore(database_url, s3)
    with pytest.raises(RestoreError, match=f"snapshot {name} is not signed by this backup key"):
        await restore(database_url, s3, name)
    unsigned = plant(s3, SORTS_AFTER, snapshot_body(s3, other))
    with pytest.raises(RestoreError, match="is not signed by this backup key"):
        await restore(database_url, s3, unsigned)
    with pytest.raises(RestoreError, match=r"^no backup key to verify the snapshots with"):
        await restore(database_url, s3, trust=Trust(None))
    assert await empty(database_url)

    said: list[str] = []
    summary = await restore(database_url, s3, trust=TRUSTING, say=said.append)
    assert summary["signed"] is False and summary["snapshot"] == SORTS_AFTER
    assert any("UNSIGNED" in line for line in said), said


def snapshot_body(s3: S3Settings, key: str) -> bytes:
    body: bytes = make_client(s3).get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return body


@pytest_twisted.ensureDeferred
async def test_a_genuine_snapshot_copied_under_a_newer_name_does_not_verify(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    """The signature binds the name: an old genuine snapshot replayed as the newest one (its
    metadata copied along) is passed over for the real newest."""
    db = await migrated(f"sqlite:///{tmp_path}/source.sqlite3")
    try:
        await db.run(fill_catalogue, s3)
        job, clock = backup_of(db, pool, s3)
        first = (await job.run_once())["snapshot"]
        await db.run(lambda txn: txn.execute("DELETE FROM users WHERE id = 1"))
        clock.advance(3600)
        second = (await job.run_once())["snapshot"]
    finally:
        db.close()
    head = make_client(s3).head_object(Bucket=s3.bucket, Key=first)
    plant(s3, later(1.5), snapshot_body(s3, first), metadata=head["Metadata"])
    summary = await restore(database_url, s3, now=lambda: NOW + 2 * 3600)
    assert summary["snapshot"] == second.rsplit("/", 1)[1] and summary["users"] == 2


# ---------------------------------------------------------------- planted rows


BAD_BLOB_NAME = r"blobs row 7: (dedup_key|sha256) is not 64 lowercase hex digits"


def _blob_at(path: str) -> Callable[[Rows], Rows]:
    def edit(rows: Rows) -> Rows:
        for r in rows:
            if r["table"] == "blobs" and r["row"]["id"] == 7:
                r["row"]["sha256"] = path
                r["row"]["dedup_key"] = f"5:{path}"
        return rows

    return edit


def _set(table_name: str, column: str, value: Any) -> Callable[[Rows], Rows]:
    def edit(rows: Rows) -> Rows:
        first = next(r for r in rows if r["table"] == table_name)
        first["row"][column] = value
        return rows

    return edit


@pytest.mark.parametrize(
    ("label", "edit", "refusal"),
    [
        ("absolute blob name", None, BAD_BLOB_NAME),
        ("'..' blob name", _blob_at("../../../../victim"), BAD_BLOB_NAME),
        (
            "'..' path",
            _set("files", "path", "../../outside.bin"),
            r"files row .*: path is "
            r"refused.*'\.\.' segment",
        ),
        ("absolute path", _set("files", "path", "/etc/passwd"), r"path must be relative"),
        ("a filename that is a path", _set("versions", "filename", "../x"), r"versions row"),
        ("a username the API refuses", _set("users", "username", "<b>boss</b>"), r"username"),
        ("a negative size", _set("blobs", "size", -1), r"blobs row 1: size is not a whole"),
        ("an interval out of bounds", _set("jobs", "interval_seconds", 1e12), r"interval"),
        ("a part digest that is a path", _set("blob_parts", "sha256", "/x"), r"blob_parts row"),
        (
            "a deletion of another object",
            _set("s3_deletions", "object_key", "pa/metadata/x"),
            r"s3_deletions row .*: object_key is not the object <prefix>/<sha256>",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_planted_row_refuses_the_snapshot_and_touches_no_file_outside_the_data_dir(
    database_url: str,
    s3: S3Settings,
    pool: ThreadPool,
    tmp_path: Path,
    label: str,
    edit: Callable[[Rows], Rows] | None,
    refusal: str,
) -> None:
    """Even with --trust-unsigned: a blob named by an absolute path would have made the
    proxy delete (or serve) ``victim.7`` outside its data directory."""
    victim = tmp_path / "victim.7"
    victim.write_bytes(b"not the proxy's")
    genuine = await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)
    lines = snapshot_lines(s3, genuine)
    plant(s3, SORTS_AFTER, tampered(lines, edit or _blob_at(str(tmp_path / "victim"))))
    data_dir = tmp_path / "new-proxy"
    data_dir.mkdir()
    with pytest.raises(RestoreError, match=r"the snapshot is refused \(nothing") as refused:
        await restore(database_url, s3, SORTS_AFTER, trust=TRUSTING, workdir=str(data_dir))
    assert re.search(refusal, str(refused.value)), (label, str(refused.value))
    assert await empty(database_url), label
    assert victim.read_bytes() == b"not the proxy's"
    assert list(data_dir.iterdir()) == []  # its temporary files are gone too


def test_a_blob_row_can_never_name_a_file_outside_the_blobs_folder(tmp_path: Path) -> None:
    staging = StagingArea(tmp_path / "data")
    victim = tmp_path / "victim.7"
    victim.write_bytes(b"keep me")
    for name in (str(tmp_path / "victim"), "../../victim", "AB" * 32, "ab" * 31):
        with pytest.raises(ValueError, match="not a blob's name"):
            staging.blob_path(name, 7)
        with pytest.raises(ValueError):
            staging.remove_blobs([(name, 7)])
    assert victim.read_bytes() == b"keep me"
    assert staging.blob_path("ab" * 32, 7) == tmp_path / "data" / "blobs" / "ab" / f"{'ab' * 32}.7"


def test_the_row_rules_explain_themselves() -> None:
    import doctest

    assert doctest.testmod(restore_rows).failed == 0


@pytest_twisted.ensureDeferred
async def test_staff_rights_come_back_only_with_restore_staff(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    """A planted snapshot that makes carol staff (with --trust-unsigned), and the genuine
    staff account boss: both restored as ordinary accounts, and the restore says so."""
    genuine = await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)

    def promote(rows: Rows) -> Rows:
        for r in rows:
            if r["table"] == "users" and r["row"]["username"] == "carol":
                r["row"]["is_staff"] = 1
        return rows

    plant(s3, SORTS_AFTER, tampered(snapshot_lines(s3, genuine), promote))
    said: list[str] = []
    summary = await restore(database_url, s3, SORTS_AFTER, trust=TRUSTING, say=said.append)
    assert summary["staff_demoted"] == ["boss", "carol"]
    assert any("without staff rights" in line and "boss, carol" in line for line in said)
    db = await migrated(database_url)
    try:
        assert await table(db, "SELECT COUNT(*) FROM users WHERE is_staff <> 0") == [(0,)]
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_restore_staff_keeps_the_signed_snapshots_staff(
    tmp_path: Path, s3: S3Settings, pool: ThreadPool
) -> None:
    await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)
    target = f"sqlite:///{tmp_path}/target.sqlite3"
    summary = await restore(target, s3, restore_staff=True)
    assert summary["staff_demoted"] == []
    db = await migrated(target)
    try:
        assert await table(db, "SELECT username FROM users WHERE is_staff = 1") == [("boss",)]
    finally:
        db.close()


# ---------------------------------------------------------------- future dates, sizes, lines


@pytest_twisted.ensureDeferred
async def test_a_future_dated_snapshot_is_not_the_newest(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    """Planted in the year 2999 with a staff account of its own: passed over, even with
    --trust-unsigned, for the genuine one."""
    genuine = await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)

    def intruder(rows: Rows) -> Rows:
        return [r for r in rows if r["table"] != "users" or r["row"]["id"] != 1]

    plant(s3, "29991231T235959Z-ffffffff.jsonl.gz", tampered(snapshot_lines(s3, genuine), intruder))
    said: list[str] = []
    summary = await restore(database_url, s3, trust=TRUSTING, say=said.append)
    assert summary["snapshot"] == genuine.rsplit("/", 1)[1] and summary["signed"] is True
    assert summary["users"] == 3
    assert any("1 snapshot(s) dated in the future" in line for line in said), said


@pytest.mark.parametrize("shape", ["no newline at all", "one huge line"])
@pytest_twisted.ensureDeferred
async def test_a_snapshot_with_an_endless_line_is_refused_in_bounded_memory(
    tmp_path: Path, s3: S3Settings, shape: str
) -> None:
    header = {"format": "pyarchive-metadata", "format_version": 1, "schema_version": 1,
              "created_at": "2027-01-15T08:00:00Z", "dialect": "sqlite", "tables": []}  # fmt: skip
    line = b'{"table": "users", "row": {"username": "' + b"x" * (64 * 2**20)
    whole = line if shape == "no newline at all" else json.dumps(header).encode() + b"\n" + line
    whole += b"" if shape == "no newline at all" else b"\n"
    plant(s3, SORTS_AFTER, gzip.compress(whole))
    tracemalloc.start()
    try:
        with pytest.raises(RestoreError, match=r"has a line longer than 4194304 bytes: refused"):
            await restore(f"sqlite:///{tmp_path}/target.sqlite3", s3, trust=TRUSTING,
                          workdir=str(tmp_path))  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, f"peak {peak} bytes reading a {len(line)}-byte line"


@pytest_twisted.ensureDeferred
async def test_a_snapshot_larger_than_the_limits_is_refused_while_read(
    tmp_path: Path, s3: S3Settings, pool: ThreadPool
) -> None:
    genuine = await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)
    size = len(snapshot_body(s3, genuine))
    target = f"sqlite:///{tmp_path}/target.sqlite3"
    with pytest.raises(RestoreError, match=f"has {size} bytes, more than the 1000 a snapshot"):
        await restore(target, s3, limits=Limits(object_bytes=1000))
    with pytest.raises(RestoreError, match=r"unpacks to more than 2000 bytes: refused"):
        await restore(target, s3, limits=Limits(unpacked_bytes=2000))
    assert await empty(target)


# ---------------------------------------------------------------- pruning


@pytest_twisted.ensureDeferred
async def test_pruning_is_not_fooled_by_future_dated_or_unsigned_objects(
    tmp_path: Path, s3: S3Settings, pool: ThreadPool
) -> None:
    """Keep 2: planted objects sorting after the genuine ones (one dated in 2999, one of this
    very second, one a copy of a genuine snapshot under a future name) neither count among
    the newest two nor get deleted; the genuine ones are pruned by their own age."""
    client = make_client(s3)
    db = await migrated(f"sqlite:///{tmp_path}/meta.sqlite3")
    try:
        job, clock = backup_of(db, pool, s3, keep=2)
        first = (await job.run_once())["snapshot"]
        head = client.head_object(Bucket=s3.bucket, Key=first)
        planted = [
            plant(s3, "29991231T235959Z-ffffffff.jsonl.gz", b"x"),
            plant(s3, snapshot_name(NOW, "ffffffff"), snapshot_body(s3, first)),
            plant(s3, later(0.5), snapshot_body(s3, first), metadata=head["Metadata"]),
        ]
        keys = [first]
        for _ in range(3):
            clock.advance(3600)
            result = await job.run_once()
            keys.append(result["snapshot"])
    finally:
        db.close()
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=s3.metadata_prefix)
    remaining = {o["Key"] for o in listed["Contents"]}
    assert remaining == {keys[2], keys[3], *planted}
    summary = await restore(f"sqlite:///{tmp_path}/target.sqlite3", s3,
                            now=lambda: NOW + 4 * 3600)  # fmt: skip
    assert summary["snapshot"] == keys[3].rsplit("/", 1)[1]
