"""Versioned schema migrations, applied in order at start-up (both databases, same steps).

Append new steps; never edit a step that has shipped. ``{id}``, ``{float}`` and ``{bigint}`` are
filled per database by ``common.db.ddl``.
"""

from __future__ import annotations

import time

from common.db import Txn, ddl

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "users, uploads, files, versions, blobs",
        [
            """CREATE TABLE users (
                id {id},
                username TEXT NOT NULL UNIQUE,
                email TEXT NOT NULL DEFAULT '',
                password_hash TEXT NOT NULL,
                is_staff INTEGER NOT NULL DEFAULT 0,
                created_at {float} NOT NULL)""",
            """CREATE TABLE blobs (
                id {id},
                sha256 TEXT NOT NULL UNIQUE,
                md5 TEXT NOT NULL,
                size {bigint} NOT NULL,
                created_at {float} NOT NULL)""",
            """CREATE TABLE files (
                id TEXT PRIMARY KEY,
                owner_id {bigint} NOT NULL REFERENCES users(id),
                filename TEXT NOT NULL,
                current_version INTEGER NOT NULL,
                created_at {float} NOT NULL,
                updated_at {float} NOT NULL,
                UNIQUE (owner_id, filename))""",
            """CREATE TABLE versions (
                id {id},
                file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
                number INTEGER NOT NULL,
                blob_id {bigint} NOT NULL REFERENCES blobs(id),
                filename TEXT NOT NULL,
                created_at {float} NOT NULL,
                UNIQUE (file_id, number))""",
            "CREATE INDEX versions_blob ON versions (blob_id)",
            """CREATE TABLE uploads (
                id TEXT PRIMARY KEY,
                owner_id {bigint} NOT NULL REFERENCES users(id),
                filename TEXT NOT NULL,
                parent_id TEXT,
                total {bigint},
                received {bigint} NOT NULL DEFAULT 0,
                status INTEGER NOT NULL DEFAULT 1,
                created_at {float} NOT NULL,
                expires_at {float} NOT NULL,
                completed_at {float},
                file_id TEXT,
                version INTEGER)""",
            "CREATE INDEX uploads_owner ON uploads (owner_id)",
            "CREATE INDEX uploads_expiry ON uploads (status, expires_at)",
            "CREATE INDEX files_owner ON files (owner_id, created_at)",
        ],
    ),
    (
        "storage nodes and replicas",
        [
            """CREATE TABLE nodes (
                name TEXT PRIMARY KEY,
                url TEXT NOT NULL,
                rsync_url TEXT NOT NULL,
                zone TEXT NOT NULL,
                state TEXT NOT NULL DEFAULT 'active',
                status TEXT NOT NULL DEFAULT 'unknown',
                free_bytes {bigint},
                total_bytes {bigint},
                last_seen {float},
                down_since {float},
                rtt_ms {float},
                missed_pings INTEGER NOT NULL DEFAULT 0,
                created_at {float} NOT NULL)""",
            """CREATE TABLE replicas (
                blob_id {bigint} NOT NULL REFERENCES blobs(id),
                node TEXT NOT NULL REFERENCES nodes(name),
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at {float} NOT NULL DEFAULT 0,
                detail TEXT NOT NULL DEFAULT '',
                updated_at {float} NOT NULL,
                PRIMARY KEY (blob_id, node))""",
            "CREATE INDEX replicas_node ON replicas (node, state)",
            # 1 while the finished content is still in the proxy's own store (blobs/).
            "ALTER TABLE blobs ADD COLUMN local INTEGER NOT NULL DEFAULT 1",
            # Replicas of deleted blobs still to be removed from their nodes.
            """CREATE TABLE replica_deletions (
                node TEXT NOT NULL,
                replica TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at {float} NOT NULL DEFAULT 0,
                PRIMARY KEY (node, replica))""",
        ],
    ),
]


def migrate(txn: Txn) -> int:
    """Apply every step not yet applied; returns how many were applied."""
    if txn.dialect == "postgresql":
        # Several proxies may start at once against one database: one migrates, others wait.
        txn.execute("SELECT pg_advisory_xact_lock(7260912)")
    txn.execute(
        ddl(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at {float} NOT NULL)",
            txn.dialect,
        )
    )
    done = {row[0] for row in txn.all("SELECT version FROM schema_migrations")}
    applied = 0
    for version, (name, statements) in enumerate(MIGRATIONS, start=1):
        if version in done:
            continue
        for statement in statements:
            txn.execute(ddl(statement, txn.dialect))
        txn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, time.time()),
        )
        applied += 1
    return applied
