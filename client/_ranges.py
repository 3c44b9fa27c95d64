"""Pure helpers for the byte ranges the upload and download protocols carry in headers."""

from __future__ import annotations

import re

from client.errors import ProtocolError

ByteRange = tuple[int, int | None]
"""``(first, last)`` byte positions, both inclusive as in HTTP; ``last`` None means to the end."""

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def content_range(start: int, stop: int, total: int) -> str:
    """The ``Content-Range`` value for the chunk ``[start, stop)`` of a ``total``-byte file.

    >>> content_range(0, 8, 20)
    'bytes 0-7/20'
    >>> content_range(16, 20, 20)
    'bytes 16-19/20'
    """
    if not 0 <= start < stop <= total:
        raise ValueError(f"bad chunk [{start}, {stop}) of {total} bytes")
    return f"bytes {start}-{stop - 1}/{total}"


def range_header(byte_range: ByteRange) -> str:
    """The ``Range`` request header asking for ``byte_range``.

    >>> range_header((100, 199))
    'bytes=100-199'
    >>> range_header((512, None))
    'bytes=512-'
    """
    first, last = byte_range
    if first < 0 or (last is not None and last < first):
        raise ValueError(f"bad byte range {byte_range!r}")
    return f"bytes={first}-{'' if last is None else last}"


def parse_content_range(value: str) -> tuple[int, int, int | None]:
    """``(first, last, total)`` of a 206 answer's ``Content-Range``; total None when ``*``.

    >>> parse_content_range("bytes 100-199/1000")
    (100, 199, 1000)
    >>> parse_content_range("bytes 0-9/*")
    (0, 9, None)
    """
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise ProtocolError(f"unreadable Content-Range {value!r}")
    first, last = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if last < first or (total is not None and last >= total):
        raise ProtocolError(f"impossible Content-Range {value!r}")
    return first, last, total
