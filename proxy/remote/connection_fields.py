"""What staff send and see of an S3 connection: input checked field by field into plain
strings (an error names the field, never echoes a key), and the JSON view, which shows only the
secret key's last 4 characters, and only if this proxy can open it."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from common.errors import BadRequest
from common.s3 import SecretBox, SecretError, secret_hint, valid_bucket, valid_prefix
from proxy.api.forms import check_fields
from proxy.api.views import isotime
from proxy.remote.connectionstore import Connection

FIELDS = {"name", "endpoint_url", "region", "bucket", "prefix", "access_key", "secret_key"}
CHANGEABLE = FIELDS - {"name"}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REGION = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEY = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces


def _text(value: object, field: str, pattern: re.Pattern[str], meaning: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadRequest(f"{field} must be {meaning}", field=field)
    return value


def check_name(value: object) -> str:
    return _text(value, "name", _NAME, "1 to 64 letters, digits, '_', '.' or '-'")


def check_endpoint(value: object) -> str:
    """An S3 endpoint: empty (AWS itself) or http(s)://HOST[:PORT], without credentials.

    >>> check_endpoint("http://127.0.0.1:9000/"), check_endpoint("")
    ('http://127.0.0.1:9000', '')
    """
    if value is None or value == "":
        return ""
    problem = not isinstance(value, str) or len(value) > 500
    if not problem:
        assert isinstance(value, str)
        try:
            parts = urlsplit(value)  # ValueError: a bad [IPv6] host, or an NFKC delimiter
            port_ok = parts.port != 0
        except ValueError:
            parts, port_ok = urlsplit(""), False
        problem = (
            parts.scheme not in {"http", "https"}
            or not parts.hostname
            or not port_ok
            or "@" in parts.netloc
            or parts.path not in {"", "/"}
            or bool(parts.query or parts.fragment)
        )
    if problem:
        raise BadRequest(
            "endpoint_url must be empty (AWS) or http(s)://HOST[:PORT] without a path",
            field="endpoint_url",
        )
    assert isinstance(value, str)
    return value.rstrip("/")


def check_fields_of(data: dict[str, Any], *, creating: bool) -> dict[str, str]:
    """The connection fields in ``data``, each checked; all required ones when creating."""
    check_fields(data, FIELDS if creating else CHANGEABLE)
    if creating:
        for required in ("name", "region", "bucket", "access_key", "secret_key"):
            if data.get(required) in (None, ""):
                raise BadRequest(f"{required} is required", field=required)
    checked: dict[str, str] = {}
    for key, value in data.items():
        if key == "name":
            checked[key] = check_name(value)
        elif key == "endpoint_url":
            checked[key] = check_endpoint(value)
        elif key == "region":
            checked[key] = _text(value, key, _REGION, "a region name like us-east-1")
        elif key == "bucket":
            if not isinstance(value, str) or not valid_bucket(value):
                raise BadRequest("bucket is not a valid S3 bucket name", field=key)
            checked[key] = value
        elif key == "prefix":
            if not isinstance(value, str) or not valid_prefix(value):
                raise BadRequest(
                    "prefix must be path segments of letters, digits, '.', '_' or '-' "
                    "separated by '/', without a leading or trailing '/'",
                    field=key,
                )
            checked[key] = value
        else:  # access_key, secret_key: never echoed back in an error
            checked[key] = _text(value, key, _KEY, "1 to 256 printable characters, no spaces")
    if creating:
        checked.setdefault("endpoint_url", "")
        checked.setdefault("prefix", "pyarchive")
    return checked


def last4(secret: str) -> str:
    hint = secret_hint(secret)
    return hint[1:]


def connection_json(row: Connection, box: SecretBox) -> dict[str, Any]:
    """What staff see of a connection: everything but the secret, whose last 4 characters
    are shown only if this proxy can open it."""
    try:
        secret = box.open(row.secret_encrypted)
    except SecretError:
        hint: str | None = None
    else:
        hint = secret_hint(secret)
    return {
        "name": row.name,
        "endpoint_url": row.endpoint_url,
        "region": row.region,
        "bucket": row.bucket,
        "prefix": row.prefix,
        "access_key": row.access_key,
        "secret_key_hint": hint,
        "secret_unreadable": hint is None,
        "active": row.active,
        "validated_at": isotime(row.validated_at),
        "validation_ok": row.validation_ok,
        "validation_detail": row.validation_detail,
        "created_at": isotime(row.created_at),
        "updated_at": isotime(row.updated_at),
    }
