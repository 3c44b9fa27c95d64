"""Where request bodies go while they arrive.

Twisted hands a request's body to ``request.content`` piece by piece before any resource runs.
Most bodies go to a bounded spool (memory, then a temporary file). The upload fast path is
different: a raw chunk that starts at the offset this process knows is acknowledged is written
straight into the upload's staging file at that offset by a worker thread while it arrives,
and md5/sha256 are updated on two worker threads at the same time, so by the time the last
byte is in, the data is written, mostly flushed, and hashed. Nothing is acknowledged here: the
upload engine checks the chunk under the upload's lock, fsyncs, and only then moves the offset.
Bytes written past the acknowledged offset by a chunk that is then refused are not part of the
upload; the next chunk overwrites them and completion truncates them.

Memory stays bounded: at most ``_MAX_IN_FLIGHT`` bytes wait for the workers before the
connection is paused (TCP back-pressure), whatever the chunk or file size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.python.threadpool import ThreadPool

from common.durable import pwrite_all
from proxy.uploads.lanes import SerialLane
from proxy.uploads.progress import HashHolder, HashLanes, HashState

DIRECT_ALIGN = 4096  # O_DIRECT needs buffer address, file offset and length aligned to this
_WRITES_ONLY = 2**63  # an md5 allowance that waits for the writes alone
_BATCH = 512 * 1024  # hand bytes to the workers in buffers of this size
_MAX_IN_FLIGHT = 4 << 20  # pause the connection above this many unprocessed bytes


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """``sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE)`` from libc, if there is one.

    It starts write-back of what was just written without waiting, so the fsync that makes a
    chunk durable has little left to do. The standard library does not expose it.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]

    def start_writeback(fd: int, offset: int, length: int) -> None:
        function(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE; errors only lose a hint

    return start_writeback


_start_writeback = _load_sync_file_range()


class BodyTooLarge(Exception):
    pass


class SpoolBody:
    """A bounded spool for any request body (``request.content`` for Twisted)."""

    def __init__(self, spool: IO[bytes], limit: int) -> None:
        self._spool = spool
        self._limit = limit
        self.size = 0
        self.too_large = False
        self._handed_over = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            self.too_large = True  # keep counting, stop storing; the route answers 413
            return
        self._spool.write(data)

    def file(self) -> IO[bytes]:
        if self.too_large:
            raise BodyTooLarge()
        return self._spool

    def hand_over(self) -> IO[bytes]:
        """The spool, which its new owner closes: Twisted's close of the request's body (at
        the end of the request, or when the connection is lost) no longer closes it."""
        spool = self.file()
        self._handed_over = True
        return spool

    def read(self, size: int = -1) -> bytes:
        return self._spool.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._spool.seek(offset, whence)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if not self._handed_over:
            self._spool.close()


class BufferPool:
    """Reusable page-aligned buffers (anonymous mmaps), so the fast path neither allocates
    fresh memory for each piece nor breaks O_DIRECT's alignment rules. Only the reactor
    thread takes and returns them."""

    default_size = _BATCH

    def __init__(self, size: int = _BATCH, keep: int = 32) -> None:
        assert size % DIRECT_ALIGN == 0
        self.size = size
        self._keep = keep
        self._free: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        return self._free.pop() if self._free else mmap.mmap(-1, self.size)

    def give(self, buffer: mmap.mmap) -> None:
        if len(self._free) < self._keep:
            self._free.append(buffer)


class PlacedChunk:
    """A raw chunk written in place into an upload's staging file as it arrives.

    Arriving pieces are copied into a pooled buffer; each full buffer goes to three serial
    lanes on the I/O pool: the chunk's own lane ``pwrite``s it at its offset, and the
    upload's md5 and sha256 lanes update the running hashes. The buffer returns to the pool
    when every lane is done with it. The chunk can be acknowledged once its bytes are
    written; its hashing may run on (up to ``hash_allowance`` bytes per hash) while the
    client sends the next chunk, whose hashing queues behind it on the same lanes.

    Aligned buffers are written with O_DIRECT when ``direct_fd`` is given: straight to the
    disk, without filling the page cache. On this kind of VM, fresh page-cache pages cost a
    host page fault each (see shared/bench/README.md), which made buffered writes the
    slowest step of an upload; O_DIRECT writes ran at the disk's speed for a fraction of the
    CPU. The unaligned tail, and any filesystem that refuses O_DIRECT, use ``fd``.
    """

    def __init__(
        self,
        *,
        reactor: IReactorThreads,
        pool: ThreadPool,
        buffers: BufferPool,
        fd: int,
        direct_fd: int | None,
        upload_id: str,
        start: int,
        limit: int,
        hashes: HashState | None,
        hash_lanes: HashLanes,
        pause: Callable[[], None],
        resume: Callable[[], None],
        on_closed: Callable[[PlacedChunk], None],
        body_read: Callable[[], None] = lambda: None,
    ) -> None:
        self._reactor = reactor
        self._buffers = buffers
        self._fd = fd
        self._direct_fd = direct_fd
        self.upload_id = upload_id
        self.start = start
        self._limit = limit
        self._pause, self._resume = pause, resume
        self._on_closed = on_closed
        self._body_read = body_read  # told once the last byte of the body is in (or never comes)
        self._write_lane = SerialLane(pool)
        # Without running hashes to continue (e.g. after a restart) the chunk is only
        # written; completion then hashes the file from disk.
        self._hashing: list[tuple[SerialLane, HashHolder]] = []
        self._result: HashState | None = None
        if hashes is not None:
            self._result = HashState(start, HashHolder(), HashHolder())
            pairs = [
                (hash_lanes.md5, hashes.md5, self._result.md5),
                (hash_lanes.sha256, hashes.sha256, self._result.sha256),
            ]
            for lane, previous, mine in pairs:
                # Forked on the lane, after the work of the chunks before this one.
                lane.submit(mine.fork, previous)
                self._hashing.append((lane, mine))
        self._buffer: mmap.mmap | None = None
        self._fill = 0
        self._write_offset = start
        self._write_queued = 0  # bytes handed to the write lane and not yet written
        self._hash_queued = [0] * len(self._hashing)  # the same, per hash lane
        self._users: dict[int, int] = {}  # id(buffer) -> lanes still using it
        self._paused = False
        self._receiving = True
        self._closed = False
        self._drained: list[tuple[int, Deferred[None]]] = []
        self.size = 0
        self.too_large = False
        self.error: OSError | None = None
        # Set by the upload engine when it takes the chunk over; from then on the engine,
        # not the end of the request, releases the upload's claim.
        self.handed_over = False
        # Set when the request's body arrived whole. A tus PATCH (``owner_id`` set: the
        # caller, whose bytes are kept) that ends without it keeps what arrived.
        self.arrived_whole = False
        self.owner_id: int | None = None

    # -- the file-like side Twisted uses (reactor thread)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            self.too_large = True
            return
        view = memoryview(data)
        while view:
            if self._buffer is None:
                self._buffer = self._buffers.take()
                self._fill = 0
            room = len(self._buffer) - self._fill
            piece = view[:room]
            self._buffer[self._fill : self._fill + len(piece)] = piece
            self._fill += len(piece)
            view = view[len(piece) :]
            if self._fill == len(self._buffer):
                self._dispatch()

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return self.size

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        """Called by Twisted when the request is done or the connection is lost."""
        if not self._closed:
            self._closed = True
            self.body_finished()
            # The file descriptors are only needed until the bytes are written.
            self.drained(hash_allowance=_WRITES_ONLY).addBoth(self._close_file)

    def _close_file(self, _: object) -> None:
        os.close(self._fd)
        if self._direct_fd is not None:
            os.close(self._direct_fd)
        self._on_closed(self)

    # -- progress of the workers

    def body_finished(self) -> None:
        """The last byte arrived (or never will): send what is left to the workers."""
        if self._receiving:
            self._body_read()
        self._receiving = False
        if self._buffer is not None and self._fill and not self.too_large:
            self._dispatch()
        elif self._buffer is not None:
            self._buffers.give(self._buffer)
            self._buffer = None

    def drained(self, hash_allowance: int = 0) -> Deferred[None]:
        """Fires when every received byte is written and at most ``hash_allowance`` of them
        still wait for each hash."""
        done: Deferred[None] = Deferred()
        self._drained.append((hash_allowance, done))
        self._check_drained()
        return done

    def final_hashes(self) -> HashState | None:
        """The running hashes after this chunk (settling on the upload's hash lanes)."""
        if self._result is None or self.error is not None or self.too_large:
            return None
        self._result.offset = self.start + self.size
        return self._result

    def _check_drained(self) -> None:
        if self._write_queued:
            return
        behind = max(self._hash_queued, default=0)
        ready = [d for allowance, d in self._drained if behind <= allowance]
        self._drained = [(a, d) for a, d in self._drained if d not in ready]
        for waiter in ready:
            waiter.callback(None)

    def _dispatch(self) -> None:
        assert self._buffer is not None
        buffer, length = self._buffer, self._fill
        self._buffer, self._fill = None, 0
        offset = self._write_offset
        self._write_offset += length
        view = memoryview(buffer)[:length]
        self._users[id(buffer)] = 1 + len(self._hashing)
        self._write_queued += length
        self._write_lane.submit(self._write, buffer, view, offset)
        for index, (lane, holder) in enumerate(self._hashing):
            self._hash_queued[index] += length
            lane.submit(self._hash, index, holder, buffer, view)
        behind = max([self._write_queued, *self._hash_queued])
        if behind > _MAX_IN_FLIGHT and self._receiving and not self._paused:
            self._paused = True
            self._pause()

    def _written(self, buffer: mmap.mmap, length: int) -> None:
        self._write_queued -= length
        self._done_with(buffer)

    def _hashed(self, index: int, buffer: mmap.mmap, length: int) -> None:
        self._hash_queued[index] -= length
        self._done_with(buffer)

    def _done_with(self, buffer: mmap.mmap) -> None:
        self._users[id(buffer)] -= 1
        if not self._users[id(buffer)]:
            del self._users[id(buffer)]
            self._buffers.give(buffer)
        behind = max([self._write_queued, *self._hash_queued])
        if self._paused and behind <= _MAX_IN_FLIGHT // 2:
            self._paused = False
            if self._receiving:
                self._resume()
        self._check_drained()

    # -- worker threads

    def _write(self, buffer: mmap.mmap, view: memoryview, offset: int) -> None:
        try:
            if self.error is None and not self._write_direct(view, offset):
                pwrite_all(self._fd, view, offset)
                if _start_writeback is not None:
                    _start_writeback(self._fd, offset, len(view))
        except OSError as exc:
            self.error = exc
        finally:
            self._reactor.callFromThread(self._written, buffer, len(view))

    def _write_direct(self, view: memoryview, offset: int) -> bool:
        if self._direct_fd is None or len(view) % DIRECT_ALIGN or offset % DIRECT_ALIGN:
            return False
        try:
            pwrite_all(self._direct_fd, view, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return False  # this filesystem or offset will not take it: write buffered
        return True

    def _hash(self, index: int, holder: HashHolder, buffer: mmap.mmap, view: memoryview) -> None:
        try:
            holder.final.update(view)
        finally:
            self._reactor.callFromThread(self._hashed, index, buffer, len(view))


@dataclass(frozen=True)
class SpooledChunk:
    """A chunk's bytes in a spool file, from its start.

    The engine owns the spool once it is handed one, and closes it when it is done with it
    (which may be after the request that brought it went away).
    """

    file: IO[bytes]
    size: int

    def close(self) -> None:
        self.file.close()


ChunkBody = PlacedChunk | SpooledChunk


@contextmanager
def closing_spool(body: ChunkBody) -> Iterator[None]:
    """Close a spooled chunk's spool when the engine is done with it, however that ends."""
    try:
        yield
    finally:
        if isinstance(body, SpooledChunk):
            body.close()
