"""The md5 (and sha256) of a whole file, computed in a thread while its chunks are on the
wire: the server checks the md5 at completion; the sha256 lets a caller compare what it read
with what the server stored."""

from __future__ import annotations

import hashlib
import threading

# hashlib releases the GIL while it hashes a piece; a piece is small enough to stop quickly.
_PIECE = 4 << 20


class BackgroundMd5:
    """Hash ``view`` from start to end in a daemon thread.

    The hash does not follow what was sent: every upload, resumed or not, ends with the md5 of
    the whole file, so the thread simply reads the file once, in order, overlapping the network
    (and warming the page cache for the sender when it runs ahead).
    Call :meth:`stop` before releasing ``view``.
    """

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256()
        self._stopping = threading.Event()
        self._complete = False
        self._thread = threading.Thread(target=self._run, name="pyarchive-md5", daemon=True)
        self._thread.start()

    def hexdigest(self) -> str:
        """Wait for the whole view to be hashed, and return its md5."""
        self._thread.join()
        if not self._complete:
            raise RuntimeError("md5 was stopped, or failed, before the end of the file")
        return self._md5.hexdigest()

    def sha256_hexdigest(self) -> str:
        """The sha256 of the same bytes (after :meth:`hexdigest` has waited for the end)."""
        self.hexdigest()
        return self._sha256.hexdigest()

    def stop(self) -> None:
        """Stop hashing (if still running) and wait for the thread to let go of the view."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        for start in range(0, len(self._view), _PIECE):
            if self._stopping.is_set():
                return
            with self._view[start : start + _PIECE] as piece:
                self._md5.update(piece)
                self._sha256.update(piece)
        self._complete = True
