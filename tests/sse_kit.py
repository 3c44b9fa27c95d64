"""Reading server-sent events in tests: the framing parsed into blocks, and a client protocol
that collects a live stream's blocks and lets a test wait for the ones it expects."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

Block = dict[str, str]  # field -> value; a comment is {":": text}


def parse_blocks(data: bytes) -> tuple[list[Block], bytes]:
    """The complete blocks in ``data`` (a blank line ends each) and what is left over."""
    text = data.decode("utf-8")
    *whole, rest = text.split("\n\n")
    blocks = []
    for raw in whole:
        block: Block = {}
        for line in raw.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                block[":"] = value
            elif name == "data" and "data" in block:
                block["data"] += "\n" + value
            else:
                block[name] = value
        blocks.append(block)
    return blocks, rest.encode("utf-8")


def events(blocks: list[Block]) -> list[dict[str, Any]]:
    """The dispatched events: (id, type, data) of every block with data."""
    return [
        {"id": b.get("id"), "type": b.get("event"), "data": json.loads(b["data"])}
        for b in blocks
        if "data" in b
    ]


class SseClient(Protocol):
    """The body of a streamed response, kept as blocks as they arrive."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.finished: Deferred[None] = Deferred()
        self._rest = b""
        self._waiting: list[tuple[Callable[[list[Block]], bool], Deferred[list[Block]]]] = []

    def dataReceived(self, data: bytes) -> None:
        found, self._rest = parse_blocks(self._rest + data)
        self.blocks.extend(found)
        self._check()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.finished.called:
            self.finished.callback(None)

    def until(self, done: Callable[[list[Block]], bool], timeout: float = 10.0) -> Deferred[Any]:
        """Fires with the blocks once ``done(blocks)`` holds (fails after ``timeout`` s)."""
        from twisted.internet import reactor

        waiter: Deferred[list[Block]] = Deferred()
        self._waiting.append((done, waiter))
        self._check()
        return waiter.addTimeout(timeout, reactor)

    def events(self) -> list[dict[str, Any]]:
        return events(self.blocks)

    def close(self) -> None:
        """Go away, as a browser tab that is closed does."""
        assert self.transport is not None
        self.transport.stopProducing()  # type: ignore[attr-defined]

    def _check(self) -> None:
        for entry in list(self._waiting):
            done, waiter = entry
            if done(self.blocks) and not waiter.called:
                self._waiting.remove(entry)
                waiter.callback(list(self.blocks))
