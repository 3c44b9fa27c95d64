"""The snapshot a restore reads: ``RestoreError`` (the one line the operator sees), choosing
the snapshot in the bucket, downloading it with its sha256 checked, and reading its records and
header (a snapshot from a newer schema than this code knows is refused). Blocking."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common.s3 import S3Settings
from proxy.migrations import MIGRATIONS
from proxy.remote.snapshots import FORMAT, FORMAT_VERSION, Snapshot, list_snapshots_in


class RestoreError(RuntimeError):
    """A restore was refused or failed; the message is one line for the operator."""


def s3_failure(exc: Exception, settings: S3Settings) -> RestoreError:
    """One line for an S3 error; botocore's messages carry no secrets."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    if isinstance(exc, EndpointConnectionError):
        return RestoreError(f"cannot reach the S3 endpoint {settings.endpoint_url or '(AWS)'}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
            return RestoreError(f"S3 refused the credentials for bucket {settings.bucket} ({code})")
        if code in {"NoSuchBucket"}:
            return RestoreError(f"there is no bucket {settings.bucket}")
        return RestoreError(f"S3 error: {code} {error.get('Message', '')}".strip())
    return RestoreError(f"S3 error: {exc}")


def choose_snapshot(
    client: Any, settings: S3Settings, wanted: str | None, say: Callable[[str], None]
) -> Snapshot:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = list_snapshots_in(client, settings)
    except (BotoCoreError, ClientError) as exc:
        raise s3_failure(exc, settings) from None
    where = f"s3://{settings.bucket}/{settings.metadata_prefix}"
    if not found:
        raise RestoreError(f"no metadata snapshots in {where}")
    if wanted is None:
        say(f"{len(found)} snapshot(s) in {where}; restoring the newest, {found[0].name}")
        return found[0]
    for snapshot in found:
        if wanted in {snapshot.name, snapshot.key}:
            say(f"restoring snapshot {snapshot.name}")
            return snapshot
    names = ", ".join(s.name for s in found)
    raise RestoreError(f"no snapshot {wanted} in {where}; there are: {names}")


def download_verified(client: Any, settings: S3Settings, snapshot: Snapshot, path: Path) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        head = client.head_object(Bucket=settings.bucket, Key=snapshot.key)
        client.download_file(settings.bucket, snapshot.key, str(path))
    except (BotoCoreError, ClientError) as exc:
        raise s3_failure(exc, settings) from None
    expected = str(head.get("Metadata", {}).get("sha256", ""))
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    if not expected:
        raise RestoreError(f"snapshot {snapshot.name} carries no sha256, so it cannot be trusted")
    if digest.hexdigest() != expected:
        raise RestoreError(f"snapshot {snapshot.name} is corrupt: its sha256 is "
                           f"{digest.hexdigest()}, not {expected} as written")  # fmt: skip


def read_records(path: Path, name: str) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(path, "rb") as lines:
            for line in lines:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("a line is not a JSON object")
                yield record
    except (OSError, EOFError, ValueError) as exc:
        raise RestoreError(f"snapshot {name} is unreadable: {exc}") from None


def check_header(record: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if record is None or record.get("format") != FORMAT:
        raise RestoreError(f"{name} is not a PyArchive metadata snapshot")
    if record.get("format_version") != FORMAT_VERSION:
        raise RestoreError(f"snapshot {name} has format version {record.get('format_version')}; "
                           f"this PyArchive reads version {FORMAT_VERSION}")  # fmt: skip
    schema = record.get("schema_version")
    if not isinstance(schema, int) or schema > len(MIGRATIONS):
        raise RestoreError(f"snapshot {name} is from a newer PyArchive (schema version {schema}, "
                           f"this one knows {len(MIGRATIONS)}): upgrade, then restore")  # fmt: skip
    return record
