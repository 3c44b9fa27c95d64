"""Errors that carry their HTTP status.

Domain code raises these; one handler in each web app turns them into the JSON body
``{"detail": message, **extra}``. Anything else becomes a 500 whose body says nothing about
the server's insides (the traceback goes to the log).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error a client caused or can act on, answered with ``status`` and a JSON body."""

    status: int = 400

    def __init__(self, detail: str, *, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    status = 410


class PayloadTooLarge(ApiError):
    status = 413


class RangeNotSatisfiable(ApiError):
    status = 416


class ServiceUnavailable(ApiError):
    status = 503


class TooManyRequests(ApiError):
    status = 429
