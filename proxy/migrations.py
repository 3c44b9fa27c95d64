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
    (
        "remote tier: S3 connections, parts, deletions, jobs, system log",
        [
            """CREATE TABLE s3_connections (
                name TEXT PRIMARY KEY,
                endpoint_url TEXT NOT NULL DEFAULT '',
                region TEXT NOT NULL,
                bucket TEXT NOT NULL,
                prefix TEXT NOT NULL DEFAULT 'pyarchive',
                access_key TEXT NOT NULL,
                secret_encrypted TEXT NOT NULL,
                secret_last4 TEXT NOT NULL,
                active INTEGER NOT NULL DEFAULT 0,
                validated_at {float},
                validation_ok INTEGER,
                validation_detail TEXT NOT NULL DEFAULT '',
                created_at {float} NOT NULL,
                updated_at {float} NOT NULL)""",
            # At most one row may be active; activating is "clear all, set one" in one txn.
            "CREATE UNIQUE INDEX s3_connections_one_active ON s3_connections (active)"
            " WHERE active = 1",
            # remote_state: local | mirroring | mirrored | remote (uncached) | restoring.
            "ALTER TABLE blobs ADD COLUMN remote_state TEXT NOT NULL DEFAULT 'local'",
            # 1 once the responsible node checked the object in S3 after completing it.
            "ALTER TABLE blobs ADD COLUMN remote_verified INTEGER NOT NULL DEFAULT 0",
            # The one node that mirrors this blob (chosen by the proxy among its replicas).
            "ALTER TABLE blobs ADD COLUMN mirror_node TEXT",
            "ALTER TABLE blobs ADD COLUMN mirror_detail TEXT NOT NULL DEFAULT ''",
            # The node restoring this blob from S3, and how far it got.
            "ALTER TABLE blobs ADD COLUMN restore_node TEXT",
            "ALTER TABLE blobs ADD COLUMN restore_requested_at {float}",
            "ALTER TABLE blobs ADD COLUMN parts_restored INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE blobs ADD COLUMN restore_detail TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX blobs_remote_state ON blobs (remote_state)",
            # A blob's parts as the mirroring node reported them (start = byte offset).
            """CREATE TABLE blob_parts (
                blob_id {bigint} NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
                idx INTEGER NOT NULL,
                start {bigint} NOT NULL,
                size {bigint} NOT NULL,
                sha256 TEXT,
                remote_state TEXT NOT NULL DEFAULT 'pending',
                PRIMARY KEY (blob_id, idx))""",
            # S3 objects of deleted blobs still to be removed (retried while S3 is away).
            """CREATE TABLE s3_deletions (
                object_key TEXT PRIMARY KEY,
                sha256 TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at {float} NOT NULL DEFAULT 0,
                detail TEXT NOT NULL DEFAULT '',
                created_at {float} NOT NULL)""",
            # Built-in periodic jobs: staff may change the interval; runs are recorded.
            """CREATE TABLE jobs (
                name TEXT PRIMARY KEY,
                interval_seconds {float} NOT NULL,
                last_run {float},
                last_duration {float},
                last_ok INTEGER,
                last_result TEXT NOT NULL DEFAULT '',
                next_run {float})""",
            """CREATE TABLE system_log (
                id {id},
                at {float} NOT NULL,
                level TEXT NOT NULL,
                event TEXT NOT NULL,
                job TEXT NOT NULL DEFAULT '',
                message TEXT NOT NULL,
                data TEXT NOT NULL DEFAULT '{{}}')""",
            "CREATE INDEX system_log_at ON system_log (at)",
            "CREATE INDEX system_log_job ON system_log (job, at)",
        ],
    ),
    (
        "tus uploads: metadata, content type, concatenation",
        [
            # One upload session, two dialects: a tus upload is a row of ``uploads`` too.
            "ALTER TABLE uploads ADD COLUMN dialect TEXT NOT NULL DEFAULT 'seed'",
            "ALTER TABLE uploads ADD COLUMN metadata TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE uploads ADD COLUMN content_type TEXT NOT NULL DEFAULT ''",
            # '' (a whole upload), 'partial' or 'final'; a final one lists its partials' ids.
            "ALTER TABLE uploads ADD COLUMN concat TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE uploads ADD COLUMN parts TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX uploads_final ON uploads (owner_id, concat, parts)",
        ],
    ),
    (
        "a version's content type (tus metadata filetype), served with its downloads",
        ["ALTER TABLE versions ADD COLUMN content_type TEXT NOT NULL DEFAULT ''"],
    ),
    (
        "browser sessions, token versions, login failures, profile pictures",
        [
            # Bumped by a password change: tokens and sessions of an older version are refused.
            "ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE users ADD COLUMN last_login {float}",
            # A re-encoded PNG in base64 (text, so snapshots stay JSON), or NULL: the default.
            "ALTER TABLE users ADD COLUMN avatar TEXT",
            # A session is named by the sha256 of its cookie's secret part, never the secret.
            """CREATE TABLE sessions (
                id_hash TEXT PRIMARY KEY,
                user_id {bigint} NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                csrf_token TEXT NOT NULL,
                token_version INTEGER NOT NULL,
                created_at {float} NOT NULL,
                seen_at {float} NOT NULL,
                expires_at {float} NOT NULL)""",
            "CREATE INDEX sessions_user ON sessions (user_id)",
            "CREATE INDEX sessions_expiry ON sessions (expires_at)",
            """CREATE TABLE login_failures (
                id {id},
                username TEXT NOT NULL,
                address TEXT NOT NULL,
                at {float} NOT NULL)""",
            "CREATE INDEX login_failures_user ON login_failures (username, at)",
            "CREATE INDEX login_failures_address ON login_failures (address, at)",
        ],
    ),
    (
        "live events: a durable, ordered feed per user (proxy.events)",
        [
            # One row per user: the newest sequence number handed out (taken under this
            # row's lock, so one user's events commit in order) and the newest one pruned.
            """CREATE TABLE event_counters (
                user_id {bigint} PRIMARY KEY,
                last_seq {bigint} NOT NULL,
                pruned_through {bigint} NOT NULL DEFAULT 0)""",
            """CREATE TABLE events (
                user_id {bigint} NOT NULL,
                seq {bigint} NOT NULL,
                type TEXT NOT NULL,
                data TEXT NOT NULL,
                created_at {float} NOT NULL,
                PRIMARY KEY (user_id, seq))""",
            "CREATE INDEX events_created ON events (created_at)",
        ],
    ),
    (
        "account state kept in the database: disabled accounts, quotas, a password to change",
        [
            "ALTER TABLE users ADD COLUMN is_active INTEGER NOT NULL DEFAULT 1",
            # Bytes the user's files (every version) and open uploads may take; NULL: no limit.
            "ALTER TABLE users ADD COLUMN quota {bigint}",
            "ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0",
        ],
    ),
    (
        "files have paths: files.path (unique per owner), a display filename beside it",
        [
            # The column that was the name becomes the path, so the first step's table-level
            # UNIQUE (owner_id, filename) is now UNIQUE (owner_id, path) on both databases
            # (SQLite cannot drop a table's constraint) and every existing file's path is its
            # name. Files are deleted with their rows, so the constraint is over files that
            # exist. Then the display name comes back as its own column, filled from the path.
            "ALTER TABLE files RENAME COLUMN filename TO path",
            "ALTER TABLE files ADD COLUMN filename TEXT NOT NULL DEFAULT ''",
            "UPDATE files SET filename = path",
            # An upload's path ('' for one made before paths: its filename is its path).
            "ALTER TABLE uploads ADD COLUMN path TEXT NOT NULL DEFAULT ''",
        ],
    ),
    (
        "settings staff change at run time (proxy.catalog.settings): registration open or not",
        [
            # One row per setting staff have set; a setting without a row has the config's value.
            """CREATE TABLE settings (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL)""",
        ],
    ),
    (
        "blobs are deduplicated per owner: blobs.dedup_key (unique), the sha256 beside it",
        [
            # The column that was the content's sha256 becomes the key blobs are deduplicated
            # by, so the first step's UNIQUE (sha256) is now UNIQUE (dedup_key) on both
            # databases (SQLite cannot drop a table's constraint). A new blob's key is
            # '<owner id>:<sha256>': one owner's identical uploads share a blob, two owners'
            # never do, so nothing about a blob (its state, replicas, uncache, events) tells
            # one user about another's files. A blob from before keeps its bare sha256 as its
            # key (content that may be shared, as it was). Then the sha256 comes back as its
            # own column, filled from the key, and indexed (S3 objects are still one per
            # content: an object is removed only while no blob has its sha256).
            "ALTER TABLE blobs RENAME COLUMN sha256 TO dedup_key",
            "ALTER TABLE blobs ADD COLUMN sha256 TEXT NOT NULL DEFAULT ''",
            "UPDATE blobs SET sha256 = dedup_key",
            "CREATE INDEX blobs_by_sha256 ON blobs (sha256)",
        ],
    ),
    (
        "mirror want-lists by cursor: what each node was told to mirror or restore, and its cursor",
        [
            # One row per blob a node is (or was, until it acknowledges the withdrawal: gone = 1)
            # asked to mirror or restore; seq is the node's change number of the row's latest
            # change. key is the replica key, kept so a withdrawal outlives a deleted blob.
            """CREATE TABLE mirror_wants (
                node TEXT NOT NULL,
                kind TEXT NOT NULL,
                blob_id {bigint} NOT NULL,
                key TEXT NOT NULL,
                seq {bigint} NOT NULL,
                gone INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (node, kind, blob_id))""",
            "CREATE INDEX mirror_wants_seq ON mirror_wants (node, seq)",
            # Per node: its journal's id (NULL: send the whole list), the newest change it
            # acknowledged, and the newest change numbered; and the node's own numbering of
            # its record changes as its last recorded answer gave it (its run, and the newest
            # change), so it reports only the records changed since.
            """CREATE TABLE mirror_cursors (
                node TEXT PRIMARY KEY,
                state TEXT,
                acked {bigint} NOT NULL DEFAULT 0,
                seq {bigint} NOT NULL DEFAULT 0,
                report_boot TEXT,
                report_at {bigint} NOT NULL DEFAULT 0)""",
            # The blobs a node mirrors, found without reading the others.
            "CREATE INDEX blobs_mirror_node ON blobs (mirror_node, remote_state)",
            "CREATE INDEX blobs_restore_node ON blobs (restore_node, remote_state)",
        ],
    ),
    (
        "blobs still kept on the proxy are indexed, for the replication plan",
        [
            # The plan pages through blobs WHERE local = 1 by id; a partial index holds only
            # those (the replication backlog), so a pass finds its work without reading the
            # catalogue, and the index stays as small as the backlog.
            "CREATE INDEX blobs_kept_here ON blobs (id) WHERE local = 1",
        ],
    ),
    (
        "listing at scale: the (owner, path, id) index in code point order, a file counter",
        [
            # The listing's ORDER BY (path in code point order, then id) with the owner's
            # files as the range: PostgreSQL's UNIQUE (owner_id, path) index is in the
            # database's collation, so it gets one in "C" (SQLite's BINARY already is).
            "CREATE INDEX files_owner_path ON files (owner_id, path{collate_c}, id)",
            # The owner's files, for a listing's count without a scan of them (kept by
            # proxy.catalog.store in the transactions that add and delete files).
            "ALTER TABLE users ADD COLUMN file_count {bigint} NOT NULL DEFAULT 0",
            "UPDATE users SET file_count = (SELECT COUNT(*) FROM files WHERE owner_id = users.id)",
        ],
    ),
    (
        "replica rows by the time they changed, for replication passes that read only those",
        [
            # A pass that is not a full one repairs, releases and drops only for blobs whose
            # replica rows changed since the last pass: this finds them without a scan.
            "CREATE INDEX replicas_changed ON replicas (updated_at)",
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
