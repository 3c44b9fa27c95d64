"""The snapshot a restore reads: ``RestoreError`` (the one line the operator sees), choosing
the snapshot in the bucket, downloading it with its sha256 and signature checked, and reading
its records and header (a snapshot from a newer schema than this code knows is refused).
Blocking.

Anything in the bucket may have been written by a compromised node (every node holds the
credentials), so a snapshot is trusted only when the backup key verifies its signature
(``proxy.remote.snapshots``), unless the operator says ``--trust-unsigned``; and whatever
it holds is read within ``Limits``: the object's size, its size once unpacked, and each line's
length, so that a planted object cannot fill the disk or the memory."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.s3 import S3Settings
from proxy.migrations import MIGRATIONS
from proxy.remote.snapshots import (
    FORMAT,
    FORMAT_VERSION,
    Snapshot,
    is_signed,
    list_snapshots_in,
    not_future,
    signed_by,
)

_UNSIGNED = (
    "is not signed by this backup key (unsigned, signed with another key, or planted by "
    "someone holding the bucket's credentials)"
)
_TRUST_HINT = "--trust-unsigned restores it anyway, once you know where it came from"


class RestoreError(RuntimeError):
    """A restore was refused or failed; the message is one line for the operator."""


@dataclass(frozen=True)
class Trust:
    """What a restore accepts: snapshots signed with ``key`` (None: no key at hand), or,
    with ``unsigned``, any snapshot (the operator's explicit choice, said aloud)."""

    key: str | None
    unsigned: bool = False


@dataclass(frozen=True)
class Limits:
    """How much of a snapshot a restore reads before refusing it: the object's bytes, the
    bytes once unpacked, and the bytes of one line (a row: a few hundred bytes; a profile
    picture, up to a few hundred KiB)."""

    object_bytes: int = 16 * 2**30
    unpacked_bytes: int = 256 * 2**30
    line_bytes: int = 4 * 2**20


DEFAULT_LIMITS = Limits()


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
    client: Any,
    settings: S3Settings,
    wanted: str | None,
    say: Callable[[str], None],
    *,
    trust: Trust,
    now: float,
) -> tuple[Snapshot, bool]:
    """The snapshot to restore and whether this key signed it: the one named, or the newest
    signed one that is not dated in the future (with ``trust.unsigned`` and none signed,
    the newest not dated in the future)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = list_snapshots_in(client, settings)
        where = f"s3://{settings.bucket}/{settings.metadata_prefix}"
        if not found:
            raise RestoreError(f"no metadata snapshots in {where}")
        if wanted is not None:
            chosen = next((s for s in found if wanted in {s.name, s.key}), None)
            if chosen is None:
                names = ", ".join(s.name for s in found)
                raise RestoreError(f"no snapshot {wanted} in {where}; there are: {names}")
            signed = is_signed(client, settings, chosen, trust.key)
            if not signed and not trust.unsigned:
                raise RestoreError(f"snapshot {chosen.name} {_UNSIGNED}: refused; {_TRUST_HINT}")
            say(f"restoring snapshot {chosen.name}")
            return chosen, signed
        current = not_future(found, now)
        if len(current) < len(found):
            say(f"ignoring {len(found) - len(current)} snapshot(s) dated in the future "
                "(not written by this proxy's clock)")  # fmt: skip
        if not current:
            raise RestoreError(f"no metadata snapshots in {where} that are not dated in the future")
        for skipped, snapshot in enumerate(current):
            if is_signed(client, settings, snapshot, trust.key):
                if skipped:
                    say(f"skipping {skipped} newer snapshot(s) not signed by this backup key")
                say(f"{len(found)} snapshot(s) in {where}; restoring the newest signed one, "
                    f"{snapshot.name}")  # fmt: skip
                return snapshot, True
    except (BotoCoreError, ClientError) as exc:
        raise s3_failure(exc, settings) from None
    if not trust.unsigned:
        raise RestoreError(f"none of the {len(current)} snapshot(s) in {where} is signed by "
                           f"this backup key: refused; {_TRUST_HINT}")  # fmt: skip
    say(f"restoring the newest snapshot, {current[0].name}, though it {_UNSIGNED} "
        "(--trust-unsigned)")  # fmt: skip
    return current[0], False


def download_verified(
    client: Any,
    settings: S3Settings,
    snapshot: Snapshot,
    path: Path,
    *,
    trust: Trust,
    signed: bool,
    limits: Limits,
) -> None:
    """Stream the object to ``path`` within ``limits``, its sha256 checked against its
    metadata and, when it was chosen as ``signed``, its signature checked again on the very
    response the bytes come in (the object may have been replaced since it was chosen)."""
    from botocore.exceptions import BotoCoreError, ClientError

    digest = hashlib.sha256()
    try:
        answer = client.get_object(Bucket=settings.bucket, Key=snapshot.key)
        size, metadata = int(answer["ContentLength"]), answer.get("Metadata", {})
        if size > limits.object_bytes:
            answer["Body"].close()
            raise RestoreError(f"snapshot {snapshot.name} has {size} bytes, more than the "
                               f"{limits.object_bytes} a snapshot may have")  # fmt: skip
        verifies = signed_by(trust.key, snapshot.name, metadata, size)
        if (signed or not trust.unsigned) and not verifies:
            answer["Body"].close()
            raise RestoreError(f"snapshot {snapshot.name} {_UNSIGNED}: refused; {_TRUST_HINT}")
        received = 0
        with open(path, "wb") as out:
            while chunk := answer["Body"].read(1 << 20):
                received += len(chunk)
                if received > size:
                    raise RestoreError(f"snapshot {snapshot.name} is longer than it said")
                digest.update(chunk)
                out.write(chunk)
    except (BotoCoreError, ClientError) as exc:
        raise s3_failure(exc, settings) from None
    expected = str(metadata.get("sha256", ""))
    if not expected:
        raise RestoreError(f"snapshot {snapshot.name} carries no sha256, so it cannot be trusted")
    if digest.hexdigest() != expected:
        raise RestoreError(f"snapshot {snapshot.name} is corrupt: its sha256 is "
                           f"{digest.hexdigest()}, not {expected} as written")  # fmt: skip


def read_records(
    path: Path, name: str, limits: Limits = DEFAULT_LIMITS
) -> Iterator[dict[str, Any]]:
    """The snapshot's JSON lines, one at a time: a line longer than ``limits.line_bytes``
    or more than ``limits.unpacked_bytes`` in all is refused, never read whole."""
    unpacked = 0
    try:
        with gzip.open(path, "rb") as lines:
            while line := lines.readline(limits.line_bytes + 1):
                if len(line) > limits.line_bytes:
                    raise RestoreError(f"snapshot {name} has a line longer than "
                                       f"{limits.line_bytes} bytes: refused")  # fmt: skip
                unpacked += len(line)
                if unpacked > limits.unpacked_bytes:
                    raise RestoreError(f"snapshot {name} unpacks to more than "
                                       f"{limits.unpacked_bytes} bytes: refused")  # fmt: skip
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
