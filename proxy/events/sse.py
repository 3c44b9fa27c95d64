"""Server-sent events framing (the WHATWG ``text/event-stream`` format), as pure functions.

A message is ``field: value`` lines ended by a blank line. ``data`` may span several lines
(each gets its own ``data:`` line and the client joins them with newlines); ``id`` and
``event`` may not contain a line break. A line starting with ``:`` is a comment: clients
ignore it, and it keeps idle connections alive through proxies. A message with an ``id`` and
no ``data`` is not dispatched, but still moves the client's ``Last-Event-ID``.
"""

from __future__ import annotations

import json
from typing import Any

KEEP_ALIVE = b": keep-alive\n\n"


def _field(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} cannot hold a line break: {value!r}")
    return f"{name}: {value}\n"


def message(data: str, *, event: str | None = None, id: int | None = None) -> bytes:
    """One message.

    >>> message('{"file_id": "ab"}', event="file.deleted", id=7)
    b'id: 7\\nevent: file.deleted\\ndata: {"file_id": "ab"}\\n\\n'
    >>> message("two\\nlines")
    b'data: two\\ndata: lines\\n\\n'
    >>> message("x", event="a\\nb")
    Traceback (most recent call last):
    ...
    ValueError: an SSE event cannot hold a line break: 'a\\nb'
    """
    lines = []
    if id is not None:
        lines.append(_field("id", str(id)))
    if event is not None:
        lines.append(_field("event", event))
    lines.extend(f"data: {line}\n" for line in data.replace("\r\n", "\n").split("\n"))
    return ("".join(lines) + "\n").encode("utf-8")


def json_message(data: Any, *, event: str | None = None, id: int | None = None) -> bytes:
    """A message whose data is ``data`` as one line of JSON.

    >>> json_message({}, event="reset")
    b'event: reset\\ndata: {}\\n\\n'
    """
    text = json.dumps(data, separators=(", ", ": "), sort_keys=True, ensure_ascii=False)
    return message(text, event=event, id=id)


def cursor(id: int) -> bytes:
    """Move the client's ``Last-Event-ID`` without dispatching anything.

    >>> cursor(12)
    b'id: 12\\n\\n'
    """
    return (_field("id", str(id)) + "\n").encode("ascii")


def comment(text: str) -> bytes:
    """A comment line (ignored by clients).

    >>> comment("keep-alive") == KEEP_ALIVE
    True
    """
    if "\n" in text or "\r" in text:
        raise ValueError(f"an SSE comment cannot hold a line break: {text!r}")
    return f": {text}\n\n".encode()
