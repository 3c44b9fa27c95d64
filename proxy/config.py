"""The proxy's settings: one typed object, documented once (see ``etc/proxy.conf-sample``)."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import parse_duration, parse_size, setting
from proxy.placement import parse_zone_map


def _zone_map_text(text: str) -> str:
    parse_zone_map(text)  # refuse a bad map at start-up, naming the setting
    return text


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
        "Secret that signs login tokens; empty means generated once and kept in "
        "DATA_DIR/secret_key (mode 0600).",
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
    page_size: int = setting(20, int, "Files per page in GET /storage/files/.")
    db_pool_size: int = setting(
        5, int, "PostgreSQL connections in the pool (SQLite always uses one)."
    )
    io_threads: int = setting(8, int, "Threads that write, fsync and hash upload data.")
    cluster_secret: str = setting(
        "",
        str,
        "Secret shared with every storage node (signed internal calls, download tokens, the "
        "rsync password); empty means generated once and kept in DATA_DIR/cluster_secret "
        "(mode 0600): give the same value to the nodes.",
    )
    replicas: int = setting(2, int, "Confirmed copies on distinct nodes each file should have.")
    node_ping_interval: float = setting(
        10.0, parse_duration, "How often the node monitor pings every node.", shown="10s"
    )
    node_ping_timeout: float = setting(
        3.0, parse_duration, "How long a ping may take before it counts as missed.", shown="3s"
    )
    node_down_after: int = setting(3, int, "Missed pings in a row after which a node is down.")
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
    scrub_interval: float = setting(
        86400.0,
        parse_duration,
        "How often every confirmed replica is re-hashed on its node (staff can also run it "
        "now: POST /api/jobs/scrub/run).",
        shown="24h",
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
