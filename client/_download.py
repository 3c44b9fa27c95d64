"""Streaming a stored file (or a byte range of it) to disk, through at most one redirect."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from http.client import HTTPResponse
from pathlib import Path
from urllib.parse import urljoin

from client._http import ConnectionPool, api_error
from client._ranges import ByteRange, parse_content_range, range_header
from client.errors import ProtocolError

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
