"""Access-log lines without the credentials some request targets carry.

A node's download URL is ``/download/<token>``: the token is a bearer credential, good for
its whole lifetime to anyone who reads it in a log. A query argument named like a secret
(``?token=``, ``?password=``...) is one too, even where the service refuses it. The proxy's
and the nodes' ``Site`` write their access lines with ``redacting_log_formatter``, which
puts a short hash in place of each such value: log lines of the same token still match each
other, and nothing in them opens a download.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from twisted.web.http import combinedLogFormatter

# Query arguments whose value is a credential, wherever they turn up.
SECRET_ARGUMENTS = frozenset(
    {
        b"token",
        b"access_token",
        b"password",
        b"password_again",
        b"current_password",
        b"new_password",
        b"new_password_again",
        b"secret",
        b"secret_key",
        b"signature",
        b"csrf_token",
    }
)
# Path segments that are credentials: the node's download token.
_SECRET_PATH = re.compile(rb"^(/download/)([^/?#]+)")


def fingerprint(value: bytes) -> bytes:
    """What a log line shows in place of a secret: a short hash that cannot be used.

    >>> fingerprint(b"eyJhbGciOi.x.y")
    b'[redacted:966bd8df]'
    """
    return b"[redacted:" + hashlib.sha256(value).hexdigest()[:8].encode() + b"]"


def redact_target(target: bytes) -> bytes:
    """``target`` (a request's path and query) with every credential in it replaced.

    >>> redact_target(b"/download/abc.def.ghi")
    b'/download/[redacted:...]'
    >>> redact_target(b"/api-token-auth/?username=ann&password=hunter2")
    b'/api-token-auth/?username=ann&password=[redacted:...]'
    >>> redact_target(b"/health?Token=x")
    b'/health?Token=[redacted:...]'
    >>> redact_target(b"/storage/files/?page=2")
    b'/storage/files/?page=2'
    """
    path, question, query = target.partition(b"?")
    path = _SECRET_PATH.sub(lambda match: match[1] + fingerprint(match[2]), path)
    if not question:
        return path
    arguments = []
    for argument in query.split(b"&"):
        name, equals, value = argument.partition(b"=")
        if equals and name.lower() in SECRET_ARGUMENTS:
            argument = name + b"=" + fingerprint(value)
        arguments.append(argument)
    return path + b"?" + b"&".join(arguments)


class _Redacted:
    """A request as the log formatter sees it: the same, but for its target and referrer."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = redact_target(request.uri)

    def getHeader(self, name: bytes) -> bytes | None:
        value: bytes | None = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return redact_target(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def redacting_log_formatter(timestamp: str, request: Any) -> str:
    """Twisted's combined log line, with the credentials in the target and referrer replaced
    (an ``IAccessLogFormatter`` for ``Site(logFormatter=...)``)."""
    line: str = combinedLogFormatter(timestamp, _Redacted(request))
    return line
