"""Parsing what the proxy sends the node into values, and the bounded request body."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from twisted.web import server

from common.errors import BadRequest
from common.hex32 import is_hex32
from node.replicas.store import Expected

SMALL_BODY_LIMIT = 64 * 1024
# The mirror's want-list lists every blob a node mirrors or restores, with restore parts.
MIRROR_SYNC_PATH = b"/internal/mirror/sync"
MIRROR_SYNC_LIMIT = 32 * 1024 * 1024
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


class CappedBody(io.BytesIO):
    """A request body kept in memory up to ``limit`` bytes; beyond that it is only counted.

    Every body the node takes is small JSON; anything larger is answered 413 once it has
    streamed past, without ever being stored.
    """

    def __init__(self, limit: int = SMALL_BODY_LIMIT) -> None:
        super().__init__()
        self.limit = limit
        self.overflowed = False

    def write(self, data: Any) -> int:
        if self.overflowed or self.tell() + len(data) > self.limit:
            self.overflowed = True
            return len(data)
        return super().write(data)


class NodeRequest(server.Request):
    def gotLength(self, length: int | None) -> None:
        # The request line is parsed before the headers; Request.path is set only later.
        path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
        self.content = CappedBody(
            MIRROR_SYNC_LIMIT if path == MIRROR_SYNC_PATH else SMALL_BODY_LIMIT
        )


class NodeSite(server.Site):
    requestFactory = NodeRequest
