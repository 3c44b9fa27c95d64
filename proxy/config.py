"""The proxy's settings: one typed object, documented once (see ``etc/proxy.conf-sample``)."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import parse_duration, parse_size, setting


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
