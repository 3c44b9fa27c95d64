"""How the command line ends: its exit codes, and each failure as one clear line.

0 ok, 1 failure, 2 usage (click's own), 3 not found, 4 authentication, 5 conflict or
refused (a quota, a safety check, a state that does not allow it).
"""

from __future__ import annotations

import socket
from typing import NoReturn

import click

from client.errors import ApiError, ProtocolError

OK, FAILURE, USAGE, NOT_FOUND, AUTH, REFUSED = 0, 1, 2, 3, 4, 5


class CliError(click.ClickException):
    """One line on stderr (``pyarchive: ...``) and its exit code."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        setattr(self, "exit_code", code)  # noqa: B010 (click declares it a class variable)

    def format_message(self) -> str:
        return self.message

    def show(self, file: object = None) -> None:
        click.echo(f"pyarchive: {self.format_message()}", err=True)


def _status_code(status: int) -> int:
    """An HTTP refusal's exit code.

    >>> [_status_code(s) for s in (401, 403, 404, 409, 413, 412, 400, 500)]
    [4, 4, 3, 5, 5, 5, 1, 1]
    """
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status in (409, 412, 413, 423, 429):
        return REFUSED
    return FAILURE


def explain(error: BaseException, server: str) -> CliError:
    """What went wrong, as the one line a user reads, with its exit code."""
    if isinstance(error, CliError):
        return error
    if isinstance(error, ApiError):
        if error.status == 401:
            return CliError("login needed: run `pyarchive login USER`", AUTH)
        detail = error.detail
        if error.body.get("quota") is not None:
            detail += f" (used {error.body.get('used')} of {error.body.get('quota')} bytes)"
        return CliError(f"{detail} (HTTP {error.status})", _status_code(error.status))
    if isinstance(error, ConnectionError | socket.timeout | TimeoutError | socket.gaierror):
        return CliError(f"server unreachable at {server}: {error}")
    if isinstance(error, ProtocolError):
        return CliError(f"the server's answer made no sense: {error}")
    if isinstance(error, OSError):
        name = f"{error.filename}: " if error.filename else ""
        return CliError(f"{name}{error.strerror or error}")
    return CliError(f"{type(error).__name__}: {error}")


def fail(message: str, code: int = FAILURE) -> NoReturn:
    raise CliError(message, code)
