"""Content is deduplicated within one owner's files only (``blobs.dedup_key``), on both
databases: the migration keeps the blobs it finds (their key their sha256), new content gets
one blob per owner, and a snapshot from before the migration restores with the same keys.
The end-to-end privacy test (two users, the same bytes, uncache) is in
``tests/test_remote_cluster.py``."""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted

from common.db import Database, Txn, parse_database_url
from proxy import migrations
from proxy.catalog import store

SHA, MD5 = "ab" * 32, "cd" * 16


def _users(txn: Txn) -> tuple[int, int]:
    alice = store.create_user(txn, "alice", "", "x", False, 1.0)
    bob = store.create_user(txn, "bob", "", "x", False, 1.0)
    assert alice is not None and bob is not None
    return alice.id, bob.id


@pytest_twisted.ensureDeferred
async def test_two_owners_of_the_same_bytes_get_a_blob_each_and_one_owner_shares_his_own(
    database_url: str,
) -> None:
    db = Database(parse_database_url(database_url))
    try:
        await db.run(migrations.migrate)
        alice, bob = await db.run(_users)

        def blobs(txn: Txn) -> list[tuple[Any, ...]]:
            first, made = store.ensure_blob(txn, alice, SHA, MD5, 10, 1.0)
            again, made_again = store.ensure_blob(txn, alice, SHA, MD5, 10, 2.0)
            other, made_other = store.ensure_blob(txn, bob, SHA, MD5, 10, 3.0)
            return [(first.id, made), (again.id, made_again), (other.id, made_other)]

        (first, made), (again, made_again), (other, made_other) = await db.run(blobs)
        assert made and not made_again and made_other
        assert first == again != other
        rows = await db.run(lambda txn: txn.all("SELECT sha256 FROM blobs ORDER BY id"))
        assert [tuple(r) for r in rows] == [(SHA,), (SHA,)]  # S3 still has one object for both
    finally:
        db.close()


def _dedup_migration() -> int:
    names = [name for name, _ in migrations.MIGRATIONS]
    return next(i for i, n in enumerate(names, start=1) if n.startswith("blobs are deduplicated"))


@pytest_twisted.ensureDeferred
async def test_the_migration_keeps_existing_blobs_under_their_sha256(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob from before, shared by two owners as it was: kept; the next upload of that
    content by either owner is a blob of that owner's own."""
    db = Database(parse_database_url(database_url))
    try:
        before = migrations.MIGRATIONS[: _dedup_migration() - 1]
        monkeypatch.setattr(migrations, "MIGRATIONS", before)
        await db.run(migrations.migrate)
        _, bob = await db.run(_users)
        old = await db.run(lambda txn: txn.scalar(
            "INSERT INTO blobs (sha256, md5, size, created_at) VALUES (?, ?, 10, ?) RETURNING id",
            (SHA, MD5, time.time()),
        ))  # fmt: skip
        monkeypatch.undo()
        later = len(migrations.MIGRATIONS) - len(before)  # this step and any after it
        assert await db.run(migrations.migrate) == later
        kept = await db.run(lambda txn: txn.all("SELECT id, dedup_key, sha256 FROM blobs"))
        assert [tuple(r) for r in kept] == [(old, SHA, SHA)]
        blob, made = await db.run(store.ensure_blob, bob, SHA, MD5, 10, 5.0)
        assert made and blob.id != old
        found = await db.run(lambda txn: txn.scalar(
            "SELECT dedup_key FROM blobs WHERE id = ?", (blob.id,)
        ))  # fmt: skip
        assert found == f"{bob}:{SHA}"
    finally:
        db.close()


def test_a_snapshot_from_before_per_owner_dedup_restores_with_each_blobs_sha256_as_its_key(
    database_url: str,
) -> None:
    from proxy.remote.restore_target import RestoreTarget, load_rows

    columns = ["id", "sha256", "md5", "size", "created_at"]
    header = {"tables": [{"name": "blobs", "columns": columns}]}
    records: list[dict[str, Any]] = [
        {"table": "blobs", "row": dict(zip(columns, [1, SHA, MD5, 10, 1.0], strict=True))},
        {"end": {"rows": {"blobs": 1}}},
    ]
    with RestoreTarget(parse_database_url(database_url)) as target:
        target.begin()
        migrations.migrate(target.txn)
        assert load_rows(target, header, iter(records))[0] == {"blobs": 1}
        rows = target.txn.all("SELECT id, dedup_key, sha256 FROM blobs")
        target.rollback()
    assert [tuple(r) for r in rows] == [(1, SHA, SHA)]
