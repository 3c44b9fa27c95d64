"""Disaster recovery: rebuild an empty proxy database from a metadata snapshot in the bucket.

``pyarchive-proxy restore --from-s3`` calls ``restore_from_s3``. The snapshot format and what
it holds are described in ``proxy.remote.snapshots``. The target is treated as a **new cluster**:

- It must hold no user, file or blob (empty, only migrated, or served by a proxy that nobody
  used yet): merging a snapshot into a live catalogue would mix two histories. The check is
  made before downloading anything and again inside the restoring transaction. Job rows a
  started proxy wrote give way to the snapshot's; nodes registered before the restore stay.
- Nothing in the bucket is trusted for being there (every node holds its credentials): the
  newest snapshot signed with the backup key and not dated in the future (or the one named)
  is downloaded within size limits, its signature and sha256 checked, and read line by
  line within a line length (``proxy.remote.restore_snapshot``); an unsigned or wrongly
  signed one is refused unless the operator says ``--trust-unsigned``. Every row is checked
  with the API's own rules, and one bad row refuses the snapshot
  (``proxy.remote.restore_rows``); every account comes back without staff rights unless
  the operator says ``--restore-staff``. A snapshot from a newer schema than this code
  knows is refused. The target is migrated, and every row is inserted in **one
  transaction**, so a failure at any step leaves the target as it was. PostgreSQL's
  sequences are moved past the restored ids (SQLite's AUTOINCREMENT follows explicit ids
  by itself).
- The old nodes, their replicas and the old proxy's own store are gone: no node, replica or
  pending replica deletion is restored, and every blob gets ``local = 0`` with its mirror and
  restore assignments cleared. Each blob whose object ``<prefix>/<sha256>`` is in the bucket
  with the right size (and sha256 metadata, when present) becomes ``remote`` and verified, so
  it can be cached back; one whose object is missing becomes ``lost`` (no copy exists
  anywhere; the reason is in ``mirror_detail``) and its part list is dropped. A remote blob
  whose part list is incomplete (mirrored after the snapshot was taken) gets it rebuilt from
  the object: part sizes from ``HeadObject`` with ``PartNumber``, part sha256s by reading the
  object once (which also proves it holds the blob's content; if not, the blob is lost), so
  a node can restore and verify it part by part.
- The S3 connection used for the restore becomes the active one (the restored row with the
  same bucket, prefix and endpoint, or a new one), its secret sealed with *this* proxy's key.
  Other restored connections are kept even when this key cannot open their secrets (the
  old proxy's ``encryption_key`` may be gone with it): as for a database moved to a proxy
  with another key, staff see them and only need to enter the secret again; the result
  names them. Job intervals set by staff are kept, their run history cleared. Everyone
  keeps their password (argon2 hashes), so restored staff can log in.

Only one clear line reaches the operator on failure (``RestoreError``); no secret is ever
part of a message.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common.db import DatabaseUrlError, parse_database_url
from common.s3 import S3Settings, SecretBox, make_client
from proxy.migrations import migrate
from proxy.ops.systemlog import SystemLog
from proxy.remote.restore_cluster import HEAD_THREADS, adopt_connection, reset_jobs, settle_blobs
from proxy.remote.restore_snapshot import (
    DEFAULT_LIMITS,
    Limits,
    RestoreError,
    Trust,
    check_header,
    choose_snapshot,
    download_verified,
    read_records,
)
from proxy.remote.restore_target import RestoreTarget, load_rows
from proxy.remote.snapshots import RESTORED_TABLES, Snapshot

__all__ = ["Limits", "RestoreError", "Trust", "restore_from_s3"]


def restore_from_s3(
    database_url: str,
    settings: S3Settings,
    snapshot: str | None = None,
    *,
    box: SecretBox,
    trust: Trust,
    restore_staff: bool = False,
    say: Callable[[str], None] = lambda line: None,
    workdir: str | None = None,
    now: Callable[[], float] = time.time,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Restore ``snapshot`` (default: the newest this backup key signed) from ``settings``'
    bucket into the empty database at ``database_url``; returns a summary. Blocking: for the
    command line."""
    if trust.key is None and not trust.unsigned:
        raise RestoreError(
            "no backup key to verify the snapshots with: pass --backup-key-file (your copy "
            "of the old proxy's DATA_DIR/backup_key) or set backup_key; --trust-unsigned "
            "restores a snapshot nobody can vouch for"
        )
    try:
        url = parse_database_url(database_url)
    except DatabaseUrlError as exc:
        raise RestoreError(str(exc)) from None
    with RestoreTarget(url) as target:
        try:
            target.refuse_if_used()
        except target.errors as exc:
            raise RestoreError(f"cannot read the target database: {_first_line(exc)}") from None
        target.rollback()  # PostgreSQL: do not sit in a transaction while downloading
        say(f"target database ({url.dialect}) is empty")
        client = make_client(settings, max_pool_connections=HEAD_THREADS + 2)
        chosen, signed = choose_snapshot(client, settings, snapshot, say, trust=trust, now=now())
        with tempfile.TemporaryDirectory(prefix=".metadata-restore-", dir=workdir) as tmp:
            path = Path(tmp) / chosen.name
            download_verified(client, settings, chosen, path, trust=trust, signed=signed,
                              limits=limits)  # fmt: skip
            checked = "signature and sha256 verified" if signed else "sha256 verified, UNSIGNED"
            say(f"downloaded {chosen.name} ({chosen.size} bytes), {checked}")
            records = read_records(path, chosen.name, limits)
            header = check_header(next(records, None), chosen.name)
            say(f"snapshot of a {header['dialect']} database at schema version "
                f"{header['schema_version']}, taken {header['created_at']}")  # fmt: skip
            target.begin()
            try:
                summary = _restore_txn(target, client, settings, box, chosen, header, records,
                                       say, now(), restore_staff)  # fmt: skip
                summary["signed"] = signed
                target.commit()
            except target.errors as exc:
                target.rollback()
                raise RestoreError(f"the target database refused the restore (nothing was "
                                   f"changed): {_first_line(exc)}") from exc  # fmt: skip
            except BaseException:
                target.rollback()
                raise
    return summary


def _restore_txn(
    target: RestoreTarget,
    client: Any,
    settings: S3Settings,
    box: SecretBox,
    chosen: Snapshot,
    header: dict[str, Any],
    records: Iterator[dict[str, Any]],
    say: Callable[[str], None],
    now: float,
    restore_staff: bool,
) -> dict[str, Any]:
    """Everything that happens inside the one restoring transaction."""
    migrate(target.txn)
    target.refuse_if_used()
    counts, demoted = load_rows(target, header, records, restore_staff=restore_staff)
    restored = {t: counts[t] for t in RESTORED_TABLES if t in counts}
    say("rows: " + ", ".join(f"{n} {t}" for t, n in restored.items()))
    if demoted:
        say(f"restored without staff rights (--restore-staff keeps them): {', '.join(demoted)}"
            "; make staff again with pyarchive-proxy create-admin")  # fmt: skip
    elif restore_staff:
        say("staff rights restored as the snapshot has them (--restore-staff)")
    target.fix_sequences()
    blobs = settle_blobs(target.txn, client, settings, say)
    detail = f"used to restore {chosen.name}"
    connection, unreadable = adopt_connection(target.txn, settings, box, now, detail)
    if unreadable:
        say(f"S3 connection(s) whose secret key must be entered again: {', '.join(unreadable)}")
    say(f"S3 connection {connection!r} is active, its secret sealed with this proxy's key")
    reset_jobs(target.txn)
    summary = {
        "snapshot": chosen.name,
        "schema_version": header["schema_version"],
        "source": header["dialect"],
        "taken_at": header["created_at"],
        "tables": restored,
        "users": counts.get("users", 0),
        "staff_demoted": demoted,
        "files": counts.get("files", 0),
        **blobs,
        "connection": connection,
        "connections_unreadable": unreadable,
    }
    SystemLog.record_txn(
        target.txn, now, "info", "metadata-restore",
        f"metadata restored from snapshot {chosen.name} into a new cluster",
        data={k: v for k, v in summary.items() if k != "tables"},
    )  # fmt: skip
    return summary


def _first_line(exc: Exception) -> str:
    return "".join(str(exc).strip().splitlines()[:1])
