"""How the node takes in a request: internal ones are checked at their headers, and a body is
capped, hashed as it arrives and spooled to disk past a small size.

twisted.web reads a whole request body before a route runs. For the signed internal API that
would let anyone make the node take in (up to the cap) a body the proxy never signed, so
``NodeRequest`` asks the site's ``gate`` as soon as the headers are in: a request that is
unsigned, malformed, for another node, stale, replayed, or announces a body over the cap is
answered there and then (JSON, ``Connection: close``) and its body is never read. The MAC over
the body is checked by the route, against the sha256 taken while the body streamed in.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.http_headers import Headers

from common.errors import ApiError

log = Logger()

SMALL_BODY_LIMIT = 64 * 1024
# A whole mirror want-list lists every blob a node mirrors or restores, with restore parts
# (a delta after the node's cursor is at most 5,000 entries; proxy.remote.mirrorwants).
MIRROR_SYNC_PATH = b"/internal/mirror/sync"
MIRROR_SYNC_LIMIT = 32 * 1024 * 1024
# A batch confirm names up to MAX_BATCH replicas (node.api.inputs), each in about 250 bytes.
CONFIRM_BATCH_PATH = b"/internal/replicas/confirm-batch"
CONFIRM_BATCH_LIMIT = 512 * 1024
IN_MEMORY = 64 * 1024  # a body larger than this is spooled to a temporary file

# What the site asks of a request once its headers are in: (method, path, headers,
# announced length) -> the error to answer it with, or None to read its body.
Gate = Callable[[bytes, bytes, Headers, int | None], ApiError | None]


def body_limit(path: bytes) -> int:
    """The largest body a route takes, by path (without the query).

    >>> body_limit(b"/internal/mirror/sync") > body_limit(b"/internal/replicas") == 65536
    True
    >>> body_limit(b"/internal/replicas/confirm-batch")
    524288
    """
    if path == MIRROR_SYNC_PATH:
        return MIRROR_SYNC_LIMIT
    return CONFIRM_BATCH_LIMIT if path == CONFIRM_BATCH_PATH else SMALL_BODY_LIMIT


class CappedBody:
    """A request body kept up to ``limit`` bytes (in memory up to ``IN_MEMORY``, then in a
    temporary file); beyond the limit it is only counted. Its sha256 is taken as it arrives.

    Every body the node takes is JSON; anything larger is answered 413 without being stored.
    """

    def __init__(self, limit: int = SMALL_BODY_LIMIT) -> None:
        self.limit = limit
        self.overflowed = False
        self.received = 0
        self._file = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY)
        self._sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.received += len(data)
        if self.overflowed or self.received > self.limit:
            self.overflowed = True
            return len(data)
        self._sha256.update(data)
        return self._file.write(data)

    def sha256(self) -> str:
        """The hex sha256 of what was kept (the whole body unless ``overflowed``)."""
        return self._sha256.hexdigest()

    def spooled(self) -> bool:
        """Whether the body went to a file rather than memory."""
        return bool(getattr(self._file, "_rolled", False))

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class NodeRequest(server.Request):
    _refused = False

    def gotLength(self, length: int | None) -> None:
        # The request line is parsed before the headers; Request.path is set only later.
        target = getattr(self.channel, "_path", b"")
        path = target.split(b"?", 1)[0]
        self.content = CappedBody(body_limit(path))
        gate: Gate | None = getattr(getattr(self.channel, "site", None), "gate", None)
        if gate is None:
            return
        method = getattr(self.channel, "_command", b"")
        refusal = gate(method, path, self.requestHeaders, length)
        if refusal is not None:
            self._refuse(target, refusal)

    def _refuse(self, target: bytes, error: ApiError) -> None:
        """Answer ``error`` now and close the connection; the body is never read."""
        self._refused = True
        self.content = CappedBody(0)  # whatever already arrived is only counted
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        log.info(
            "refused {target} before its body: {status} {detail}",
            target=target.decode("latin-1")[:200], status=error.status, detail=error.detail,
        )  # fmt: skip
        assert self.channel is not None and self.channel.transport is not None
        self.channel.transport.write(refusal_bytes(error))
        self.channel.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)


def refusal_bytes(error: ApiError) -> bytes:
    """A whole HTTP/1.1 response for ``error``, closing the connection.

    >>> from common.errors import Forbidden
    >>> refusal_bytes(Forbidden("Request is not signed")).split(b"\\r\\n")[0]
    b'HTTP/1.1 403 Forbidden'
    """
    body = json.dumps(error.body()).encode("utf-8")
    phrase = http.RESPONSES.get(error.status, b"Error")
    head = [
        b"HTTP/1.1 %d %s" % (error.status, phrase),
        b"Content-Type: application/json",
        b"Cache-Control: no-store",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class NodeSite(server.Site):
    requestFactory = NodeRequest

    def __init__(self, resource: Any, *, gate: Gate | None = None, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)  # logFormatter, ...
        self.gate = gate
