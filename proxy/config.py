"""The proxy's settings: one typed object, documented once (see ``etc/proxy.conf-sample``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.config import parse_bool, parse_duration, parse_size, setting
from proxy.api.edge import parse_networks
from proxy.cluster.placement import parse_zone_map


def _zone_map_text(text: str) -> str:
    parse_zone_map(text)  # refuse a bad map at start-up, naming the setting
    return text


def _networks_text(text: str) -> str:
    parse_networks(text)  # refuse a bad address at start-up, naming the setting
    return text


def _tus_path_text(text: str) -> str:
    """``/files/`` or another absolute path of letters, digits, ``_.-`` and slashes."""
    path = "/" + text.strip().strip("/") + "/"
    if path != "//" and not re.fullmatch(r"(/[A-Za-z0-9_.\-]+)+/", path):
        raise ValueError(f"not a path like /files/: {text!r}")
    taken = {"//", "/storage/", "/api/", "/docs/", "/static/", "/archives/", "/login/", "/admin/"}
    if path in taken | {"/register/", "/logout/", "/profile/"}:
        raise ValueError(f"{path} is taken by the proxy's other routes")
    return path


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be 1 or more, not {value}")
    return value


def _batch_files(text: str) -> int:
    """1 to 1000: a node takes at most 1000 replicas in one batch confirm."""
    value = _at_least_one(text)
    if value > 1000:
        raise ValueError(f"must be at most 1000 (what a node confirms at once), not {value}")
    return value


def _positive_size(text: str) -> int:
    value = parse_size(text)
    if value < 1:
        raise ValueError("must be at least 1 byte")
    return value


@dataclass(frozen=True)
class ProxyConfig:
    data_dir: str = setting(
        "./var/proxy", str, "Directory for the staging area, stored files and the token secret."
    )
    listen: str = setting(
        "tcp:8000:interface=127.0.0.1", str, "Twisted endpoint string the HTTP API listens on."
    )
    database: str = setting(
        "",
        str,
        "sqlite:///PATH or postgresql://USER@HOST:PORT/DB[?schema=NAME]; "
        "empty means SQLite in DATA_DIR/pyarchive.sqlite3.",
    )
    public_url: str = setting(
        "",
        str,
        "Absolute base URL clients reach this proxy at (for the 'url' of uploads); "
        "empty means taken from each request's Host header.",
    )
    secret_key: str = setting(
        "",
        str,
        "Secret that signs login tokens and browser sessions; empty means generated once and "
        "kept in DATA_DIR/secret_key (mode 0600).",
    )
    encryption_key: str = setting(
        "",
        str,
        "Key that encrypts the S3 connections' secret keys in the database; empty means "
        "generated once and kept in DATA_DIR/encryption_key (mode 0600), apart from the token "
        "secret so that each can be rotated alone (pyarchive-proxy rotate-secret), except "
        "where secret_key is set: then that is used, as by older releases (set this as well, "
        "the same on every proxy sharing the database, to keep them apart). A database moved "
        "to a proxy with another key keeps its connections, but their secret keys must be "
        "entered again.",
    )
    backup_key: str = setting(
        "",
        str,
        "Key that signs the metadata snapshots written to the bucket (HMAC-SHA256), which "
        "nodes never see; empty means generated once and kept in DATA_DIR/backup_key (mode "
        "0600). Keep a copy apart from the server: a restore refuses snapshots it cannot "
        "verify (pyarchive-proxy restore --backup-key-file).",
    )
    token_lifetime: float = setting(
        86400.0, parse_duration, "How long a login token is valid.", shown="24h"
    )
    upload_expiry: float = setting(
        86400.0,
        parse_duration,
        "How long after creation an unfinished upload can be resumed; after that it is "
        "answered 410 and its staging space is freed.",
        shown="24h",
    )
    max_chunk_size: int = setting(
        64 * 2**20, parse_size, "Largest chunk one PUT may carry (413 above it).", shown="64MiB"
    )
    cors_origins: str = setting(
        "",
        str,
        "Origins whose browser pages may call the API (CORS), comma-separated, or * for any; "
        "empty: none but the proxy's own pages.",
    )
    trusted_proxies: str = setting(
        "",
        _networks_text,
        "Addresses or networks (comma-separated) of reverse proxies whose Forwarded or "
        "X-Forwarded-Proto/-Host headers name the public scheme and host; empty: none.",
    )
    tus_path: str = setting(
        "/files/",
        _tus_path_text,
        "Where tus clients upload (the tus endpoint); /files/ answers too.",
    )
    allow_registration: bool = setting(
        True,
        parse_bool,
        "Whether anyone may create an account (/register/ and POST /api/auth/register); "
        "when off, staff create accounts (POST /api/users/). Only the default: once staff "
        "switch registration in the console (or PATCH /api/settings/), their choice holds.",
        shown="true",
    )
    session_lifetime: float = setting(
        14 * 86400.0,
        parse_duration,
        "How long a browser session lasts after its last use (logging out ends it at once).",
        shown="14d",
    )
    web_chunk_size: int = setting(
        8 * 2**20,
        parse_size,
        "The size of each tus PATCH the upload page sends; its progress moves by what the "
        "server acknowledged, one chunk at a time.",
        shown="8MiB",
    )
    web_stall_timeout: float = setting(
        30.0,
        parse_duration,
        "The upload page aborts and retries a request that has had no acknowledged progress "
        "for this long.",
        shown="30s",
    )
    max_upload_size: int = setting(
        2**40,
        parse_size,
        "Largest upload (tus: Tus-Max-Size; 413 above it), and the largest tus PATCH.",
        shown="1TiB",
    )
    claim_wait: float = setting(
        5.0,
        parse_duration,
        "How long a request waits for another request that is writing to the same upload; "
        "after that it is answered 409 with the upload's current offset and Retry-After.",
        shown="5s",
    )
    max_open_uploads: int = setting(
        20,
        _at_least_one,
        "Unfinished uploads (not expired) one account may have open, in both dialects (a tus "
        "final upload is not counted: its partials are); creating one more is answered 429.",
    )
    page_size: int = setting(20, int, "Files per page in GET /storage/files/.")
    db_pool_size: int = setting(
        5, int, "PostgreSQL connections in the pool (SQLite always uses one)."
    )
    io_threads: int = setting(8, int, "Threads that write, fsync and hash upload data.")
    cluster_secret: str = setting(
        "",
        str,
        "The secret every storage node's key is derived from (signed internal calls, "
        "download tokens, rsync passwords, sealed S3 settings), at least 32 characters; empty "
        "means generated once and kept in DATA_DIR/cluster_secret (mode 0600). Give each node "
        "its own key ('pyarchive-proxy nodes key NAME'), not this.",
    )
    replicas: int = setting(2, int, "Confirmed copies on distinct nodes each file should have.")
    node_ping_interval: float = setting(
        10.0, parse_duration, "How often the node monitor pings every node.", shown="10s"
    )
    node_ping_timeout: float = setting(
        3.0, parse_duration, "How long a ping may take before it counts as missed.", shown="3s"
    )
    node_down_after: int = setting(3, int, "Missed pings in a row after which a node is down.")
    node_ca_file: str = setting(
        "",
        str,
        "PEM file of the certificates trusted for nodes' https:// URLs (a private CA, or a "
        "node's self-signed certificate); empty: the system's trust store.",
    )
    replica_grace: float = setting(
        900.0,
        parse_duration,
        "How long a node may be down before its replicas are re-created elsewhere.",
        shown="15m",
    )
    replication_interval: float = setting(
        5.0,
        parse_duration,
        "How often placement, replication, repair and cleanup look for work (completions also "
        "start it at once).",
        shown="5s",
    )
    replication_small_file: int = setting(
        8 * 2**20,
        _positive_size,
        "Files smaller than this are copied to a node in batches (one rsync run and one "
        "signed confirm for many); larger ones are copied one at a time.",
        shown="8MiB",
    )
    replication_batch_files: int = setting(
        500, _batch_files, "The most small files one batch copies to a node (at most 1000)."
    )
    replication_batch_bytes: int = setting(
        64 * 2**20, _positive_size, "The most bytes one batch of small files holds.", shown="64MiB"
    )
    scrub_interval: float = setting(
        86400.0,
        parse_duration,
        "How often every confirmed replica is re-hashed on its node (staff can also run it "
        "now: POST /api/jobs/scrub/run).",
        shown="24h",
    )
    mirror_sync_interval: float = setting(
        5.0,
        parse_duration,
        "How often the proxy tells every node which files to mirror to S3 or restore from it, "
        "and records what they report (job mirror-sync).",
        shown="5s",
    )
    s3_cleanup_interval: float = setting(
        60.0,
        parse_duration,
        "How often S3 objects of deleted files are removed (job s3-cleanup); failures wait "
        "longer each time.",
        shown="60s",
    )
    restore_retry_after: int = setting(
        30, int, "Seconds a client is told to wait (Retry-After) while a file is restored."
    )
    backup_interval: float = setting(
        86400.0,
        parse_duration,
        "How often a snapshot of the metadata database is written to the active S3 bucket "
        "under PREFIX/metadata/ (job metadata-backup; staff can also run it now).",
        shown="24h",
    )
    backup_keep: int = setting(
        7, _at_least_one, "How many metadata snapshots are kept in the bucket (the newest)."
    )
    rsync_timeout: float = setting(
        60.0, parse_duration, "rsync's I/O timeout when copying to a node.", shown="60s"
    )
    rsync_binary: str = setting("rsync", str, "The rsync program the proxy runs.")
    download_token_lifetime: float = setting(
        3600.0, parse_duration, "How long a download redirect's signed URL stays valid.", shown="1h"
    )
    client_zones: str = setting(
        "",
        _zone_map_text,
        "Which client networks are in which zone, for choosing the nearest replica: "
        "ZONE=NETWORK[, ZONE=NETWORK...], e.g. home=192.168.0.0/16.",
    )
    system_log_retention: float = setting(
        30 * 86400.0,
        parse_duration,
        "How long entries stay in the system log (GET /api/system-log/); older ones are "
        "pruned by the expire-uploads job.",
        shown="30d",
    )
    event_retention: float = setting(
        7 * 86400.0,
        parse_duration,
        "How long users' live events (GET /api/events, GET /api/changes) are kept; the "
        "events-prune job drops older ones, and a client whose cursor is older is told to "
        "reset (reload what it shows).",
        shown="7d",
    )
    events_poll_interval: float = setting(
        2.0,
        parse_duration,
        "How often open event streams and long polls look for events recorded by other "
        "proxies sharing the database (this proxy's own arrive at once).",
        shown="2s",
    )
    events_keepalive: float = setting(
        15.0,
        parse_duration,
        "How often an open event stream sends a comment line, so that proxies and load "
        "balancers do not close it as idle.",
        shown="15s",
    )
