"""What a client sends to read its events: a cursor (``Last-Event-ID`` or ``?since=``) and,
for the long poll, how long to wait. Parsed strictly; anything else is 400 naming the field."""

from __future__ import annotations

import re

from common.errors import BadRequest

MAX_CURSOR = 2**63 - 1  # the largest BIGINT: what both databases can compare
DEFAULT_TIMEOUT = 30
MAX_TIMEOUT = 60
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() says yes to "²"
_SECONDS = re.compile(r"[0-9]{1,9}")


def parse_cursor(value: str | None, field: str) -> int | None:
    """An event id (the newest one the client has), or None when not given.

    >>> parse_cursor("42", "since"), parse_cursor("", "since"), parse_cursor(None, "since")
    (42, None, None)
    >>> parse_cursor("-1", "since")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: since must be an event id: a whole number from 0
    """
    if value is None or value == "":
        return None
    if not _DIGITS.fullmatch(value) or int(value) > MAX_CURSOR:
        raise BadRequest(f"{field} must be an event id: a whole number from 0", field=field)
    return int(value)


def stream_cursor(last_event_id: str | None, since: str | None) -> int | None:
    """Where a stream starts: after ``Last-Event-ID`` (what a reconnecting EventSource
    sends, newer than the ``since`` its URL still carries), else after ``since``.

    >>> stream_cursor("17", "3"), stream_cursor(None, "3"), stream_cursor(None, None)
    (17, 3, None)
    """
    found = parse_cursor(last_event_id, "Last-Event-ID")
    return found if found is not None else parse_cursor(since, "since")


def parse_timeout(value: str | None) -> int:
    """Seconds the long poll may wait for an event: 0 answers at once.

    >>> parse_timeout("5"), parse_timeout(""), parse_timeout(None), parse_timeout("0")
    (5, 30, 30, 0)
    >>> parse_timeout("61")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: timeout must be a whole number of seconds from 0 to 60
    """
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    if not _SECONDS.fullmatch(value) or int(value) > MAX_TIMEOUT:
        raise BadRequest(
            f"timeout must be a whole number of seconds from 0 to {MAX_TIMEOUT}", field="timeout"
        )
    return int(value)
