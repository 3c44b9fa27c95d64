"""Decides, when a request's headers are in, where its body will go (``proxy.uploads.bodies``)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.python.threadpool import ThreadPool

from common.contentrange import parse_content_range
from common.errors import ApiError
from common.hex32 import HEX32
from common.tokens import token_from_header, verify_token
from proxy.api.forms import content_type
from proxy.api.tus_headers import OFFSET_STREAM, number
from proxy.uploads.bodies import DIRECT_ALIGN, BufferPool, PlacedChunk, SpoolBody
from proxy.uploads.progress import UploadProgress
from proxy.uploads.site import ArchiveRequest, pending_request_line
from proxy.uploads.staging import StagingArea

_CHUNK_PATH = re.compile(rb"/storage/tmp-upload/(%s)/" % HEX32.encode("ascii"))
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
        self._tus_path = re.compile(
            b"(?:%s)(%s)" % (b"|".join(re.escape(p) for p in paths), HEX32.encode("ascii"))
        )
        self._keep_arrived = keep_arrived  # what a tus PATCH cut short becomes
        self._buffers = BufferPool()

    def __call__(self, request: ArchiveRequest, length: int | None) -> Any:
        placed = self._place(request, length)
        if placed is not None:
            return placed
        spool = self._staging.spool_file(_IN_MEMORY)
        return SpoolBody(spool, self._max_chunk + _MULTIPART_SLACK)

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
        if start is None or self._progress.offset(upload_id) != start:
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
        # the Python calls per byte compared with Twisted's 64 KiB default.
        transport.bufferSize = BufferPool.default_size
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
        )
        if not self._progress.try_claim(upload_id, sink):
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
