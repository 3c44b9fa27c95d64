"""Range requests, validators and download headers, as pure functions (RFC 9110, 6266, 5987).

Everything here works on ``str`` header values and plain numbers and knows nothing about
Twisted, so the proxy and the storage nodes answer range and conditional requests the same
way, and the rules can be tested without a reactor. ``common.fileserve`` applies them to a
request.

Header values are assumed to have been decoded from the wire as ISO-8859-1, which maps every
byte to one character, so nothing here can fail on odd bytes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import quote

from common.errors import RangeNotSatisfiable

MAX_RANGES = 32
"""More range-specs than this in one ``Range`` header and the header is ignored (200)."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a representation, both ends included.

    >>> first = ByteRange(0, 499)
    >>> first.length
    500
    >>> first.content_range(1234)
    'bytes 0-499/1234'
    >>> ByteRange(5, 4)
    Traceback (most recent call last):
    ...
    ValueError: not a byte range: 5-4
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"not a byte range: {self.start}-{self.end}")

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value for this range of a ``size``-byte representation."""
        return f"bytes {self.start}-{self.end}/{size}"


_RANGE_SPEC = re.compile(r"(?P<first>[0-9]+)-(?P<last>[0-9]*)|-(?P<suffix>[0-9]+)")


def parse_range(header: str | None, size: int) -> list[ByteRange] | None:
    """The ranges a ``Range`` header selects from a ``size``-byte representation.

    ``None`` means "ignore the header and send the whole representation with 200", which
    RFC 9110 §14.2 allows a server to do at any time. It is the answer when the header is
    absent, syntactically invalid, or in a unit other than bytes; when the representation is
    empty (there is no byte to select); and, against abuse, when there are more than
    ``MAX_RANGES`` range-specs or the selected ranges add up to more bytes than the
    representation (overlapping ranges that would make us send the file many times over).
    A 200 is always a correct answer and costs at most one copy of the file, whereas a 416
    would tell a clumsy but honest client that the resource cannot be read at all.

    Ranges come back in the order asked for, ends clamped to ``size - 1``; unsatisfiable
    ones among satisfiable ones are dropped. When none is satisfiable, raises
    ``RangeNotSatisfiable`` with ``extra["size"]`` set, for ``Content-Range: bytes */SIZE``.

    >>> parse_range("bytes=0-499", 1234)
    [ByteRange(start=0, end=499)]
    >>> parse_range("bytes=500-", 1234)
    [ByteRange(start=500, end=1233)]
    >>> parse_range("bytes=-500", 1234)
    [ByteRange(start=734, end=1233)]
    >>> parse_range("bytes=0-0, -1", 1234)
    [ByteRange(start=0, end=0), ByteRange(start=1233, end=1233)]
    >>> parse_range("bytes=1000-99999999999999999999999999999999", 1234)
    [ByteRange(start=1000, end=1233)]
    >>> parse_range("bytes=5-4", 1234) is None, parse_range("items=0-1", 1234) is None
    (True, True)
    >>> parse_range("bytes=2000-", 1234)
    Traceback (most recent call last):
    ...
    common.errors.RangeNotSatisfiable: Requested range not satisfiable
    """
    if header is None:
        return None
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    # A list may hold empty elements, which recipients ignore (RFC 9110 §5.6.1.2).
    specs = [spec.strip() for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if not specs or len(specs) > MAX_RANGES:
        return None
    try:
        selected = [_select(spec, size) for spec in specs]
    except ValueError:
        return None
    if size == 0:
        return None
    ranges = [byte_range for byte_range in selected if byte_range is not None]
    if not ranges:
        raise RangeNotSatisfiable("Requested range not satisfiable", size=size)
    if sum(byte_range.length for byte_range in ranges) > size:
        return None
    return ranges


def _select(spec: str, size: int) -> ByteRange | None:
    """The range one range-spec selects, ``None`` if unsatisfiable; ValueError if invalid."""
    match = _RANGE_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"invalid range-spec {spec!r}")
    first, last, suffix = match.group("first", "last", "suffix")
    if suffix is not None:
        length = _at_most(suffix, size)
        return ByteRange(size - length, size - 1) if length > 0 else None
    if last and _number_key(last) < _number_key(first):
        raise ValueError(f"range-spec {spec!r} ends before it starts")
    start = _at_most(first, size)
    if start >= size:
        return None
    end = size - 1 if not last else _at_most(last, size - 1)
    return ByteRange(start, end)


def _number_key(digits: str) -> tuple[int, str]:
    """Orders digit strings by value without converting them (they may be very long)."""
    significant = digits.lstrip("0")
    return len(significant), significant


def _at_most(digits: str, bound: int) -> int:
    """``min(int(digits), bound)``, without ever converting more digits than ``bound`` has."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(bound)):
        return bound
    return min(int(significant), bound)


def if_range_allows(if_range: str | None, etag: str, last_modified: float) -> bool:
    """Whether a ``Range`` may be honoured given the request's ``If-Range`` (RFC 9110 §13.1.5).

    ``etag`` is the representation's entity-tag as sent in ``ETag``, quotes included, and
    ``last_modified`` its modification time in seconds since the epoch. An entity-tag
    validator matches only by strong comparison (a weak tag on either side never matches);
    a date matches only when it equals ``last_modified`` to the second. An absent header
    allows the range; an unparseable one does not.

    >>> if_range_allows(None, '"v1"', 0.0)
    True
    >>> if_range_allows('"v1"', '"v1"', 0.0), if_range_allows('"v2"', '"v1"', 0.0)
    (True, False)
    >>> if_range_allows('W/"v1"', 'W/"v1"', 0.0)
    False
    >>> if_range_allows("Sun, 06 Nov 1994 08:49:37 GMT", '"v1"', 784111777.9)
    True
    >>> if_range_allows("Sun, 06 Nov 1994 08:49:38 GMT", '"v1"', 784111777.0)
    False
    """
    if if_range is None:
        return True
    validator = if_range.strip()
    if validator.startswith(("W/", '"')):
        return validator == etag and not etag.startswith("W/")
    date = parse_http_date(validator)
    return date is not None and date == int(last_modified)


_ENTITY_TAG = re.compile(r'(?:W/)?"[^"]*"')


def not_modified(
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str,
    last_modified: float,
) -> bool:
    """Whether a GET or HEAD should be answered 304 Not Modified (RFC 9110 §13.1.2-3, §13.2.2).

    ``If-None-Match`` uses weak comparison and, when present, decides alone;
    ``If-Modified-Since`` counts only without it, and only when it is a valid date.

    >>> not_modified('"a", W/"v1"', None, '"v1"', 0.0)
    True
    >>> not_modified('"a"', "Sun, 06 Nov 1994 08:49:37 GMT", '"v1"', 0.0)
    False
    >>> not_modified("*", None, '"v1"', 0.0)
    True
    >>> not_modified(None, "Sun, 06 Nov 1994 08:49:37 GMT", '"v1"', 784111777.5)
    True
    >>> not_modified(None, "Sun, 06 Nov 1994 08:49:36 GMT", '"v1"', 784111777.0)
    False
    """
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        current = _opaque_tag(etag)
        return any(_opaque_tag(tag) == current for tag in _ENTITY_TAG.findall(if_none_match))
    if if_modified_since is not None:
        date = parse_http_date(if_modified_since.strip())
        return date is not None and int(last_modified) <= date
    return False


def _opaque_tag(entity_tag: str) -> str:
    return entity_tag.removeprefix("W/")


_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_MONTH = "(?P<month>" + "|".join(_MONTHS) + ")"
_DAY_NAME = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY_NAME = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_TIME = "(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_HTTP_DATES = (
    re.compile(rf"{_DAY_NAME}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT"),
    re.compile(rf"{_LONG_DAY_NAME}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<year>[0-9]{{2}}) {_TIME} GMT"),
    re.compile(rf"{_DAY_NAME} {_MONTH} (?P<day>[ 0-9][0-9]) {_TIME} (?P<year>[0-9]{{4}})"),
)


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch for an HTTP-date in any of its three forms, else ``None``.

    Two-digit years (the obsolete RFC 850 form) below 70 are taken as 20xx.

    >>> parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT")
    784111777
    >>> parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT")
    784111777
    >>> parse_http_date("Sun Nov  6 08:49:37 1994")
    784111777
    >>> parse_http_date("Sun, 31 Feb 1994 08:49:37 GMT") is None
    True
    """
    for form in _HTTP_DATES:
        match = form.fullmatch(value)
        if match is not None:
            break
    else:
        return None
    year = int(match["year"])
    if len(match["year"]) == 2:
        year += 2000 if year < 70 else 1900
    try:
        moment = datetime(
            year,
            _MONTHS.index(match["month"]) + 1,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return int(moment.timestamp())


def format_http_date(timestamp: float) -> str:
    """The IMF-fixdate form of an HTTP-date, to the second (for ``Last-Modified``).

    >>> format_http_date(784111777.9)
    'Sun, 06 Nov 1994 08:49:37 GMT'
    """
    return formatdate(int(timestamp), usegmt=True)


# attr-char of RFC 5987 §3.2.1 besides letters and digits, which quote() always keeps.
_ATTR_CHAR_PUNCTUATION = "!#$&+-.^_`|~"


def content_disposition(filename: str) -> str:
    r"""A ``Content-Disposition`` that downloads the body under ``filename`` (RFC 6266).

    ``filename*`` carries the exact name, percent-encoded UTF-8 (RFC 5987); ``filename``
    carries a printable-ASCII stand-in for old clients, with accents stripped and quotes,
    backslashes, percent signs and control characters replaced by ``_``. Neither can end
    the header or the quoted string early, whatever the name holds.

    >>> print(content_disposition("report.pdf"))
    attachment; filename="report.pdf"; filename*=UTF-8''report.pdf
    >>> print(content_disposition("Résumé 2.pdf"))
    attachment; filename="Resume 2.pdf"; filename*=UTF-8''R%C3%A9sum%C3%A9%202.pdf
    >>> print(content_disposition('a"\\\r\n.txt'))
    attachment; filename="a____.txt"; filename*=UTF-8''a%22%5C%0D%0A.txt
    """
    encoded = quote(filename.encode("utf-8", "replace"), safe=_ATTR_CHAR_PUNCTUATION)
    return f"attachment; filename=\"{_ascii_stand_in(filename)}\"; filename*=UTF-8''{encoded}"


def _ascii_stand_in(filename: str) -> str:
    decomposed = unicodedata.normalize("NFKD", filename)
    kept = (char for char in decomposed if not unicodedata.combining(char))
    stand_in = "".join(char if " " <= char <= "~" and char not in '"\\%' else "_" for char in kept)
    return stand_in or "download"
