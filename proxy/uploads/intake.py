"""Decides, when a request's headers are in, where its body will go (``proxy.uploads.bodies``)."""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.python.threadpool import ThreadPool

from common.contentrange import parse_content_range
from common.errors import ApiError
from common.hex32 import HEX32
from common.tokens import token_from_header, verify_token
from proxy.api.forms import content_type
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
    ) -> None:
        self._reactor: IReactorTime & IReactorThreads = reactor  # type: ignore[valid-type]
        self._clock = clock
        self._pool = pool
        self._staging = staging
        self._progress = progress
        self._secret = secret
        self._max_chunk = max_chunk_size
        self._buffers = BufferPool()

    def __call__(self, request: ArchiveRequest, length: int | None) -> Any:
        placed = self._place(request, length)
        if placed is not None:
            return placed
        spool = self._staging.spool_file(_IN_MEMORY)
        return SpoolBody(spool, self._max_chunk + _MULTIPART_SLACK)

    def _place(self, request: ArchiveRequest, length: int | None) -> PlacedChunk | None:
        """A PlacedChunk if this is a raw chunk at the offset we know, else None (spool it)."""
        line = pending_request_line(request)
        if line is None or line[0] != b"PUT":
            return None
        match = _CHUNK_PATH.fullmatch(line[1].split(b"?", 1)[0])
        if match is None:
            return None
        headers = request.requestHeaders
        ctype = headers.getRawHeaders("content-type", [""])[0]
        if content_type(ctype) not in {"application/octet-stream", ""}:
            return None
        upload_id = match[1].decode("ascii")
        try:
            chunk = parse_content_range(headers.getRawHeaders("content-range", [None])[0])
            verify_token(
                self._secret,
                token_from_header(headers.getRawHeaders("authorization", [None])[0]),
                now=self._clock.seconds(),
            )
        except ApiError:
            return None  # the route will answer with the error
        if self._progress.offset(upload_id) != chunk.start:
            return None
        if length is not None and length > self._max_chunk:
            return None
        path = self._staging.upload_path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            return None
        direct_fd = None
        if chunk.start % DIRECT_ALIGN == 0:
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
            start=chunk.start,
            limit=self._max_chunk,
            hashes=self._progress.chain_at(upload_id, chunk.start),
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
        if not sink.handed_over:
            self._progress.release(sink.upload_id, sink)
