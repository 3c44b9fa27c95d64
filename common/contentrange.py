"""Parse the ``Content-Range`` header of an upload chunk into a value.

The seed API sends ``Content-Range: bytes START-END/TOTAL`` with every chunk; ``TOTAL`` may be
``*`` when the client does not know the size yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.errors import BadRequest

# Twenty digits is past any real file (10**20 bytes is 100 EB) and keeps int() cheap.
# [0-9], not \d: \d also matches other scripts' digits ("١٠٠"), which int() reads as numbers.
_PATTERN = re.compile(r"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20}|\*)")
MAX_SIZE = 2**63 - 1  # what a signed 64-bit database column holds


@dataclass(frozen=True)
class ContentRange:
    """Bytes ``start`` to ``end`` (inclusive) of a file of ``total`` bytes (None: unknown)."""

    start: int
    end: int
    total: int | None

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def looks_one_based(self) -> bool:
        """True for the seed's documented first chunk ``bytes 1-N/N`` (1-based, inclusive)."""
        return self.start == 1 and self.end == self.total

    def shifted_to_zero(self) -> ContentRange:
        """The same chunk counted from 0: ``bytes 1-N/N`` becomes ``bytes 0-(N-1)/N``."""
        return ContentRange(self.start - 1, self.end - 1, self.total)


def parse_content_range(header: str | None) -> ContentRange:
    """Parse a chunk's Content-Range header, raising BadRequest for anything malformed.

    >>> parse_content_range("bytes 0-99/1000")
    ContentRange(start=0, end=99, total=1000)
    >>> parse_content_range("bytes 100-199/*")
    ContentRange(start=100, end=199, total=None)
    >>> parse_content_range("bytes 5-4/10")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: Content-Range end is before its start
    >>> parse_content_range("bytes 1-10/10").looks_one_based
    True
    >>> parse_content_range("bytes 0-10/10")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: Content-Range goes beyond the total size
    """
    if header is None:
        raise BadRequest("Content-Range header is required")
    match = _PATTERN.fullmatch(header.strip())
    if match is None:
        raise BadRequest("Malformed Content-Range header; expected 'bytes START-END/TOTAL'")
    start, end = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if max(start, end, total or 0) > MAX_SIZE:
        raise BadRequest("Content-Range numbers are too large")
    if end < start:
        raise BadRequest("Content-Range end is before its start")
    if total is not None and end >= total and not (start == 1 and end == total):
        # ``bytes 1-N/N`` is let through: the seed's documentation counts from 1, and the
        # upload engine accepts that form for the first chunk only.
        raise BadRequest("Content-Range goes beyond the total size")
    return ContentRange(start, end, total)
