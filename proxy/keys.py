"""The proxy's keys: which key does what, where each is kept, and how an old one is retired.

``secret_key`` signs login tokens and browser sessions, ``encryption_key`` seals the S3
connections' secret keys in the database, ``cluster_secret`` is what every node's own key is
derived from, ``backup_key`` signs metadata snapshots. Each is
taken from the configuration, or made once and kept in DATA_DIR (mode 0600).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from common.s3 import SecretBox
from common.secretcheck import check_cluster_secret
from proxy.config import ProxyConfig
from proxy.remote.connections import S3Connections, connection_box

log = Logger()


def load_secret(config: ProxyConfig) -> str:
    """The token-signing secret: from config, or made once and kept in DATA_DIR (0600)."""
    return config.secret_key or _kept_secret(Path(config.data_dir) / "secret_key")


def load_cluster_secret(config: ProxyConfig) -> str:
    """The secret shared with nodes: from config, or made once and kept in DATA_DIR (0600).

    ConfigError for one that is short or published (see ``common.secretcheck``).
    """
    path = Path(config.data_dir) / "cluster_secret"
    secret = config.cluster_secret or _kept_secret(path)
    check_cluster_secret(secret, "cluster_secret" if config.cluster_secret else str(path))
    return secret


BACKUP_KEY_FILE = "backup_key"


def load_backup_key(config: ProxyConfig) -> str:
    """The key that signs metadata snapshots: from config, or made once and kept in DATA_DIR
    (0600). Nodes never see it, so a snapshot planted in the bucket cannot carry it."""
    return config.backup_key or _kept_secret(Path(config.data_dir) / BACKUP_KEY_FILE)


@dataclass(frozen=True)
class EncryptionKeyFiles:
    """Where the key that seals S3 secrets is kept, and the files of a rotation: ``pending``
    holds the next key while the rows are re-sealed, ``previous`` the one it replaced."""

    current: Path
    pending: Path
    previous: Path

    @classmethod
    def under(cls, data_dir: str) -> EncryptionKeyFiles:
        path = Path(data_dir) / "encryption_key"
        return cls(path, path.with_name("encryption_key.new"), path.with_name("encryption_key.old"))


def load_connection_box(config: ProxyConfig) -> SecretBox:
    """The box S3 connections' secret keys are sealed with.

    ``encryption_key`` from the configuration seals and opens alone. So does a ``secret_key``
    from the configuration while ``encryption_key`` is not set, as in older releases: proxies
    sharing a database share that key, and a key of each one's own would lock the others out.
    Otherwise the key is made once and kept in DATA_DIR/encryption_key (0600), and the keys it
    may have replaced still open what they sealed until ``Proxy.start`` re-seals it: a
    rotation's pending and previous keys, and the token secret, which sealed these secrets
    before they had a key of their own.
    """
    if config.encryption_key or config.secret_key:
        return connection_box(config.encryption_key or config.secret_key)
    files = EncryptionKeyFiles.under(config.data_dir)
    fallbacks = [read_kept(path) for path in (files.pending, files.previous)]
    fallbacks.append(load_secret(config))
    return connection_box(_kept_secret(files.current), [key for key in fallbacks if key])


def read_kept(path: Path) -> str:
    """A kept secret's text, or "" where there is no such file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def write_kept(path: Path, value: str) -> None:
    """Replace ``path`` with ``value`` atomically, mode 0600 from the start, fsynced."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def reseal_connections(config: ProxyConfig, connections: S3Connections) -> None:
    """Seal every S3 secret with the current key, then forget the keys a rotation left."""
    resealed, _ = await connections.reseal()
    if resealed:
        log.info("re-sealed {count} S3 connection secrets with the current key", count=resealed)
    if not (config.encryption_key or config.secret_key):
        files = EncryptionKeyFiles.under(config.data_dir)
        files.pending.unlink(missing_ok=True)
        files.previous.unlink(missing_ok=True)


def _kept_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
        out.flush()
        os.fsync(out.fileno())
    return value
