"""Decides, when a request's headers are in, where its body will go (``proxy.uploads.bodies``),
and how much of it may come.

Only a request that can carry an upload (a seed-API chunk or whole file, a tus creation or
PATCH, or a route given in ``large_bodies``) from a caller who shows a genuine token or a
genuine session cookie may send up to a chunk; anything else gets the small-body cap. A body
announced larger than its cap is answered 413 from its ``Content-Length`` before a byte of it
is read, and the connection is closed. Both checks need no database: a token's signature and
expiry, and a session cookie's MAC, are checked with the proxy's keys; whether the account or
the session is still live is for the route to say.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.python.threadpool import ThreadPool

from common.contentrange import parse_content_range
from common.errors import ApiError
from common.hex32 import HEX32
from common.tokens import token_from_header, verify_token
from proxy.api.forms import content_type
from proxy.api.inputs import SMALL_BODY_LIMIT
from proxy.api.tus_headers import OFFSET_STREAM, TUS_VERSION, number
from proxy.catalog.sessions import cookie_secret
from proxy.uploads.bodies import DIRECT_ALIGN, BufferPool, PlacedChunk, SpoolBody
from proxy.uploads.progress import UploadProgress
from proxy.uploads.site import ArchiveRequest, pending_request_line
from proxy.uploads.staging import StagingArea

_CHUNK_PATH = re.compile(rb"/storage/tmp-upload/(%s)/" % HEX32.encode("ascii"))
_SEED_UPLOADS = re.compile(rb"/storage/tmp-upload/(?:%s/)?" % HEX32.encode("ascii"))
_IN_MEMORY = 256 * 1024  # bodies up to this size stay in memory
_MULTIPART_SLACK = 1 << 20  # room for multipart headers and fields around a full chunk


class BodyIntake:
    def __init__(
        self,
        *,
        reactor: Any,
        clock: IReactorTime,
        pool: ThreadPool,
        staging: StagingArea,
        progress: UploadProgress,
        secret: str,
        max_chunk_size: int,
        max_upload_size: int,
        tus_path: str = "/files/",
        keep_arrived: Callable[[PlacedChunk], object] = lambda sink: None,
        session_cookie: tuple[bytes, bytes] | None = None,
        large_bodies: Mapping[tuple[bytes, bytes], int] | None = None,
    ) -> None:
        self._reactor: IReactorTime & IReactorThreads = reactor  # type: ignore[valid-type]
        self._clock = clock
        self._pool = pool
        self._staging = staging
        self._progress = progress
        self._secret = secret
        self._max_chunk = max_chunk_size
        self._max_upload = max_upload_size
        paths = {tus_path.encode("ascii"), b"/files/"}
        tus_roots = b"|".join(re.escape(p) for p in paths)
        self._tus_path = re.compile(b"(?:%s)(%s)" % (tus_roots, HEX32.encode("ascii")))
        self._tus_creation = re.compile(b"(?:%s)" % tus_roots)
        self._session_cookie = session_cookie  # (its name, the key of its MAC)
        # Other routes with large bodies from signed-in callers: (method, path) -> their cap.
        self._large_bodies = dict(large_bodies or {})
        self._keep_arrived = keep_arrived  # what a tus PATCH cut short becomes
        self._buffers = BufferPool()

    def __call__(self, request: ArchiveRequest, length: int | None) -> Any:
        placed = self._place(request, length)
        if placed is not None:
            return placed
        limit = self._limit(request)
        if length is not None and length > limit:
            return self._refuse_now(request, limit)
        spool = self._staging.spool_file(min(limit, _IN_MEMORY))
        return SpoolBody(spool, limit)

    def _limit(self, request: ArchiveRequest) -> int:
        """How large this request's body may be: a chunk's worth (or a ``large_bodies``
        route's own cap) for a route that takes one from a caller who shows a genuine
        credential, else the small-body cap."""
        line = pending_request_line(request)
        if line is None:
            return self._max_chunk + _MULTIPART_SLACK  # cannot tell: as before, route decides
        method, path = line[0], line[1].split(b"?", 1)[0]
        if method == b"POST" and request.requestHeaders.hasHeader("x-http-method-override"):
            override = request.requestHeaders.getRawHeaders("x-http-method-override", [""])[0]
            method = override.strip().upper().encode("ascii", "replace")
        large = self._large_bodies.get((method, path))
        if large is None and self._takes_uploads(method, path):
            large = self._max_chunk + _MULTIPART_SLACK
        if large is None or not self._shows_credential(request):
            return SMALL_BODY_LIMIT
        return large

    def _takes_uploads(self, method: bytes, path: bytes) -> bool:
        if method in (b"PUT", b"POST") and _SEED_UPLOADS.fullmatch(path):
            return True
        if method == b"POST" and self._tus_creation.fullmatch(path):
            return True
        return method == b"PATCH" and self._tus_path.fullmatch(path) is not None

    def _shows_credential(self, request: ArchiveRequest) -> bool:
        headers = request.requestHeaders
        try:
            verify_token(
                self._secret,
                token_from_header(headers.getRawHeaders("authorization", [None])[0]),
                now=self._clock.seconds(),
            )
            return True
        except ApiError:
            pass
        if self._session_cookie is None:
            return False
        name, key = self._session_cookie
        raw = request.received_cookies.get(name)
        cookie = raw.decode("ascii", "replace") if raw else None
        return cookie_secret(key, cookie) is not None

    def _refuse_now(self, request: ArchiveRequest, limit: int) -> SpoolBody:
        """Answer 413 before the body is read, and close the connection (what was sent of
        the body is never read); the request's body goes nowhere."""
        detail = f"request body is larger than {limit} bytes"
        body = json.dumps({"detail": detail}).encode()
        head = [
            b"HTTP/1.1 413 Request Entity Too Large",
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
        ]
        line = pending_request_line(request)
        if line is not None and self._tus_creation.match(line[1]):
            head.append(b"Tus-Resumable: " + TUS_VERSION.encode("ascii"))
        request.requestHeaders.removeHeader("expect")  # no "100 Continue": nothing is wanted
        transport: Any = request.channel.transport
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        transport.loseConnection()  # stops reading at once, closes once the answer is out
        return SpoolBody(io.BytesIO(), 0)  # keeps nothing: every byte is over its limit

    def _place(self, request: ArchiveRequest, length: int | None) -> PlacedChunk | None:
        """A PlacedChunk if this is a raw chunk (a seed-API PUT or a tus PATCH) at the offset
        we know, else None (spool it)."""
        line = pending_request_line(request)
        if line is None:
            return None
        headers = request.requestHeaders
        path = line[1].split(b"?", 1)[0]
        tus = self._tus_path.fullmatch(path)
        seed = _CHUNK_PATH.fullmatch(path) if line[0] == b"PUT" else None
        start: int | None
        if tus is not None:
            match, limit, start = tus, self._max_upload, self._tus_offset(request, line[0])
        elif seed is not None:
            match = seed
            ctype = headers.getRawHeaders("content-type", [""])[0]
            if content_type(ctype) not in {"application/octet-stream", ""}:
                return None
            try:
                start = parse_content_range(headers.getRawHeaders("content-range", [None])[0]).start
            except ApiError:
                return None  # the route will answer with the error
            limit = self._max_chunk
        else:
            return None
        try:
            claims = verify_token(
                self._secret,
                token_from_header(headers.getRawHeaders("authorization", [None])[0]),
                now=self._clock.seconds(),
            )
        except ApiError:
            return None
        upload_id = match[1].decode("ascii")
        # Known only for the caller's own uploads: nobody writes a byte into another's file.
        if start is None or self._progress.offset(upload_id, claims.user_id) != start:
            return None
        if length is not None and length > limit:
            return None
        sink = self._open_sink(request, upload_id, start, limit)
        if sink is not None and tus is not None:
            sink.owner_id = claims.user_id
        return sink

    @staticmethod
    def _tus_offset(request: ArchiveRequest, method: bytes) -> int | None:
        """The offset of a tus PATCH that can be written in place (no checksum to check
        first), else None."""
        headers = request.requestHeaders
        override = headers.getRawHeaders("x-http-method-override", [""])[0].upper()
        if method != b"PATCH" and not (method == b"POST" and override == "PATCH"):
            return None
        ctype = headers.getRawHeaders("content-type", [""])[0]
        if content_type(ctype) != OFFSET_STREAM or headers.hasHeader("upload-checksum"):
            return None
        try:
            return number(headers.getRawHeaders("upload-offset", [None])[0], "Upload-Offset")
        except ApiError:
            return None  # the route will answer with the error

    def _open_sink(
        self, request: ArchiveRequest, upload_id: str, start: int, limit: int
    ) -> PlacedChunk | None:
        path = self._staging.upload_path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            return None
        direct_fd = None
        if start % DIRECT_ALIGN == 0:
            try:
                direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                pass  # e.g. tmpfs: buffered writes only
        transport: Any = request.channel.transport  # a TCP connection: pausable, with bufferSize
        # Read up to a buffer's worth per recv() while this body streams in: a quarter of
        # the Python calls per byte compared with Twisted's 64 KiB default. Once the body is
        # in, reads go back to the connection's own size: the next request's head would
        # otherwise come in one read with up to half a megabyte of its body, which Twisted's
        # line parser copies again for every header line (~0.1 CPU s/GiB of 8 MiB chunks).
        read_size = transport.bufferSize
        transport.bufferSize = BufferPool.default_size

        def body_read() -> None:
            transport.bufferSize = read_size

        sink = PlacedChunk(
            reactor=self._reactor,
            pool=self._pool,
            buffers=self._buffers,
            fd=fd,
            direct_fd=direct_fd,
            upload_id=upload_id,
            start=start,
            limit=limit,
            hashes=self._progress.chain_at(upload_id, start),
            hash_lanes=self._progress.hash_lanes(upload_id),
            pause=transport.pauseProducing,
            resume=transport.resumeProducing,
            on_closed=self._closed,
            body_read=body_read,
        )
        if not self._progress.try_claim(upload_id, sink):
            body_read()  # spooled instead, at the usual read size
            os.close(fd)
            if direct_fd is not None:
                os.close(direct_fd)
            return None
        return sink

    def _closed(self, sink: PlacedChunk) -> None:
        if sink.handed_over:
            return
        if sink.owner_id is not None and not sink.arrived_whole:
            self._keep_arrived(sink)  # tus: the bytes that arrived are kept, then released
        else:
            self._progress.release(sink.upload_id, sink)
