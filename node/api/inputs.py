"""Parsing what the proxy sends the node into values."""

from __future__ import annotations

import json
import re
from typing import Any

from common.errors import BadRequest
from common.hex32 import is_hex32
from node.replicas.store import Expected

_SHA256 = re.compile(r"[0-9a-f]{64}")


def expected_content(body: bytes, *, with_md5: bool) -> Expected:
    """``{size, sha256}`` (and ``md5`` when ``with_md5``) from a JSON body, checked.

    >>> expected_content(b'{"size": 3, "sha256": "' + b"a" * 64 + b'"}', with_md5=False).size
    3
    """
    fields = {"size", "sha256", "md5"} if with_md5 else {"size", "sha256"}
    data = json_object(body)
    unknown, missing = set(data) - fields, fields - set(data)
    if unknown or missing:
        wrong = ", ".join(sorted(unknown)) if unknown else ", ".join(sorted(missing))
        raise BadRequest(f"{'Unknown' if unknown else 'Missing'} fields: {wrong}")
    size = data["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest("size must be a whole number of bytes", field="size")
    sha256, md5 = data["sha256"], data.get("md5")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise BadRequest("sha256 must be 64 lowercase hex digits", field="sha256")
    if with_md5 and not is_hex32(md5):
        raise BadRequest("md5 must be 32 lowercase hex digits", field="md5")
    return Expected(size=size, sha256=sha256, md5=md5)


def json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:  # UnicodeDecodeError is one
        raise BadRequest("The body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object")
    return data
