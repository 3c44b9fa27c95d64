"""Every restored row checked with the rules the API applies to what it is sent.

A snapshot may have been planted in the bucket (every node holds its credentials), and even a
signed one is read as if it came from the network: a sha256 that is not 64 hex digits would
become a path on the proxy's disk (``blobs/<ab>/<sha256>.<id>``) and a replica key on the
nodes, a username or a path the API would refuse would reach pages and the command line,
and a queued S3 deletion could name any object in the bucket. **One bad row refuses the
whole snapshot** (the transaction rolls back, the database stays empty): dropping the row
would leave the rows that point at it dangling, and a snapshot this proxy wrote never holds
one, so the operator must hear that this one is not what it claims to be.

Staff rights are the other thing a planted snapshot would be after: ``users_row`` clears
``is_staff`` unless the operator restores staff explicitly (``--restore-staff``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from typing import Any

from common.errors import BadRequest
from common.hex32 import is_hex32
from common.s3 import valid_bucket, valid_prefix
from proxy.catalog.accounts import validate_email, validate_username
from proxy.ops.jobrules import parse_interval
from proxy.remote.connection_fields import check_endpoint, check_name
from proxy.remote.restore_snapshot import RestoreError
from proxy.remote.states import LOCAL, LOST, MIRRORED, MIRRORING, REMOTE, RESTORING
from proxy.uploads.rules import validate_filename, validate_path

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MD5 = re.compile(r"[0-9a-f]{32}")
_JOB = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,127}")
_SETTING = re.compile(r"[a-z_]{1,64}")
_STATES = {LOCAL, MIRRORING, MIRRORED, REMOTE, RESTORING, LOST}
_PART_STATES = {"pending", "uploading", "uploaded"}
_MAX_SIZE = 2**63 - 1
_MAX_TEXT = 4096  # a node's or a check's detail
_MAX_AVATAR = 1 << 20  # base64 of a 256 px PNG the server made


class BadRow(ValueError):
    """One field of one row is not what the API would have stored."""


def sha256_hex(value: object) -> str:
    """A sha256 as the proxy stores it: 64 lowercase hex digits, nothing that could be a path.

    >>> sha256_hex("ab" * 32) == "ab" * 32
    True
    >>> sha256_hex("/etc/passwd")
    Traceback (most recent call last):
    ...
    proxy.remote.restore_rows.BadRow: is not 64 lowercase hex digits
    """
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise BadRow("is not 64 lowercase hex digits")
    return value


def _int(value: object, low: int = 0, high: int = _MAX_SIZE) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRow(f"is not a whole number from {low} to {high}")
    return value


def _flag(value: object) -> int:
    return _int(value, 0, 1)


def _time(value: object, *, optional: bool = False) -> object:
    if value is None and optional:
        return value
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 <= float(value) < 2**40:  # type: ignore[arg-type]
        raise BadRow("is not a time in seconds")
    return value


def _text(value: object, *, optional: bool = False, limit: int = _MAX_TEXT) -> object:
    if value is None and optional:
        return value
    if not isinstance(value, str) or len(value) > limit:
        raise BadRow(f"is not a text of at most {limit} characters")
    return value


def _one_of(choices: set[str]) -> Callable[[object], object]:
    def check(value: object) -> object:
        if value not in choices:
            raise BadRow(f"is not one of {', '.join(sorted(choices))}")
        return value

    return check


def _matching(pattern: re.Pattern[str], meaning: str) -> Callable[[object], object]:
    def check(value: object) -> object:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise BadRow(f"is not {meaning}")
        return value

    return check


def _api(check: Callable[[Any], object]) -> Callable[[object], object]:
    """One of the API's own validators, its BadRequest said as a bad row."""

    def run(value: object) -> object:
        try:
            check(value)
        except BadRequest as exc:
            raise BadRow(f"is refused by the API's rule: {exc.detail}") from None
        return value

    return run


def _email(value: object) -> object:
    if not isinstance(value, str) or validate_email(value) != value:
        raise BadRow("is not an email address as the API stores it")
    return value


def _avatar(value: object) -> object:
    if value is None:
        return value
    if not isinstance(value, str) or len(value) > _MAX_AVATAR:
        raise BadRow("is not a profile picture")
    try:
        png = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRow("is not base64") from None
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise BadRow("is not a PNG the server made")
    return value


def _quota(value: object) -> object:
    return None if value is None else _int(value)


def _interval(value: object) -> object:
    if value is not None and not (isinstance(value, int | float) and value == 0):
        _api(parse_interval)(value)  # 0: not set by staff
    return value


def _optional_sha256(value: object) -> object:
    return None if value is None else sha256_hex(value)


def _dedup_key(value: object) -> object:
    """``<owner id>:<sha256>``, or a bare sha256 (a blob from before per-owner dedup)."""
    owner, _, sha256 = str(value).rpartition(":")
    if not isinstance(value, str) or (owner and not owner.isdigit()):
        raise BadRow("is not <owner id>:<sha256> or a sha256")
    sha256_hex(sha256)
    return value


def _file_id(value: object) -> object:
    if not is_hex32(value):
        raise BadRow("is not a file id (32 lowercase hex digits)")
    return value


def _bucket(value: object) -> object:
    if not isinstance(value, str) or not valid_bucket(value):
        raise BadRow("is not a bucket name")
    return value


def _prefix(value: object) -> object:
    if not isinstance(value, str) or not valid_prefix(value):
        raise BadRow("is not a key prefix")
    return value


_ID = _int
_POSITIVE = lambda value: _int(value, 1)  # noqa: E731
_OPTIONAL_TIME = lambda value: _time(value, optional=True)  # noqa: E731
_OPTIONAL_TEXT = lambda value: _text(value, optional=True)  # noqa: E731
_NODE = lambda value: _text(value, optional=True, limit=64)  # noqa: E731

# Per restored table, a check for each column a snapshot may carry (every column of the
# schema); a column no check names is refused, so a new column must be classified here.
CHECKS: dict[str, dict[str, Callable[[object], object]]] = {
    "users": {
        "id": _POSITIVE, "username": _api(validate_username), "email": _email,
        "password_hash": lambda v: _text(v, limit=512), "is_staff": _flag, "created_at": _time,
        "token_version": _ID, "last_login": _OPTIONAL_TIME, "avatar": _avatar,
        "is_active": _flag, "quota": _quota, "must_change_password": _flag,
        # Recounted from the restored files after loading (restore_target.load_rows).
        "file_count": _ID,
    },
    "blobs": {
        "id": _POSITIVE, "sha256": sha256_hex, "dedup_key": _dedup_key,
        "md5": _matching(_MD5, "32 lowercase hex digits"),
        "size": _ID, "created_at": _time, "local": _flag, "remote_state": _one_of(_STATES),
        "remote_verified": _flag, "mirror_node": _NODE, "mirror_detail": _text,
        "restore_node": _NODE, "restore_requested_at": _OPTIONAL_TIME, "parts_restored": _ID,
        "restore_detail": _text,
    },
    "files": {
        "id": _file_id, "owner_id": _POSITIVE, "path": _api(validate_path),
        "filename": _api(validate_filename), "current_version": _POSITIVE,
        "created_at": _time, "updated_at": _time,
    },
    "versions": {
        "id": _POSITIVE, "file_id": _file_id, "number": _POSITIVE, "blob_id": _POSITIVE,
        "filename": _api(validate_filename), "created_at": _time,
        "content_type": lambda v: _text(v, limit=255),
    },
    "blob_parts": {
        "blob_id": _POSITIVE, "idx": lambda v: _int(v, 1, 10_000), "start": _ID, "size": _ID,
        "sha256": _optional_sha256, "remote_state": _one_of(_PART_STATES),
    },
    "s3_connections": {
        "name": _api(check_name), "endpoint_url": _api(check_endpoint),
        "region": lambda v: _text(v, limit=64), "bucket": _bucket, "prefix": _prefix,
        "access_key": lambda v: _text(v, limit=256), "secret_encrypted": _text,
        "secret_last4": lambda v: _text(v, limit=4), "active": _flag,
        "validated_at": _OPTIONAL_TIME, "validation_ok": lambda v: None if v is None else _flag(v),
        "validation_detail": _text, "created_at": _time, "updated_at": _time,
    },
    "s3_deletions": {
        "object_key": lambda v: _text(v, limit=1100), "sha256": sha256_hex, "attempts": _ID,
        "next_attempt_at": _time, "detail": _text, "created_at": _time,
    },
    "jobs": {
        "name": _matching(_JOB, "a job name"), "interval_seconds": _interval,
        "last_run": _OPTIONAL_TIME, "last_duration": _OPTIONAL_TIME,
        "last_ok": lambda v: None if v is None else _flag(v), "last_result": _text,
        "next_run": _OPTIONAL_TIME,
    },
    "settings": {"name": _matching(_SETTING, "a setting's name"), "value": _text},
}  # fmt: skip


def check_row(table: str, row: dict[str, Any]) -> None:
    """Refuse (``RestoreError``, naming the table, the row and the field) a row the API would
    never have stored."""
    checks = CHECKS[table]
    for column, value in row.items():
        check = checks.get(column)
        try:
            if check is None:
                raise BadRow("is a column this PyArchive does not know")
            check(value)
            if table == "s3_deletions" and column == "object_key":
                _deletion_key(value, row.get("sha256"))
            if (
                table == "blobs"
                and column == "dedup_key"
                and not str(value).endswith(str(row.get("sha256")))
            ):
                raise BadRow("is not the key of the blob's own sha256")
        except BadRow as exc:
            raise RestoreError(
                f"the snapshot is refused (nothing was changed): {table} row {_ident(row)}: "
                f"{column} {exc}"
            ) from None


def _deletion_key(key: object, sha256: object) -> None:
    """A queued S3 deletion may only name the object of its own content, ``<prefix>/<sha256>``
    (not a snapshot, nor any other object)."""
    prefix, _, name = str(key).rpartition("/")
    if name != sha256 or not valid_prefix(prefix):
        raise BadRow("is not the object <prefix>/<sha256> of its own content")


def _ident(row: dict[str, Any]) -> str:
    for column in ("id", "name", "object_key", "blob_id"):
        if column in row:
            shown = repr(row[column])
            return shown if len(shown) <= 80 else shown[:77] + "..."
    return "?"


def clear_staff(row: dict[str, Any]) -> bool:
    """Make a restored account an ordinary one; whether it was staff."""
    was = bool(row.get("is_staff"))
    row["is_staff"] = 0
    return was
