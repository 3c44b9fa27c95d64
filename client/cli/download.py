"""``pyarchive download``: a stored file to disk, in parallel ranges, resumable, verified.

The file is cut into blocks (8 MiB); ``connections`` threads fetch them by Range, each with
its own connection, straight from a storage node once the proxy has redirected there
(``client.RangeReader``). Bytes go into ``NAME.pyarchive-part`` at their offset; a block
is recorded as done in ``NAME.pyarchive-part.json``, with its sha256, only after it is on
disk (fsync). Run again after an interruption, the command re-reads the blocks recorded as
done and keeps those whose sha256 still matches: a damaged partial file is fetched again
where it is damaged, not trusted. Only when the whole file's sha256 equals the server's is
the partial file renamed over the destination, so what the user had there is never replaced
by something unverified; otherwise it is fetched once more from scratch, and then the
command fails, leaving the destination untouched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client._download import RangeReader
from client._upload import backoff
from client.api import PyArchiveClient
from client.errors import ApiError, ProtocolError

BLOCK = 8 * 2**20
PART_SUFFIX = ".pyarchive-part"


@dataclass(frozen=True)
class Wanted:
    file_id: str
    size: int
    sha256: str


@dataclass
class State:
    """What is known to be on disk in the partial file, and of which content."""

    wanted: Wanted
    done: dict[int, str] = field(default_factory=dict)  # block index -> its sha256

    def to_json(self) -> bytes:
        return json.dumps(
            {"file_id": self.wanted.file_id, "size": self.wanted.size,
             "sha256": self.wanted.sha256, "block": BLOCK,
             "done": {str(k): v for k, v in sorted(self.done.items())}},
        ).encode()  # fmt: skip


def blocks(size: int) -> list[tuple[int, int, int]]:
    """(index, first, last) of each block of a ``size``-byte file.

    >>> blocks(0), blocks(5), blocks(BLOCK + 1)[1]
    ([], [(0, 0, 4)], (1, 8388608, 8388608))
    """
    return [
        (index, first, min(first + BLOCK, size) - 1)
        for index, first in enumerate(range(0, size, BLOCK))
    ]


class Partial:
    """The partial file and its state beside the destination."""

    def __init__(self, dest: Path, wanted: Wanted) -> None:
        self.dest = dest
        self.data = dest.with_name(dest.name + PART_SUFFIX)
        self.meta = dest.with_name(dest.name + PART_SUFFIX + ".json")
        self.state = State(wanted)
        self._lock = threading.Lock()

    def open(self) -> int:
        """The partial file, opened for positioned writes; what was done before is reloaded
        when it was of this very content, and checked block by block."""
        previous = self._load()
        fd = os.open(self.data, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, self.state.wanted.size)
        for index, digest in previous.items():
            if self._block_sha256(fd, index) == digest:
                self.state.done[index] = digest
        return fd

    def _load(self) -> dict[int, str]:
        try:
            loaded: Any = json.loads(self.meta.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        wanted = self.state.wanted
        same = (
            isinstance(loaded, dict)
            and loaded.get("sha256") == wanted.sha256
            and loaded.get("size") == wanted.size
            and loaded.get("block") == BLOCK
        )
        if not same:
            return {}
        return {int(k): str(v) for k, v in dict(loaded.get("done") or {}).items()}

    def _block_sha256(self, fd: int, index: int) -> str:
        first = index * BLOCK
        size = min(BLOCK, self.state.wanted.size - first)
        digest = hashlib.sha256()
        offset = first
        while offset < first + size:
            piece = os.pread(fd, min(1 << 20, first + size - offset), offset)
            if not piece:
                break
            digest.update(piece)
            offset += len(piece)
        return digest.hexdigest()

    def record(self, index: int, digest: str) -> None:
        """Block ``index`` is on disk (fsynced by the caller): say so, atomically."""
        with self._lock:
            self.state.done[index] = digest
            temporary = self.meta.with_name(self.meta.name + ".tmp")
            temporary.write_bytes(self.state.to_json())
            os.replace(temporary, self.meta)

    def whole_sha256(self, fd: int) -> str:
        digest = hashlib.sha256()
        offset = 0
        while piece := os.pread(fd, 1 << 20, offset):
            digest.update(piece)
            offset += len(piece)
        return digest.hexdigest()

    def discard(self) -> None:
        for path in (self.data, self.meta):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def finish(self) -> None:
        """The verified partial file becomes the destination (one rename)."""
        os.replace(self.data, self.dest)
        with contextlib.suppress(FileNotFoundError):
            self.meta.unlink()


class Mismatch(Exception):
    pass


@dataclass
class Fetch:
    server: str
    token: str
    wanted: Wanted
    connections: int
    timeout: float
    on_bytes: Callable[[int], None]
    note: Callable[[str], None] = lambda line: None
    sleep: Callable[[float], None] = time.sleep

    def into(self, partial: Partial) -> None:
        """Fetch what is missing, check the whole file, and rename it into place; a file whose
        sha256 does not match is fetched afresh once, then ``Mismatch``."""
        for attempt in (1, 2):
            fd = partial.open()
            try:
                kept = partial.state.done
                if kept:
                    total = len(blocks(self.wanted.size))
                    self.note(f"resumed: kept {len(kept)} of {total} blocks already on disk")
                self.on_bytes(sum(min(BLOCK, self.wanted.size - i * BLOCK) for i in kept))
                self._missing(fd, partial)
                os.fsync(fd)
                got = partial.whole_sha256(fd)
            finally:
                os.close(fd)
            if got == self.wanted.sha256:
                partial.finish()
                return
            partial.discard()
            self.note("the whole file did not match the server's sha256: fetching it again")
            if attempt == 2:
                raise Mismatch(f"sha256 {got} is not the server's {self.wanted.sha256}")

    def _missing(self, fd: int, partial: Partial) -> None:
        work: queue.Queue[tuple[int, int, int]] = queue.Queue()
        for block in blocks(self.wanted.size):
            if block[0] not in partial.state.done:
                work.put(block)
        failures: list[BaseException] = []
        threads = [
            threading.Thread(
                target=self._worker,
                args=(fd, partial, work, failures),
                daemon=True,
                name=f"download-{n}",
            )
            for n in range(max(1, min(self.connections, work.qsize())))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # lets Ctrl-C through
        if failures:
            raise failures[0]

    def _worker(
        self,
        fd: int,
        partial: Partial,
        work: queue.Queue[tuple[int, int, int]],
        failures: list[BaseException],
    ) -> None:
        try:
            with PyArchiveClient(self.server, self.token, timeout=self.timeout) as client:
                reader = client.range_reader(self.wanted.file_id)
                while not failures:
                    try:
                        index, first, last = work.get_nowait()
                    except queue.Empty:
                        return
                    digest = self._block(reader, fd, partial, first, last)
                    os.fsync(fd)
                    partial.record(index, digest)
        except BaseException as error:
            failures.append(error)

    def _block(self, reader: RangeReader, fd: int, partial: Partial, first: int, last: int) -> str:
        """One block written at its place; its sha256. A failure the network may cure (a
        reset, a timeout, a 5xx) is retried from the block's start, with backoff, for as long
        as it takes; a refusal (4xx) or a local error (a full disk) ends the download."""
        failures = 0
        while True:
            sink = _BlockSink(fd, first, str(partial.data), self.on_bytes)
            try:
                reader.read(first, last, sink)
                return sink.digest.hexdigest()
            except ApiError as error:
                if error.status < 500:
                    raise
            except (ConnectionError, TimeoutError, http.client.HTTPException, ProtocolError):
                pass
            self.on_bytes(first - sink.offset)  # those bytes will come again
            failures += 1
            self.sleep(backoff(failures))


class _BlockSink:
    """Writes a block's pieces at their offsets, hashing them, counting them as progress."""

    def __init__(self, fd: int, first: int, name: str, on_bytes: Callable[[int], None]) -> None:
        self.fd = fd
        self.offset = first
        self.name = name
        self.digest = hashlib.sha256()
        self.on_bytes = on_bytes

    def __call__(self, piece: memoryview) -> None:
        written = os.pwrite(self.fd, piece, self.offset)
        if written != len(piece):
            raise OSError(errno.ENOSPC, "short write", self.name)
        self.digest.update(piece)
        self.offset += written
        self.on_bytes(written)
