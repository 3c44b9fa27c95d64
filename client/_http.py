"""Keep-alive connections, one per origin, and whole-response requests over them.

Only the standard library's ``http.client``: request bodies may be any buffer (a memoryview
slice of an mmap goes to ``socket.sendall`` as is, with no copy in Python), and every answer
is either read in full or its connection is dropped, so a connection is always reusable.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from client.errors import ApiError, ProtocolError

Json = dict[str, Any]

# What a keep-alive connection the server closed while it sat idle looks like.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int


def split_url(url: str) -> tuple[Origin, str]:
    """The origin of an absolute http(s) URL, and the request target to send there.

    >>> split_url("http://127.0.0.1:8080/storage/files/?page=2")
    (Origin(scheme='http', host='127.0.0.1', port=8080), '/storage/files/?page=2')
    >>> split_url("https://archive.example")
    (Origin(scheme='https', host='archive.example', port=443), '/')
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, parts.hostname, port), target


@dataclass(frozen=True)
class Response:
    """A response read in full."""

    status: int
    reason: str
    headers: Message
    body: bytes

    def json(self) -> Json:
        """The body as a JSON object (``{}`` for an empty body)."""
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise ProtocolError(
                f"HTTP {self.status}: body is not JSON: {self.body[:200]!r}"
            ) from exc
        if not isinstance(value, dict):
            raise ProtocolError(f"HTTP {self.status}: expected a JSON object, got {value!r:.200}")
        return value

    def raise_for_status(self) -> Response:
        """Raise :class:`ApiError` for a 4xx/5xx answer; return ``self`` otherwise."""
        if self.status >= 400:
            raise api_error(self.status, self.reason, self.body)
        return self


def api_error(status: int, reason: str, body: bytes) -> ApiError:
    """The :class:`ApiError` for an error answer, whether or not its body is the API's JSON."""
    try:
        decoded = json.loads(body) if body else {}
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        detail = decoded.get("detail")
        return ApiError(status, detail if isinstance(detail, str) else reason, decoded)
    text = body[:200].decode("utf-8", "replace").strip()
    return ApiError(status, text or reason)


class ConnectionPool:
    """One keep-alive connection per origin; a connection that failed is dropped, not reused."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._connections: dict[Origin, http.client.HTTPConnection] = {}

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | memoryview | None = None,
        retry_stale: bool = False,
    ) -> Response:
        """Send one request and read its whole answer.

        With ``retry_stale``, a request that fails because a reused connection had been closed
        by the server is sent once more on a new connection; only ask for it when sending the
        request twice does no harm.
        """
        origin, answer = self.open(method, url, headers=headers, body=body, retry_stale=retry_stale)
        try:
            data = answer.read()
        except BaseException:
            self.discard(origin)
            raise
        return Response(answer.status, answer.reason, answer.headers, data)

    def open(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | memoryview | None = None,
        retry_stale: bool = False,
    ) -> tuple[Origin, http.client.HTTPResponse]:
        """Send a request and return its answer unread, for streaming.

        The caller reads the answer to its end, or calls :meth:`discard` with the origin.
        ``retry_stale`` is as for :meth:`request`.
        """
        origin, target = split_url(url)
        while True:
            connection = self._connection(origin)
            reused = connection.sock is not None
            try:
                connection.request(method, target, body=body, headers=dict(headers))
                return origin, connection.getresponse()
            except BaseException as exc:
                self.discard(origin)
                if retry_stale and reused and isinstance(exc, _STALE):
                    retry_stale = False
                    continue
                raise

    def discard(self, origin: Origin) -> None:
        connection = self._connections.pop(origin, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        for origin in list(self._connections):
            self.discard(origin)

    def _connection(self, origin: Origin) -> http.client.HTTPConnection:
        connection = self._connections.get(origin)
        if connection is None:
            factory = (
                http.client.HTTPSConnection
                if origin.scheme == "https"
                else http.client.HTTPConnection
            )
            connection = factory(origin.host, origin.port, timeout=self._timeout)
            self._connections[origin] = connection
        return connection
