"""Metadata snapshots in S3 and disaster recovery from them, against moto's S3 server over real
HTTP and both metadata databases: consistency under concurrent writes, keep-last-N, restoring
across database kinds, blobs that are in the bucket or not, corrupt snapshots, and the
``pyarchive-proxy restore`` command end to end.
"""

from __future__ import annotations

import base64
import doctest
import gzip
import hashlib
import json
import os
import random
import re
import sqlite3
import subprocess
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from common.db import Database, Txn, parse_database_url
from common.passwords import hash_password
from common.s3 import S3Settings, make_client
from proxy.migrations import MIGRATIONS, migrate
from proxy.remote import snapshots
from proxy.remote.backup import MetadataBackup
from proxy.remote.connections import connection_box
from proxy.remote.dump import pg_connect_kwargs, write_dump
from proxy.remote.restore import RestoreError, Trust, restore_from_s3
from proxy.remote.snapshots import DUMPED_TABLES, RESTORED_TABLES, SKIPPED_TABLES
from tests.conftest import _database_url
from tests.proc import BIN, ProxyProcess, free_port

NOW = 1_800_000_000.0
S3_SECRET = "testing-secret-0123456789-backup"
OLD_KEY = "the-old-proxy-encryption-key"
NEW_KEY = "the-new-proxy-encryption-key"
BACKUP_KEY = "the-proxy-backup-key-nodes-never-see"
STAFF_PASSWORD = "Very-Secret-42"


# ---------------------------------------------------------------- S3 and databases


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
    """A fresh bucket of its own for each test."""
    settings = S3Settings(
        bucket=f"backup-{uuid.uuid4().hex[:12]}", region="us-east-1", access_key="testing",
        secret_key=S3_SECRET, endpoint_url=s3_endpoint, prefix="pa", name="main",
    )  # fmt: skip
    make_client(settings).create_bucket(Bucket=settings.bucket)
    return settings


@pytest.fixture
def other_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the other kind than ``database_url``."""
    kind = "postgresql" if database_url.startswith("sqlite") else "sqlite"
    (tmp_path / "other").mkdir()
    yield from _database_url(kind, tmp_path / "other")


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    threadpool = ThreadPool(minthreads=0, maxthreads=2, name="backup-test")
    threadpool.start()
    yield threadpool
    threadpool.stop()


async def migrated(url: str) -> Database:
    db = Database(parse_database_url(url))
    await db.run(migrate)
    return db


def backup_of(
    db: Database,
    pool: ThreadPool,
    s3: S3Settings | None,
    keep: int = 7,
    key: str = BACKUP_KEY,
    at: float = NOW,
) -> Any:
    clock = Clock()
    clock.advance(at)

    async def active() -> S3Settings | None:
        return s3

    job = MetadataBackup(
        db=db, clock=clock, threads=IReactorThreads(reactor), pool=pool, settings=active,
        keep=keep, key=key,
    )  # fmt: skip
    return job, clock


def snapshot_lines(s3: S3Settings, key: str) -> list[dict[str, Any]]:
    body = make_client(s3).get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def content(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_blob_object(s3: S3Settings, data: bytes, *, stored: bytes | None = None) -> None:
    """The object a node's mirror would have written for ``data`` (or other bytes under its
    key, to play a damaged bucket)."""
    make_client(s3).put_object(
        Bucket=s3.bucket, Key=s3.object_key(sha(data)), Body=stored if stored is not None else data,
        Metadata={"sha256": sha(data), "md5": hashlib.md5(data).hexdigest()},
    )  # fmt: skip


# ---------------------------------------------------------------- a catalogue to back up

A, B, C = content(1, 3000), content(2, 4000), content(3, 5000)


def fill_catalogue(txn: Txn, s3: S3Settings) -> None:
    """Rows in every table: three users (ids with a gap), blob A mirrored, B not yet, C
    uncached; a node with a replica, an upload in progress, two S3 connections sealed with the
    old proxy's key, and a job interval staff changed."""
    old = connection_box(OLD_KEY)
    staff_hash = hash_password(STAFF_PASSWORD)
    for uid, name, staff in ((1, "boss", 1), (2, "alice", 0), (5, "carol", 0)):
        txn.execute(
            "INSERT INTO users (id, username, email, password_hash, is_staff, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (uid, name, f"{name}@example.org", staff_hash, staff, NOW - 100 + uid * 0.125),
        )
    for bid, data, state in ((1, A, "mirrored"), (2, B, "mirroring"), (7, C, "remote")):
        txn.execute(
            "INSERT INTO blobs (id, dedup_key, sha256, md5, size, created_at, local, remote_state,"
            " remote_verified, mirror_node, mirror_detail)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
            (bid, f"5:{sha(data)}", sha(data), hashlib.md5(data).hexdigest(), len(data),
             NOW - 50, state, int(state != "mirroring"), "n1", "ok ü"),
        )  # fmt: skip
        txn.execute(
            "INSERT INTO blob_parts (blob_id, idx, start, size, sha256, remote_state)"
            " VALUES (?, 1, 0, ?, ?, ?)",
            (bid, len(data), sha(data) if state != "mirroring" else None,
             "uploaded" if state != "mirroring" else "uploading"),
        )  # fmt: skip
    files = (("fa" * 16, 2, "a.bin", [1]), ("fb" * 16, 2, "b.bin", [2]),
             ("fc" * 16, 5, "café ☕.bin", [1, 7]))  # fmt: skip
    for file_id, owner, filename, blobs in files:
        txn.execute(
            "INSERT INTO files (id, owner_id, filename, path, current_version, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (file_id, owner, filename, filename, len(blobs), NOW - 40, NOW - 30),
        )
        for number, blob_id in enumerate(blobs, start=1):
            txn.execute(
                "INSERT INTO versions (file_id, number, blob_id, filename, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (file_id, number, blob_id, filename, NOW - 40 + number),
            )
    txn.execute(
        "INSERT INTO nodes (name, url, rsync_url, zone, created_at)"
        " VALUES ('n1', 'http://127.0.0.1:1', 'rsync://pyarchive@127.0.0.1:2/incoming', 'a', ?)",
        (NOW,),
    )
    txn.execute(
        "INSERT INTO replicas (blob_id, node, state, updated_at) VALUES (1, 'n1', 'confirmed', ?)",
        (NOW,),
    )
    txn.execute("INSERT INTO replica_deletions (node, replica) VALUES ('n1', '9-abc')")
    txn.execute(
        "INSERT INTO uploads (id, owner_id, filename, total, received, created_at, expires_at)"
        " VALUES ('u1', 2, 'half.bin', 100, 50, ?, ?)",
        (NOW, NOW + 3600),
    )
    for name, bucket, active in (("main", s3.bucket, 1), ("elsewhere", "other-bucket", 0)):
        txn.execute(
            "INSERT INTO s3_connections (name, endpoint_url, region, bucket, prefix, access_key,"
            " secret_encrypted, secret_last4, active, created_at, updated_at)"
            " VALUES (?, ?, 'us-east-1', ?, ?, 'old-access', ?, 'last', ?, ?, ?)",
            (name, s3.endpoint_url, bucket, s3.prefix, old.seal("old-secret-" + name), active,
             NOW, NOW),
        )  # fmt: skip
    txn.execute(
        "INSERT INTO s3_deletions (object_key, sha256, created_at) VALUES (?, ?, ?)",
        (f"{s3.prefix}/{'d' * 64}", "d" * 64, NOW),
    )
    txn.execute(
        "INSERT INTO jobs (name, interval_seconds, last_run, last_ok, last_result, next_run)"
        " VALUES ('scrub', 7200, ?, 1, 'fine', ?)",
        (NOW, NOW + 7200),
    )
    txn.execute(
        "INSERT INTO system_log (at, level, event, message) VALUES (?, 'info', 'x', 'old news')",
        (NOW,),
    )


def table(db: Database, sql: str) -> Any:
    return db.run(lambda txn: txn.all(sql))


# ---------------------------------------------------------------- what is in a snapshot


def test_every_table_of_the_schema_is_dumped_or_skipped_on_purpose() -> None:
    created = {
        match
        for _, statements in MIGRATIONS
        for statement in statements
        for match in re.findall(r"CREATE TABLE (\w+)", statement)
    } | {"schema_migrations"}
    assert set(DUMPED_TABLES) | set(SKIPPED_TABLES) == created
    assert not set(DUMPED_TABLES) & set(SKIPPED_TABLES)
    assert [t for t in DUMPED_TABLES if t in RESTORED_TABLES] == list(RESTORED_TABLES)


def test_the_snapshot_names_sort_by_time() -> None:
    assert doctest.testmod(snapshots).failed == 0


@pytest_twisted.ensureDeferred
async def test_a_snapshot_is_gzipped_json_lines_with_a_header_rows_and_a_trailer(
    database_url: str, s3: S3Settings, pool: ThreadPool
) -> None:
    db = await migrated(database_url)
    try:
        await db.run(fill_catalogue, s3)
        job, _ = backup_of(db, pool, s3)
        result = await job.run_once()
    finally:
        db.close()
    key = result["snapshot"]
    assert re.fullmatch(r"pa/metadata/20270115T080000Z-[0-9a-f]{8}\.jsonl\.gz", key)
    head = make_client(s3).head_object(Bucket=s3.bucket, Key=key)
    body = make_client(s3).get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert head["Metadata"]["sha256"] == sha(body) == result["sha256"]
    assert result["bytes"] == len(body)
    lines = snapshot_lines(s3, key)
    header, rows, trailer = lines[0], lines[1:-1], lines[-1]
    assert header["format"] == "pyarchive-metadata" and header["format_version"] == 1
    assert header["schema_version"] == len(MIGRATIONS)
    assert header["dialect"] == parse_database_url(database_url).dialect
    assert header["created_at"] == "2027-01-15T08:00:00Z"
    assert [t["name"] for t in header["tables"]] == list(DUMPED_TABLES)
    counts = {name: sum(r["table"] == name for r in rows) for name in DUMPED_TABLES}
    assert trailer == {"end": {"rows": counts}} and result["tables"] == counts
    assert counts["users"] == 3 and counts["versions"] == 4 and counts["nodes"] == 1
    assert not {"uploads", "system_log"} & {r["table"] for r in rows}
    boss = next(r["row"] for r in rows if r["table"] == "users" and r["row"]["id"] == 1)
    assert boss["username"] == "boss" and boss["password_hash"].startswith("$argon2")
    assert boss["created_at"] == NOW - 100 + 0.125  # floats survive exactly
    assert S3_SECRET not in gzip.decompress(body).decode()


@pytest_twisted.ensureDeferred
async def test_a_snapshot_taken_while_writes_continue_holds_whole_transactions_only(
    database_url: str, s3: S3Settings, pool: ThreadPool
) -> None:
    """A writer commits pairs (a user and a blob) throughout the backup: every pair is in the
    snapshot whole or not at all, though the tables are read one after the other."""
    db = await migrated(database_url)
    url = parse_database_url(database_url)
    stop = threading.Event()
    written = [0]

    def write_pairs() -> None:
        if url.dialect == "sqlite":
            conn: Any = sqlite3.connect(url.path, timeout=30, isolation_level=None)
        else:
            import psycopg2

            conn = psycopg2.connect(**pg_connect_kwargs(url))
        txn = Txn(conn.cursor(), url.dialect)
        i = 0
        while not stop.is_set():
            if url.dialect == "sqlite":
                txn.execute("BEGIN IMMEDIATE")
            # The blob first: a dump that read tables at different instants would see a
            # blob whose user (read earlier) is missing, or the other way round.
            txn.execute(
                "INSERT INTO blobs (dedup_key, sha256, md5, size, created_at)"
                " VALUES (?, ?, '', 1, 0)",
                (f"{i:064x}", f"{i:064x}"),
            )
            txn.execute(
                "INSERT INTO users (username, password_hash, created_at) VALUES (?, '', 0)",
                (f"w{i}",),
            )
            conn.commit() if url.dialect == "postgresql" else txn.execute("COMMIT")
            i += 1
            written[0] = i
        conn.close()

    writer = threading.Thread(target=write_pairs)
    writer.start()
    try:
        while written[0] < 3000:  # enough rows that the dump takes a while
            await threads.deferToThread(time.sleep, 0.05)
        before = written[0]
        job, _ = backup_of(db, pool, s3)
        result = await job.run_once()
        after = written[0]
    finally:
        stop.set()
        await threads.deferToThread(writer.join)
        db.close()
    rows = snapshot_lines(s3, result["snapshot"])[1:-1]
    users = {int(r["row"]["username"][1:]) for r in rows if r["table"] == "users"}
    blobs = {int(r["row"]["sha256"], 16) for r in rows if r["table"] == "blobs"}
    assert users == blobs
    assert users == set(range(len(users)))  # a prefix of the commits, none skipped
    assert before <= len(users) <= after and after > before  # writes went on meanwhile


@pytest_twisted.ensureDeferred
async def test_only_the_newest_snapshots_are_kept(
    tmp_path: Path, s3: S3Settings, pool: ThreadPool
) -> None:
    db = await migrated(f"sqlite:///{tmp_path}/meta.sqlite3")
    client = make_client(s3)
    client.put_object(Bucket=s3.bucket, Key="pa/metadata/README.txt", Body=b"not a snapshot")
    try:
        job, clock = backup_of(db, pool, s3, keep=2)
        keys = []
        for hour in range(4):
            result = await job.run_once()
            keys.append(result["snapshot"])
            assert result["pruned"] == (1 if hour >= 2 else 0)
            clock.advance(3600)
        listed = await job.list_snapshots()
    finally:
        db.close()
    assert [s["key"] for s in listed] == [keys[3], keys[2]]
    assert listed[0]["taken_at"] == "2027-01-15T11:00:00Z"
    remaining = client.list_objects_v2(Bucket=s3.bucket, Prefix="pa/metadata/")["Contents"]
    assert sorted(o["Key"] for o in remaining) == sorted(
        [keys[2], keys[3], "pa/metadata/README.txt"]
    )
    assert not list(tmp_path.glob(".metadata-backup-*"))  # temporary files are gone


@pytest_twisted.ensureDeferred
async def test_without_an_active_connection_the_backup_is_skipped(
    tmp_path: Path, pool: ThreadPool
) -> None:
    db = await migrated(f"sqlite:///{tmp_path}/meta.sqlite3")
    try:
        job, _ = backup_of(db, pool, None)
        assert await job.run_once() == {"skipped": "no active S3 connection"}
    finally:
        db.close()


def test_a_large_catalogue_is_dumped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.sqlite3"
    with sqlite3.connect(path) as conn:
        migrate(Txn(conn.cursor(), "sqlite"))
        conn.executemany(
            "INSERT INTO blobs (dedup_key, sha256, md5, size, created_at, mirror_detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            ((f"{i:064x}", f"{i:064x}", f"{i:032x}", i, NOW, "x" * 300) for i in range(60_000)),
        )
    conn.close()
    tracemalloc.start()
    try:
        dump = write_dump(parse_database_url(f"sqlite:///{path}"), tmp_path / "d.jsonl.gz",
                          created_at=NOW, workdir=tmp_path)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dump.rows["blobs"] == 60_000
    assert peak < 4 * 2**20, f"peak {peak} bytes for ~{60_000 * 400} bytes of rows"


# ---------------------------------------------------------------- restoring


async def snapshot_of_catalogue(
    database_url: str, s3: S3Settings, pool: ThreadPool, at: float = NOW
) -> str:
    db = await migrated(database_url)
    try:
        await db.run(fill_catalogue, s3)
        job, _ = backup_of(db, pool, s3, at=at)
        return str((await job.run_once())["snapshot"])
    finally:
        db.close()


def restore(url: str, s3: S3Settings, snapshot: str | None = None, **kwargs: Any) -> Any:
    """``restore_from_s3`` on a worker thread, with the new proxy's key and (unless told
    otherwise) the operator's copy of the backup key, at the time of the snapshots."""
    box = connection_box(NEW_KEY)
    kwargs.setdefault("trust", Trust(BACKUP_KEY))
    kwargs.setdefault("now", lambda: NOW + 60)
    return threads.deferToThread(restore_from_s3, url, s3, snapshot, box=box, **kwargs)


@pytest_twisted.ensureDeferred
async def test_a_snapshot_restores_into_an_empty_database_of_the_other_kind_as_a_new_cluster(
    database_url: str, other_database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    """Taken from one kind of database, restored into the other: users, files and versions
    as they were; A (in the bucket) remote, B (never mirrored) and C (wrong size in the
    bucket) lost; no nodes; the restore's connection active under the new key."""
    put_blob_object(s3, A)
    put_blob_object(s3, C, stored=C[:-1])
    await snapshot_of_catalogue(other_database_url, s3, pool)
    said: list[str] = []
    summary = await restore(
        database_url, s3, say=said.append, workdir=str(tmp_path), restore_staff=True
    )
    assert summary["users"] == 3 and summary["files"] == 3
    assert (summary["blobs_remote"], summary["blobs_lost"], summary["files_lost"]) == (1, 2, 2)
    assert summary["connection"] == "main" and summary["connections_unreadable"] == ["elsewhere"]
    assert summary["source"] == parse_database_url(other_database_url).dialect
    assert any("sha256 verified" in line for line in said), said
    assert not any(S3_SECRET in line for line in said)

    source = await migrated(other_database_url)
    db = await migrated(database_url)
    try:
        for sql in (
            "SELECT id, username, email, password_hash, is_staff, created_at FROM users",
            "SELECT * FROM files",
            "SELECT file_id, number, blob_id, filename, created_at FROM versions",
            "SELECT id, sha256, md5, size, created_at FROM blobs",
            "SELECT * FROM s3_deletions",
        ):
            assert sorted(await table(db, sql)) == sorted(await table(source, sql)), sql
        blobs = await table(db, "SELECT id, remote_state, remote_verified, local, mirror_node,"
                                " mirror_detail FROM blobs ORDER BY id")  # fmt: skip
        assert [b[:5] for b in blobs] == [
            (1, "remote", 1, 0, None), (2, "lost", 0, 0, None), (7, "lost", 0, 0, None),
        ]  # fmt: skip
        assert "not in the bucket" in blobs[1][5] and "4999 bytes" in blobs[2][5]
        parts = await table(db, "SELECT blob_id, remote_state FROM blob_parts")
        assert parts == [(1, "uploaded")]
        for empty in ("nodes", "replicas", "replica_deletions", "uploads"):
            assert await table(db, f"SELECT * FROM {empty}") == [], empty
        connections = await table(db, "SELECT name, active, access_key, secret_encrypted"
                                      " FROM s3_connections ORDER BY name")  # fmt: skip
        assert [c[:3] for c in connections] == [("elsewhere", 0, "old-access"),
                                                 ("main", 1, "testing")]  # fmt: skip
        new = connection_box(NEW_KEY)
        assert new.open(connections[1][3]) == S3_SECRET
        assert await table(db, "SELECT name, interval_seconds, last_run, next_run FROM jobs") == [
            ("scrub", 7200, None, None)
        ]
        log = await table(db, "SELECT event, message FROM system_log")
        assert [entry[0] for entry in log] == ["metadata-restore"]
        # New rows get ids after the restored ones (PostgreSQL's sequences were moved on).
        new_id = await db.run(lambda txn: txn.scalar(
            "INSERT INTO users (username, password_hash, created_at) VALUES ('dave', '', 0)"
            " RETURNING id"
        ))  # fmt: skip
        assert new_id == 6
    finally:
        db.close()
        source.close()


@pytest_twisted.ensureDeferred
async def test_restore_refuses_a_database_that_already_holds_users(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)
    db = await migrated(database_url)
    try:
        await db.run(lambda txn: txn.execute(
            "INSERT INTO users (username, password_hash, created_at) VALUES ('early', '', 0)"
        ))  # fmt: skip
        with pytest.raises(RestoreError, match=r"not empty \(1 users, 0 files, 0 blobs\)"):
            await restore(database_url, s3)
        assert await table(db, "SELECT username FROM users") == [("early",)]
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_a_database_a_proxy_started_on_but_nobody_used_is_empty_enough(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    """Job runs recorded and a new node registered before the restore: the snapshot's job
    intervals replace the runs, and the new node stays."""
    await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)
    db = await migrated(database_url)
    try:

        def started(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO jobs (name, interval_seconds, last_run) VALUES ('scrub', 0, 1),"
                " ('node-monitor', 0, 1)"
            )
            txn.execute(
                "INSERT INTO nodes (name, url, rsync_url, zone, created_at) VALUES"
                " ('new1', 'http://127.0.0.1:3', 'rsync://pyarchive@127.0.0.1:4/incoming', 'a', 0)"
            )

        await db.run(started)
        summary = await restore(database_url, s3)
        assert summary["users"] == 3
        assert await table(db, "SELECT name, interval_seconds FROM jobs") == [("scrub", 7200)]
        assert await table(db, "SELECT name FROM nodes") == [("new1",)]
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_a_corrupted_snapshot_is_refused_and_the_database_stays_empty(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    key = await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)
    client = make_client(s3)
    stored = client.get_object(Bucket=s3.bucket, Key=key)
    body = bytearray(stored["Body"].read())
    body[len(body) // 2] ^= 0x01  # one flipped bit, the recorded sha256 kept
    client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(body), Metadata=stored["Metadata"])
    with pytest.raises(RestoreError, match=r"is corrupt: its sha256 is [0-9a-f]{64}, not"):
        await restore(database_url, s3)
    db = await migrated(database_url)
    try:
        assert await table(db, "SELECT COUNT(*) FROM users") == [(0,)]
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_a_missing_snapshot_is_answered_with_the_ones_there_are(
    tmp_path: Path, s3: S3Settings, pool: ThreadPool
) -> None:
    target = f"sqlite:///{tmp_path}/target.sqlite3"
    nowhere = replace(s3, bucket="no-such-bucket-here")
    with pytest.raises(RestoreError, match=r"^there is no bucket no-such-bucket-here$"):
        await restore(target, nowhere)
    with pytest.raises(RestoreError, match=r"no metadata snapshots in s3://.*/pa/metadata/"):
        await restore(target, s3)
    key = await snapshot_of_catalogue(f"sqlite:///{tmp_path}/source.sqlite3", s3, pool)
    name = key.rsplit("/", 1)[1]
    with pytest.raises(RestoreError, match=f"no snapshot 2020.* there are: {re.escape(name)}$"):
        await restore(target, s3, "20200101T000000Z-00000000.jsonl.gz")
    summary = await restore(target, s3, name)
    assert summary["snapshot"] == name


def put_multipart_object(s3: S3Settings, key: str, pieces: list[bytes]) -> None:
    """A multipart object as a node's mirror writes it: a SHA256 checksum on every part."""
    client = make_client(s3)
    upload = client.create_multipart_upload(Bucket=s3.bucket, Key=key, ChecksumAlgorithm="SHA256")
    done = []
    for number, piece in enumerate(pieces, start=1):
        answer = client.upload_part(
            Bucket=s3.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
            Body=piece, ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(hashlib.sha256(piece).digest()).decode(),
        )  # fmt: skip
        done.append({"PartNumber": number, "ETag": answer["ETag"],
                     "ChecksumSHA256": answer["ChecksumSHA256"]})  # fmt: skip
    client.complete_multipart_upload(
        Bucket=s3.bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )


@pytest_twisted.ensureDeferred
async def test_blobs_mirrored_after_the_snapshot_get_their_parts_from_the_objects(
    tmp_path: Path, s3: S3Settings, pool: ThreadPool
) -> None:
    """Two blobs were still mirroring when the snapshot was taken (no part checksums in it);
    their multipart objects completed later. The restore reads the parts off the objects;
    the object that does not hold its blob's bytes makes that blob lost."""
    part = 5 * 2**20
    good, bad = content(9, part + 1234), content(10, part + 99)

    def mirroring(txn: Txn, data: bytes) -> None:
        txn.execute(
            "INSERT INTO blobs (dedup_key, sha256, md5, size, created_at, remote_state)"
            " VALUES (?, ?, ?, ?, 0, 'mirroring')",
            (sha(data), sha(data), hashlib.md5(data).hexdigest(), len(data)),
        )  # fmt: skip

    source = await migrated(f"sqlite:///{tmp_path}/source.sqlite3")
    try:
        for data in (good, bad):
            await source.run(mirroring, data)
        job, _ = backup_of(source, pool, s3)
        await job.run_once()
    finally:
        source.close()
    put_multipart_object(s3, s3.object_key(sha(good)), [good[:part], good[part:]])
    damaged = bad[:-1] + bytes([bad[-1] ^ 1])
    put_multipart_object(s3, s3.object_key(sha(bad)), [damaged[:part], damaged[part:]])
    target = f"sqlite:///{tmp_path}/target.sqlite3"
    summary = await restore(target, s3)
    assert (summary["blobs_remote"], summary["blobs_lost"]) == (1, 1)
    db = await migrated(target)
    try:
        parts = await table(db, "SELECT blob_id, idx, start, size, sha256, remote_state"
                                " FROM blob_parts ORDER BY idx")  # fmt: skip
        states = await table(db, "SELECT remote_state, mirror_detail FROM blobs ORDER BY id")
    finally:
        db.close()
    assert parts == [
        (1, 1, 0, part, sha(good[:part]), "uploaded"),
        (1, 2, part, 1234, sha(good[part:]), "uploaded"),
    ]
    assert states[0] == ("remote", "")
    assert states[1][0] == "lost" and "sha256 differs" in states[1][1]


# ---------------------------------------------------------------- the command line


def proxy_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "pyarchive-proxy"), *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **env}, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def s3_flags(s3: S3Settings) -> list[str]:
    return ["--bucket", s3.bucket, "--region", s3.region, "--endpoint-url", s3.endpoint_url,
            "--prefix", s3.prefix, "--access-key", s3.access_key]  # fmt: skip


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_the_restore_command_rebuilds_a_proxy_whose_staff_can_log_in(
    database_url: str, s3: S3Settings, pool: ThreadPool, tmp_path: Path
) -> None:
    put_blob_object(s3, A)
    # Taken now: the command runs on the real clock, to which NOW is in the future.
    key = await snapshot_of_catalogue(
        f"sqlite:///{tmp_path}/source.sqlite3", s3, pool, at=time.time()
    )
    data_dir = tmp_path / "new-proxy"
    env = {"PYARCHIVE_S3_SECRET_KEY": S3_SECRET, "PYARCHIVE_SECRET_KEY": ""}
    common = ["--data-dir", str(data_dir), "--database", database_url]

    listed = await threads.deferToThread(proxy_cli, "snapshots", "list", *s3_flags(s3), env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\t")[0] == key.rsplit("/", 1)[1]

    refused = await threads.deferToThread(
        proxy_cli, *common, "restore", "--from-s3", *s3_flags(s3), env=env
    )
    assert refused.returncode != 0
    assert refused.stderr.startswith("Error: no backup key to verify the snapshots with")

    kept_copy = tmp_path / "backup_key.copy"  # the operator's copy, kept apart
    kept_copy.write_text(BACKUP_KEY + "\n")
    done = await threads.deferToThread(
        proxy_cli, *common, "restore", "--from-s3", *s3_flags(s3), "--backup-key-file",
        str(kept_copy), "--restore-staff", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert S3_SECRET not in done.stdout + done.stderr
    assert "signature and sha256 verified" in done.stdout
    adopted = data_dir / "backup_key"  # the new proxy signs with the same key
    assert adopted.read_text().strip() == BACKUP_KEY and adopted.stat().st_mode & 0o777 == 0o600
    last = done.stdout.strip().splitlines()
    assert any(
        f"restored {key.rsplit('/', 1)[1]}: 3 users, 3 files, 1 blobs remote, 2 blobs lost" in line
        for line in last[-3:]
    ), last

    again = await threads.deferToThread(
        proxy_cli, *common, "restore", "--from-s3", *s3_flags(s3), env=env
    )
    assert again.returncode != 0
    assert again.stderr.strip().splitlines() == [
        "Error: the target database is not empty (3 users, 3 files, 3 blobs): restore only "
        "into a new, empty database"
    ]

    proxy = ProxyProcess(data_dir, database_url, env={"PYARCHIVE_SECRET_KEY": ""})
    await threads.deferToThread(proxy.start)
    try:
        body = json.dumps({"username": "boss", "password": STAFF_PASSWORD})
        status, answer = await threads.deferToThread(
            proxy.request, "POST", "/api-token-auth/", body, {"Content-Type": "application/json"}
        )
        assert status == 200, answer
        auth = {"Authorization": f"JWT {answer['token']}"}
        status, answer = await threads.deferToThread(
            proxy.request, "GET", "/api/s3-connections/", None, auth
        )
        assert status == 200, answer
        shown = answer["results"] if isinstance(answer, dict) else answer
        main = next(c for c in shown if c["name"] == "main")
        assert main["active"] and not main["secret_unreadable"]
        assert S3_SECRET not in json.dumps(answer)
    finally:
        await threads.deferToThread(proxy.stop)


def test_the_restore_command_wants_a_source_and_never_a_secret_flag(tmp_path: Path) -> None:
    done = proxy_cli("--data-dir", str(tmp_path), "restore", "--bucket", "b-1", "--region", "r",
                     "--access-key", "k", env={"PYARCHIVE_S3_SECRET_KEY": "x" * 20})  # fmt: skip
    assert done.returncode != 0 and "--from-s3" in done.stderr
    helped = proxy_cli("restore", "--help", env={})
    assert "--secret" not in helped.stdout and "PYARCHIVE_S3_SECRET_KEY" in helped.stdout
