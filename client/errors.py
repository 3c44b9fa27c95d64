"""What the client raises when the server says no, or says something it cannot use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PyArchiveError(Exception):
    """Base of everything this package raises on purpose."""


class ApiError(PyArchiveError):
    """The server answered with a 4xx or 5xx status.

    ``detail`` is the body's ``detail`` (or the status's reason phrase when the body is not the
    API's JSON), and ``body`` the whole decoded JSON body (empty when there was none), so extra
    fields such as ``offset`` stay reachable.
    """

    def __init__(self, status: int, detail: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.body: dict[str, Any] = dict(body or {})

    def __str__(self) -> str:
        extra = {k: v for k, v in self.body.items() if k != "detail"}
        suffix = f" {extra}" if extra else ""
        return f"HTTP {self.status}: {self.detail}{suffix}"


class ProtocolError(PyArchiveError):
    """The server answered, but not in a way this client understands (or the answer is short)."""
