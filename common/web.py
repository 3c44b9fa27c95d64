"""Small twisted.web helpers the proxy's and the nodes' routes share."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest


def respond(request: IRequest, status: int, data: Any) -> bytes:
    """A JSON answer with ``status``; nothing in it may be cached."""
    request.setResponseCode(status)
    request.setHeader("Content-Type", "application/json")
    request.setHeader("Cache-Control", "no-store")
    return json.dumps(data).encode("utf-8")


def header(request: IRequest, name: str) -> str | None:
    """The first value of a request header, or None."""
    values = request.requestHeaders.getRawHeaders(name)
    return values[0] if values else None
