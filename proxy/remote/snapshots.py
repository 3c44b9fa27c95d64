"""Metadata snapshots in the bucket: their format, their names, listing and keep-last-N.

Snapshots live under ``<prefix>/metadata/<UTC yyyymmddThhmmssZ>-<random>.jsonl.gz``, beside the
blobs the nodes mirror to ``<prefix>/<sha256>``.

**A portable logical dump, not a database file.** A snapshot is gzip'd JSON lines: a header
(``format``, ``format_version``, ``schema_version`` = the newest applied migration,
``created_at``, the source ``dialect``, and every dumped table with its columns), then one
``{"table": name, "row": {column: value}}`` line per row, table by table in foreign-key order,
then a trailer ``{"end": {"rows": {table: count}}}`` that tells a complete snapshot from a
truncated one. The schema holds only integers, floats, text and NULL, which JSON carries
exactly, so a snapshot taken from SQLite restores into PostgreSQL and the other way round, and
no ``pg_dump`` whose version must match the server's is needed on the proxy's host.

**What is in a snapshot** (``DUMPED_TABLES``): users (with their argon2 hashes, so staff can log
in after a restore), blobs, files, versions, blob parts (the part checksums a restore from S3
verifies against), nodes, replicas and pending replica deletions (a faithful record of the old
cluster, though a restore does not bring them back), S3 connections (secrets stay sealed),
pending S3 object deletions (else objects of deleted files would stay in the bucket for good),
the staff's job intervals and settings. **Left out** (``SKIPPED_TABLES``): uploads (an unfinished
upload's bytes are in one proxy's staging area, which the disaster took; a finished one is only
a receipt), the system log (an operational diary that grows without bound; the restore writes
one entry saying where the new history starts), ``schema_migrations`` (implied by
``schema_version``) and the live events (``events``, ``event_counters``: a feed for clients
connected now; after a restore their cursors are too new, and they are told to reset), and
the nodes' mirror want-lists and cursors (``mirror_wants``, ``mirror_cursors``: each node
is sent its whole list again). A table that a later migration adds and nobody classified is
still dumped, after the known ones; a test fails until it is classified.

**Signed with a key nodes never see.** Every node holds the bucket's credentials, so anything
under ``metadata/`` may have been planted by a compromised node. The backup job signs each
snapshot with the proxy's *backup key* (``backup_key``, else ``DATA_DIR/backup_key``):
an HMAC-SHA256 over the object's name, its sha256 and its size (``signature``), kept in the
object's S3 metadata beside the sha256. Metadata rather than a trailer or a sidecar object:
it is written in the same PUT as the body (no second object to go missing or be swapped
alone), pruning and choosing the newest verify it with one HEAD per snapshot instead of a
download, and the body's format stays as it was. Binding the name means a genuine snapshot
copied under another (say, future) name no longer verifies; binding the sha256 means the
body, checked against it before a byte is parsed, is what the proxy wrote.

**Pruning and "the newest" trust only what this proxy wrote**: names dated more than
``CLOCK_SKEW`` after now, and objects whose signature this key does not verify, are neither
counted among the newest ``keep`` nor deleted (they are left for the operator to look at).

Writing one is ``proxy.remote.dump``'s job, the job that does it every so often is
``proxy.remote.backup``'s, and restoring one is ``proxy.remote.restore``'s.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from common.s3 import S3Settings
from proxy.api.views import isotime

FORMAT = "pyarchive-metadata"
FORMAT_VERSION = 1

# Dumped, in this order: every foreign key points to a table earlier in the list.
DUMPED_TABLES = (
    "users", "blobs", "files", "versions", "blob_parts", "nodes", "replicas",
    "replica_deletions", "s3_connections", "s3_deletions", "jobs", "settings",
)  # fmt: skip
# Brought back into a new cluster (the rest of a snapshot describes the cluster that is gone).
RESTORED_TABLES = (
    "users", "blobs", "files", "versions", "blob_parts", "s3_connections", "s3_deletions", "jobs",
    "settings",
)  # fmt: skip
SKIPPED_TABLES = {
    "uploads": "an unfinished upload's bytes were in the lost staging area",
    "system_log": "an operational diary; the restore starts a new one",
    "schema_migrations": "implied by the header's schema_version",
    "sessions": "browser sessions: a restored cluster starts with everyone signed out",
    "login_failures": "a few minutes of throttling state, not worth keeping",
    "events": "a live feed for connected clients; a restored cluster starts a new one",
    "event_counters": "the live feed's positions: clients' old cursors are answered reset",
    "mirror_wants": "what the old cluster's nodes were told to mirror; new nodes get whole lists",
    "mirror_cursors": "the old nodes' want-list cursors; a new node's journal is not theirs",
}

CLOCK_SKEW = 300.0  # a snapshot dated later than this after now is planted (or a broken clock)
SIGNATURE = "signature"  # the S3 metadata key of a snapshot's signature
_SCHEME = "hmac-sha256:"

_SNAPSHOT_NAME = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]{8}\.jsonl\.gz")


class BackupError(RuntimeError):
    """A snapshot could not be written; the message says why (never with a secret)."""


def snapshot_name(seconds: float, token: str) -> str:
    """The object name of a snapshot taken at ``seconds``: sorts by time, unique by ``token``.

    >>> snapshot_name(1800000000.7, "0a1b2c3d")
    '20270115T080000Z-0a1b2c3d.jsonl.gz'
    """
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(seconds))}-{token}.jsonl.gz"


@dataclass(frozen=True)
class Snapshot:
    name: str
    key: str
    size: int
    last_modified: float

    @property
    def taken_at(self) -> float:
        match = _SNAPSHOT_NAME.fullmatch(self.name)
        assert match is not None
        return float(calendar.timegm(time.strptime(match[1], "%Y%m%dT%H%M%SZ")))

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "size": self.size,
            "taken_at": isotime(self.taken_at),
        }


def list_snapshots_in(client: Any, settings: S3Settings) -> list[Snapshot]:
    """Every snapshot under the connection's metadata prefix, newest first. Blocking."""
    found = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.bucket, Prefix=settings.metadata_prefix
    )
    for page in pages:
        for item in page.get("Contents", []):
            name = item["Key"][len(settings.metadata_prefix) :]
            if _SNAPSHOT_NAME.fullmatch(name):
                modified = item["LastModified"].timestamp()
                found.append(Snapshot(name, item["Key"], int(item["Size"]), modified))
    return sorted(found, key=lambda s: (s.name, s.last_modified), reverse=True)


def signature(key: str, name: str, sha256: str, size: int) -> str:
    """The signature of snapshot ``name`` whose body has ``sha256`` and ``size`` bytes.

    >>> signature("k", "20270115T080000Z-0a1b2c3d.jsonl.gz", "ab" * 32, 10)[:20]
    'hmac-sha256:6239aa60'
    """
    message = f"pyarchive-metadata-snapshot/1\n{name}\n{sha256}\n{size}".encode()
    return _SCHEME + hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def signed_by(key: str | None, name: str, metadata: Mapping[str, str], size: int) -> bool:
    """Whether an object's metadata carries this key's signature of ``name`` at ``size``.

    >>> meta = {"sha256": "ab" * 32, "signature": signature("k", "n", "ab" * 32, 10)}
    >>> signed_by("k", "n", meta, 10), signed_by("other", "n", meta, 10)
    (True, False)
    >>> signed_by("k", "renamed", meta, 10), signed_by("k", "n", meta, 11)
    (False, False)
    """
    if not key:
        return False
    expected = signature(key, name, str(metadata.get("sha256", "")), size)
    return hmac.compare_digest(str(metadata.get(SIGNATURE, "")).encode(), expected.encode())


def not_future(found: list[Snapshot], now: float) -> list[Snapshot]:
    """The snapshots not dated after ``now`` (beyond ``CLOCK_SKEW``), in the same order."""
    return [s for s in found if s.taken_at <= now + CLOCK_SKEW]


def is_signed(client: Any, settings: S3Settings, snapshot: Snapshot, key: str | None) -> bool:
    """Whether the object is signed with ``key`` (one HEAD). Blocking."""
    if not key:
        return False
    head = client.head_object(Bucket=settings.bucket, Key=snapshot.key)
    return signed_by(key, snapshot.name, head.get("Metadata", {}), int(head["ContentLength"]))


def genuine_snapshots(
    client: Any, settings: S3Settings, key: str, now: float
) -> Iterator[Snapshot]:
    """This proxy's snapshots, newest first: not dated in the future, signed with ``key``.
    Lazily, one HEAD per snapshot looked at. Blocking."""
    for snapshot in not_future(list_snapshots_in(client, settings), now):
        if is_signed(client, settings, snapshot, key):
            yield snapshot


def prune_snapshots(
    client: Any, settings: S3Settings, keep: int, *, key: str, now: float
) -> list[str]:
    """Delete all but the newest ``keep`` (at least one) of this proxy's snapshots; their
    names. Others (future-dated, unsigned or signed by another key) are left alone and do
    not count. Blocking."""
    doomed = list(genuine_snapshots(client, settings, key, now))[max(1, keep) :]
    for start in range(0, len(doomed), 1000):
        batch = doomed[start : start + 1000]
        answer = client.delete_objects(
            Bucket=settings.bucket,
            Delete={"Objects": [{"Key": s.key} for s in batch], "Quiet": True},
        )
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise BackupError(f"could not delete old snapshot {first.get('Key')}: "
                              f"{first.get('Code')} {first.get('Message')}")  # fmt: skip
    return [s.name for s in doomed]
