"""Send a file on disk as the response to a GET or HEAD, with conditional and range requests.

``serve_file`` first decides the whole response (status, headers and a list of pieces: bytes
held in memory or stretches of the file) with the pure rules of ``common.httprange``, then
streams it: a whole file or one range on a plain TCP connection with ``os.sendfile``
(``common.sendfile``), anything else with a pull producer that reads 256 KiB at a time. Either
way memory stays flat whatever the file's size and the connection sets the pace.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer  # type: ignore[import-untyped]

from common.errors import RangeNotSatisfiable
from common.httprange import (
    ByteRange,
    content_disposition,
    format_http_date,
    if_range_allows,
    not_modified,
    parse_range,
)
from common.sendfile import SendfileProducer, sendfile_socket

CHUNK_SIZE = 256 * 1024
"""How much of the file is read, and written to the transport, at a time."""

_log = Logger()
_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')


def serve_file(
    request: Request,
    path: str,
    *,
    size: int,
    etag: str,
    last_modified: float,
    filename: str,
    content_type: str = "application/octet-stream",
) -> Deferred[None]:
    """Answer ``request`` with the ``size``-byte file at ``path``, or the part of it asked for.

    ``etag`` is the entity-tag exactly as the ``ETag`` header carries it, quotes included
    (``'"sha256-ab12..."'``); ``last_modified`` is in seconds since the epoch; ``filename``
    is what the client should save the body as.

    Sends ``Accept-Ranges``, ``ETag`` and ``Last-Modified`` always; 304 when
    ``If-None-Match`` (or, without it, ``If-Modified-Since``) says the client's copy is
    current; 206 with ``Content-Range`` for one satisfiable range, 206
    ``multipart/byteranges`` for several; 416 with ``Content-Range: bytes */SIZE`` and a
    JSON body when none is satisfiable; 200 when there is no usable ``Range`` or
    ``If-Range`` does not match. HEAD gets the headers of the 200 a GET would get.

    This function finishes the request itself. The returned Deferred fires with ``None``
    once the response is over: sent completely, or abandoned because the client went away
    or the file turned out shorter than ``size`` (then the connection is aborted, so the
    client sees an error rather than waiting, and the fault is logged). It never fails.
    From a Klein (24.8) route, return it as it is: Klein waits for it and, finding the
    request already finished, writes nothing more. From a plain ``Resource.render_GET``,
    return ``twisted.web.server.NOT_DONE_YET`` instead.

    The file is opened once, here, and closed on every path. ``OSError`` from opening it
    propagates before anything is written, so the caller's error handling can answer it;
    an ``etag`` that is not a quoted entity-tag is a programming error (``ValueError``).
    """
    if not _ENTITY_TAG.fullmatch(etag):
        raise ValueError(f"etag must be a quoted entity-tag, not {etag!r}")
    if request.channel is None:  # The client left while the route was busy elsewhere.
        return succeed(None)
    representation = _Representation(size, etag, last_modified, filename, content_type)
    plan = _plan_response(
        request.method,
        _header_reader(request),
        representation,
        boundary=secrets.token_hex(16),
    )
    with ExitStack() as unless_streaming:
        file = unless_streaming.enter_context(open(path, "rb"))
        request.setResponseCode(plan.status)
        for name, value in plan.headers.items():
            request.setHeader(name, value)  # type: ignore[no-untyped-call]
        if any(isinstance(piece, _Stretch) for piece in plan.pieces):
            done = _producer(request, file, path, plan.pieces).start()
            unless_streaming.pop_all()  # The producer closes the file now.
            return done
    body = b"".join(piece for piece in plan.pieces if isinstance(piece, bytes))
    request.write(body)  # type: ignore[no-untyped-call]
    request.finish()  # type: ignore[no-untyped-call]
    return succeed(None)


def _producer(
    request: Request, file: BinaryIO, path: str, pieces: tuple[bytes | _Stretch, ...]
) -> _FileProducer | SendfileProducer:
    """``os.sendfile`` for one stretch (a whole file or one range) on plain TCP; reading and
    writing ``CHUNK_SIZE`` at a time for several ranges, TLS, HTTP/2 and the rest."""
    transport = sendfile_socket(request)
    only = pieces[0] if len(pieces) == 1 else None
    if transport is not None and isinstance(only, _Stretch):
        return SendfileProducer(request, transport, file, path, only.offset, only.length)
    return _FileProducer(request, file, path, pieces)


def _header_reader(request: Request) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        value: bytes | None = request.getHeader(name.encode("ascii"))
        return None if value is None else value.decode("iso-8859-1")

    return header


@dataclass(frozen=True)
class _Representation:
    size: int
    etag: str
    last_modified: float
    filename: str
    content_type: str


@dataclass(frozen=True)
class _Stretch:
    """``length`` bytes of the file from ``offset`` on."""

    offset: int
    length: int


@dataclass(frozen=True)
class _Plan:
    """Everything about a response but the file's bytes: what to send, not how."""

    status: int
    headers: dict[str, str]
    pieces: tuple[bytes | _Stretch, ...] = ()


def _plan_response(
    method: bytes,
    header: Callable[[str], str | None],
    representation: _Representation,
    *,
    boundary: str,
) -> _Plan:
    """The response to a GET or HEAD of ``representation``, given the request's headers."""
    rep = representation
    validators = {
        "Accept-Ranges": "bytes",
        "ETag": rep.etag,
        "Last-Modified": format_http_date(rep.last_modified),
    }
    if not_modified(
        header("if-none-match"),
        header("if-modified-since"),
        rep.etag,
        rep.last_modified,
    ):
        return _Plan(304, validators)
    ranges = None
    # Range is defined for GET only (RFC 9110 §14.2); If-Range only matters with a Range.
    if method == b"GET" and if_range_allows(header("if-range"), rep.etag, rep.last_modified):
        try:
            ranges = parse_range(header("range"), rep.size)
        except RangeNotSatisfiable as unsatisfiable:
            body = json.dumps(unsatisfiable.body()).encode("utf-8")
            return _with_body(
                416,
                {
                    **validators,
                    "Content-Range": f"bytes */{rep.size}",
                    "Content-Type": "application/json",
                },
                (body,),
            )
    plan = _content_plan(validators, ranges, rep, boundary)
    return replace(plan, pieces=()) if method == b"HEAD" else plan


def _content_plan(
    validators: dict[str, str],
    ranges: list[ByteRange] | None,
    rep: _Representation,
    boundary: str,
) -> _Plan:
    content_type = _safe_content_type(rep.content_type)
    headers = {
        **validators,
        "Content-Disposition": content_disposition(rep.filename),
        # A type a client named is never second-guessed into something a browser runs.
        "X-Content-Type-Options": "nosniff",
    }
    if ranges is None:
        whole = (_Stretch(0, rep.size),) if rep.size else ()
        return _with_body(200, {**headers, "Content-Type": content_type}, whole)
    if len(ranges) == 1:
        (only,) = ranges
        headers |= {
            "Content-Type": content_type,
            "Content-Range": only.content_range(rep.size),
        }
        return _with_body(206, headers, (_Stretch(only.start, only.length),))
    pieces: list[bytes | _Stretch] = []
    for byte_range in ranges:
        part_headers = (
            f"\r\n--{boundary}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Range: {byte_range.content_range(rep.size)}\r\n\r\n"
        )
        pieces += [
            part_headers.encode("ascii"),
            _Stretch(byte_range.start, byte_range.length),
        ]
    pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    return _with_body(206, headers, tuple(pieces))


def _with_body(status: int, headers: dict[str, str], pieces: tuple[bytes | _Stretch, ...]) -> _Plan:
    length = sum(len(piece) if isinstance(piece, bytes) else piece.length for piece in pieces)
    return _Plan(status, {**headers, "Content-Length": str(length)}, pieces)


_CONTENT_TYPE = re.compile(r"[!-~][ -~]*")


def _safe_content_type(content_type: str) -> str:
    """The content type, unless it could break a header line (it may come from a client)."""
    if _CONTENT_TYPE.fullmatch(content_type):
        return content_type
    return "application/octet-stream"


class _Truncated(Exception):
    pass


@implementer(IPullProducer)
class _FileProducer:
    """Writes a plan's pieces to a request, reading the file ``CHUNK_SIZE`` bytes at a time."""

    def __init__(
        self,
        request: Request,
        file: BinaryIO,
        path: str,
        pieces: tuple[bytes | _Stretch, ...],
    ) -> None:
        self._request = request
        self._file = file
        self._path = path
        self._pieces = deque(pieces)
        self._position = 0
        self._done: Deferred[None] = Deferred(lambda _: self._abort())

    def start(self) -> Deferred[None]:
        self._request.notifyFinish().addBoth(self._over)
        self._request.registerProducer(self, False)  # type: ignore[no-untyped-call]
        return self._done

    def resumeProducing(self) -> None:
        if self._file.closed:
            return
        try:
            chunk = self._next_chunk()
        except (OSError, _Truncated) as problem:
            _log.error(
                "Aborting download of {path}: {problem}",
                path=self._path,
                problem=problem,
            )
            self._abort()
            return
        self._request.write(chunk)  # type: ignore[no-untyped-call]
        if not self._pieces and not self._file.closed:
            self._file.close()
            self._request.unregisterProducer()  # type: ignore[no-untyped-call]
            self._request.finish()  # type: ignore[no-untyped-call]

    def stopProducing(self) -> None:
        """The connection is gone: stop reading. ``_over`` fires ``done`` when Twisted says so."""
        self._file.close()

    def _next_chunk(self) -> bytes:
        chunk: list[bytes] = []
        budget = CHUNK_SIZE
        while budget > 0 and self._pieces:
            piece = self._pieces.popleft()
            if isinstance(piece, bytes):
                chunk.append(piece)
                budget -= len(piece)
                continue
            wanted = min(budget, piece.length)
            if self._position != piece.offset:
                self._file.seek(piece.offset)
            data = self._file.read(wanted)
            self._position = piece.offset + len(data)
            if len(data) < wanted:
                expected = piece.offset + wanted
                raise _Truncated(f"it ends at byte {self._position}, not {expected}")
            chunk.append(data)
            budget -= wanted
            if wanted < piece.length:
                self._pieces.appendleft(_Stretch(piece.offset + wanted, piece.length - wanted))
        return b"".join(chunk)

    def _abort(self) -> None:
        """Give up on the response: the client sees the connection break, not a short body."""
        if self._file.closed:
            return
        self._file.close()
        self._request.unregisterProducer()  # type: ignore[no-untyped-call]
        # TCP, TLS and HTTP/2 stream transports all have it; ITransport does not say so.
        self._request.transport.abortConnection()  # type: ignore[union-attr]

    def _over(self, result: object) -> None:
        self._file.close()
        if not self._done.called:
            self._done.callback(None)
