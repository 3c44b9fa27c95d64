"""Streaming a stored file (or a byte range of it) to disk, through at most one redirect."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from http.client import HTTPResponse
from pathlib import Path
from urllib.parse import urljoin

from client._http import ConnectionPool, api_error
from client._ranges import ByteRange, parse_content_range, range_header
from client.errors import ApiError, ProtocolError

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def download(
    pool: ConnectionPool,
    url: str,
    auth: Mapping[str, str],
    dest: Path,
    byte_range: ByteRange | None,
    piece: int,
) -> int:
    """GET ``url`` into ``dest`` and return the number of bytes written.

    A redirect (the proxy's signed URL on a storage node) is followed once, and without the
    ``auth`` headers: the signature in the URL is the credential there, and the user's token must
    not leak to another host. Bytes go to ``dest`` + ``.part`` first and are renamed into place
    only once their count matches what the server announced.
    """
    headers = {"Range": range_header(byte_range)} if byte_range is not None else {}
    origin, answer = pool.open("GET", url, headers={**auth, **headers}, retry_stale=True)
    try:
        if answer.status in _REDIRECTS:
            location = answer.getheader("Location")
            answer.read()
            if not location:
                raise ProtocolError(f"HTTP {answer.status} without a Location")
            url = urljoin(url, location)
            origin, answer = pool.open("GET", url, headers=headers, retry_stale=True)
            if answer.status in _REDIRECTS:
                raise ProtocolError(f"redirected twice (to {url!r}, then further)")
        if answer.status >= 400:
            raise api_error(answer.status, answer.reason, answer.read())
        expected = _expected_length(answer, byte_range)
        written = _write(answer, dest, piece, expected)
    finally:
        if not answer.isclosed():  # not read to the end: the connection is not reusable
            pool.discard(origin)
    return written


def _expected_length(answer: HTTPResponse, byte_range: ByteRange | None) -> int | None:
    """How many body bytes the answer promises, after checking it is the range asked for."""
    length = answer.getheader("Content-Length")
    announced = int(length) if length is not None and length.isdigit() else None
    if answer.status == 206:
        value = answer.getheader("Content-Range")
        if byte_range is None or value is None:
            raise ProtocolError("206 answer to a request without Range, or without Content-Range")
        first, last, _total = parse_content_range(value)
        wanted_first, wanted_last = byte_range
        if first != wanted_first or (wanted_last is not None and last > wanted_last):
            raise ProtocolError(f"asked for bytes {byte_range}, got {value!r}")
        if announced is not None and announced != last - first + 1:
            raise ProtocolError(f"Content-Length {announced} does not fit Content-Range {value!r}")
        return last - first + 1
    if answer.status != 200:
        raise ProtocolError(f"unexpected HTTP {answer.status} {answer.reason}")
    if byte_range is not None and byte_range != (0, None):
        raise ProtocolError(f"the server ignored Range {range_header(byte_range)!r}")
    return announced


def _write(answer: HTTPResponse, dest: Path, piece: int, expected: int | None) -> int:
    partial = dest.with_name(dest.name + ".part")
    buffer = memoryview(bytearray(piece))
    written = 0
    try:
        with open(partial, "wb") as out:
            while count := answer.readinto(buffer):
                out.write(buffer[:count])
                written += count
        if expected is not None and written != expected:
            raise ProtocolError(f"got {written} bytes of {expected}")
        os.replace(partial, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return written


class RangeReader:
    """Byte ranges of one stored file, each with its own ``GET``, on one connection pool.

    The first request goes to the proxy (with the user's token); when it redirects to a
    storage node, the node's signed URL is kept and later ranges go straight there (without
    the token) until the node refuses it (the signature expired, the replica moved), and then
    the proxy is asked again. Not thread-safe: one reader per thread.
    """

    def __init__(
        self, pool: ConnectionPool, url: str, auth: Mapping[str, str], piece: int = 1 << 20
    ) -> None:
        self._pool = pool
        self._url = url
        self._auth = dict(auth)
        self._node_url: str | None = None
        self._buffer = memoryview(bytearray(piece))

    def read(self, first: int, last: int, sink: Callable[[memoryview], None]) -> None:
        """Bytes ``first`` to ``last`` (inclusive), handed to ``sink`` piece by piece in order."""
        if self._node_url is not None:
            try:
                self._get(self._node_url, {}, first, last, sink, follow=False)
                return
            except ApiError as error:
                if error.status not in (401, 403, 404, 410):
                    raise
                self._node_url = None  # expired or gone: ask the proxy again
        self._get(self._url, self._auth, first, last, sink, follow=True)

    def _get(
        self,
        url: str,
        auth: Mapping[str, str],
        first: int,
        last: int,
        sink: Callable[[memoryview], None],
        *,
        follow: bool,
    ) -> None:
        headers = {"Range": range_header((first, last))}
        origin, answer = self._pool.open("GET", url, headers={**auth, **headers}, retry_stale=True)
        try:
            if answer.status in _REDIRECTS and follow:
                location = answer.getheader("Location")
                answer.read()
                if not location:
                    raise ProtocolError(f"HTTP {answer.status} without a Location")
                self._node_url = urljoin(url, location)
                self._get(self._node_url, {}, first, last, sink, follow=False)
                return
            if answer.status >= 400 or answer.status in _REDIRECTS:
                raise api_error(answer.status, answer.reason, answer.read())
            expected = _expected_length(answer, (first, last))
            if expected is not None and expected != last - first + 1:
                raise ProtocolError(f"asked for {last - first + 1} bytes, {expected} announced")
            got = 0
            while got <= last - first:
                count = answer.readinto(
                    self._buffer[: min(len(self._buffer), last - first + 1 - got)]
                )
                if not count:
                    raise ProtocolError(f"the answer ended after {got} of {last - first + 1} bytes")
                sink(self._buffer[:count])
                got += count
        finally:
            if not answer.isclosed():
                self._pool.discard(origin)
