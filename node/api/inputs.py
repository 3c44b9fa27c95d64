"""Parsing what the proxy sends the node into values."""

from __future__ import annotations

import json
import re
from typing import Any

from common.errors import BadRequest
from common.hex32 import is_hex32
from common.signing import valid_replica_key
from node.replicas.store import Expected, key_sha256

_SHA256 = re.compile(r"[0-9a-f]{64}")
# The most replicas one batch confirm may name (the proxy sends at most 500); with its
# limit on the body's size (node.api.receiving) it bounds the work of one request.
MAX_BATCH = 1000


def expected_content(body: bytes, *, with_md5: bool) -> Expected:
    """``{size, sha256}`` (and ``md5`` when ``with_md5``) from a JSON body, checked.

    >>> expected_content(b'{"size": 3, "sha256": "' + b"a" * 64 + b'"}', with_md5=False).size
    3
    """
    return _expected(json_object(body), with_md5=with_md5)


def expected_batch(body: bytes) -> list[tuple[str, Expected]]:
    """``{"replicas": [{key, size, md5, sha256}, ...]}`` into (key, expected) pairs, checked
    as a whole: one malformed entry, a key named twice or a sha256 that is not its key's
    refuses the request (the proxy never sends one).

    >>> key = "7-" + "a" * 64
    >>> entry = {"key": key, "size": 3, "md5": "b" * 32, "sha256": "a" * 64}
    >>> [(k, e.size) for k, e in expected_batch(json.dumps({"replicas": [entry]}).encode())]
    [('7-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 3)]
    """
    data = json_object(body)
    if set(data) != {"replicas"}:
        raise BadRequest("The body must have one field, replicas")
    entries = data["replicas"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_BATCH:
        raise BadRequest(f"replicas must be a list of 1 to {MAX_BATCH} objects", field="replicas")
    wanted: list[tuple[str, Expected]] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BadRequest(f"replicas[{index}] must be an object", field="replicas")
        fields = dict(entry)
        key = fields.pop("key", None)
        if not isinstance(key, str) or not valid_replica_key(key):
            raise BadRequest(f"replicas[{index}].key is not a replica key", field="replicas")
        if key in seen:
            raise BadRequest(f"replica {key} is named twice", field="replicas")
        expected = _expected(fields, with_md5=True)
        if expected.sha256 != key_sha256(key):
            raise BadRequest(f"sha256 {expected.sha256} is not the one in the key {key}")
        seen.add(key)
        wanted.append((key, expected))
    return wanted


def _expected(data: dict[str, Any], *, with_md5: bool) -> Expected:
    fields = {"size", "sha256", "md5"} if with_md5 else {"size", "sha256"}
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
