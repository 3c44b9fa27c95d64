"""``pyarchive watch``: the account's live events (``GET /api/events``), printed as they come.

The stream is read with ``http.client`` and parsed as server-sent events. The id of every
event printed is kept in the configuration directory (``watch-cursor``, per server), so a
reconnect, or the next run, goes on from the last one with ``Last-Event-ID``: nothing is
missed while the server keeps the events (7 days by default). A ``reset`` (the cursor is older
than what is kept) is said, and the stream goes on from where the server puts it. A dropped
connection is retried with backoff, for as long as it takes; the server's keep-alive comment
every 15 s tells a live connection from a dead one (``idle`` seconds without a byte).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client._http import api_error, split_url
from client._upload import backoff
from client.cli.settings import write_private
from client.errors import ApiError

# What people want told by default; ``--all`` adds progress and parts.
# What is printed without --all: an upload's end is told by its file.created or file.updated.
NOTABLE = (
    "file.created", "file.updated", "file.deleted", "file.rolled_back", "file.moved",
    "replica.confirmed", "file.backed_up", "file.restored",
)  # fmt: skip


@dataclass
class Event:
    id: str | None
    type: str
    data: dict[str, Any]


def parse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events from the stream's lines (comments skipped).

    >>> stream = iter(["id: 3", "event: file.created", 'data: {"file_id": "f"}', "", ": ka", ""])
    >>> [(e.id, e.type, e.data) for e in parse(stream)]
    [('3', 'file.created', {'file_id': 'f'})]
    """
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields or "event" in fields:
                try:
                    data = json.loads(fields.get("data") or "{}")
                except ValueError:
                    data = {}
                yield Event(fields.get("id"), fields.get("event", "message"), data)
            elif "id" in fields:  # an id alone: where the stream is (after a reset)
                yield Event(fields["id"], "cursor", {})
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value


def describe(event: Event) -> str:
    """One line for a person.

    >>> describe(Event("4", "file.created", {"filename": "a.txt", "size": 3, "file_id": "f"}))
    'created a.txt (3 bytes)'
    >>> describe(Event("5", "replica.confirmed", {"file_id": "f", "replicas": 2}))
    'f: 2 confirmed replicas'
    >>> describe(Event("6", "file.deleted", {"file_id": "f", "path": "docs/a.txt"}))
    'deleted docs/a.txt'
    """
    data = event.data
    name = data.get("path") or data.get("filename") or data.get("file_id", "")
    match event.type:
        case "file.created":
            return f"created {name} ({data.get('size')} bytes)"
        case "upload.complete":
            return f"upload of {name} complete ({data.get('size')} bytes)"
        case "file.updated":
            return f"new version {data.get('version')} of {name} ({data.get('size')} bytes)"
        case "file.deleted":
            return f"deleted {name}"
        case "file.rolled_back":
            return f"{name} rolled back: version {data.get('version')} is current"
        case "file.moved":
            return f"{data.get('file_id')} moved to {name}"
        case "replica.confirmed":
            return f"{name}: {data.get('replicas')} confirmed replicas"
        case "file.backed_up":
            return f"{name}: backed up to S3"
        case "file.restored":
            return f"{name}: restored from S3"
    return f"{event.type} {json.dumps(data, sort_keys=True)}"


class Cursor:
    """The last event id seen, per server, kept between runs."""

    def __init__(self, directory: Path, server: str) -> None:
        key = hashlib.sha256(server.encode()).hexdigest()[:12]
        self.path = directory / f"watch-cursor-{key}"

    def read(self) -> str | None:
        try:
            return self.path.read_text("utf-8").strip() or None
        except FileNotFoundError:
            return None

    def keep(self, event_id: str) -> None:
        write_private(self.path, event_id.encode())


@dataclass
class Watch:
    server: str
    token: str
    cursor: Cursor
    idle: float = 45.0  # three keep-alives missed: the connection is dead
    sleep: Callable[[float], None] = time.sleep

    def events(self) -> Iterator[Event]:
        """Every event from the kept cursor on, for ever, across reconnects. An answer that
        no retry can change (401: the token) ends it with that ApiError."""
        failures = 0
        while True:
            try:
                for event in self._stream():
                    failures = 0
                    yield event
            except ApiError as error:
                if error.status < 500:
                    raise
            except (OSError, http.client.HTTPException):
                pass
            failures += 1
            self.sleep(backoff(failures))

    def _stream(self) -> Iterator[Event]:
        origin, target = split_url(self.server + "/api/events")
        connection_type = (
            http.client.HTTPSConnection if origin.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_type(origin.host, origin.port, timeout=self.idle)
        headers = {"Authorization": f"JWT {self.token}", "Accept": "text/event-stream"}
        last = self.cursor.read()
        if last is not None:
            headers["Last-Event-ID"] = last
        try:
            connection.request("GET", target, headers=headers)
            answer = connection.getresponse()
            if answer.status != 200:
                raise api_error(answer.status, answer.reason, answer.read())
            for event in parse(_lines(answer)):
                if event.type != "cursor":
                    yield event  # kept only once handled: a kill before that re-shows it
                if event.id is not None:
                    self.cursor.keep(event.id)
        finally:
            connection.close()


def _lines(answer: http.client.HTTPResponse) -> Iterator[str]:
    while True:
        raw = answer.readline()
        if not raw:
            raise ConnectionError("the event stream ended")
        yield raw.decode("utf-8", "replace").rstrip("\r\n")
