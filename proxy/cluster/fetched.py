"""A blob's content fetched back from a node for repair: ``FetchedFile`` writes the pieces
in order on the thread pool, then checks size and sha256 before moving the file into place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread

from common.durable import fsync_dir


class FetchedFile:
    """Writes downloaded pieces in order on one thread-pool lane, then checks the result."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] | None = None
        self._failed: BaseException | None = None
        self._pending: Deferred[None] = succeed(None)

    def write(self, piece: bytes) -> None:
        self._pending.addCallback(lambda _: deferToThread(self._write, piece))

    def _open(self) -> IO[bytes]:
        if self._file is None:
            # A proxy rebuilt from S3 has none of blobs/'s fan-out directories yet.
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._path, "wb")
        return self._file

    def _write(self, piece: bytes) -> None:
        self._open().write(piece)

    def close_and_check(self, size: int, sha256: str, target: Path) -> Deferred[None]:
        """After every write: verify size and sha256, then move the file into place."""
        self._pending.addCallback(
            lambda _: deferToThread(self._finish_and_check, size, sha256, target)
        )
        return self._pending

    def _finish_and_check(self, size: int, sha256: str, target: Path) -> None:
        self._file = self._open()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = hashlib.sha256()
        with open(self._path, "rb") as source:
            while piece := source.read(1 << 20):
                digest.update(piece)
        if self._path.stat().st_size != size or digest.hexdigest() != sha256:
            raise ValueError("restored copy does not match its size and sha256")
        os.replace(self._path, target)
        fsync_dir(target.parent)

    def discard(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
