"""md5 and sha256 of a file in one read, the two hashes computed side by side on two threads.

hashlib releases the GIL while it hashes a buffer larger than 2 KiB, so md5 and sha256 of the
same block run at once on two cores, and the next block is read meanwhile: a file costs about
the time of its slower hash instead of the sum of both. Memory is two blocks whatever the
file's size (one being hashed, one being read into). Blocking; call it on a thread-pool thread.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

BLOCK_SIZE = 4 * 1024 * 1024
"""How much is read, and handed to both hashes, at a time."""


class ReadsInto(Protocol):
    """A binary file, or anything else that reads into a buffer (None: nothing yet)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class Digests:
    """Hex digests of some content, and its length in bytes."""

    size: int
    md5: str
    sha256: str


def file_digests(file: ReadsInto, block_size: int = BLOCK_SIZE) -> Digests:
    """md5 and sha256 of what ``file`` holds from its current position to its end.

    ``file`` is best opened unbuffered (``open(path, "rb", buffering=0)``): blocks are read
    straight into the two buffers. A file no longer than one block is hashed on the calling
    thread: starting threads would cost more than they save.

    >>> import io
    >>> found = file_digests(io.BytesIO(b"abc"))
    >>> found.size, found.md5[:8], found.sha256[:8]
    (3, '90015098', 'ba7816bf')
    """
    if block_size < 1:
        raise ValueError(f"block_size must be positive, not {block_size}")
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    first = bytearray(block_size)
    count = _fill(file, first)
    size = count
    if count < block_size:  # the whole file is in this one block
        view = memoryview(first)[:count]
        md5.update(view)
        sha256.update(view)
        return Digests(size, md5.hexdigest(), sha256.hexdigest())
    buffers = (first, bytearray(block_size))
    with ThreadPoolExecutor(2, thread_name_prefix="digests") as hashers:
        current = 0
        while count:
            view = memoryview(buffers[current])[:count]
            pending: tuple[Future[None], Future[None]] = (
                hashers.submit(md5.update, view),
                hashers.submit(sha256.update, view),
            )
            try:
                # The other buffer is free: both hashes are done with it.
                count = _fill(file, buffers[1 - current])
            finally:
                for hashing in pending:
                    hashing.result()
            size += count
            current = 1 - current
    return Digests(size, md5.hexdigest(), sha256.hexdigest())


def _fill(file: ReadsInto, buffer: bytearray) -> int:
    """Read into all of ``buffer`` unless the file ends first; how many bytes were read."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        count = file.readinto(view[filled:])
        if not count:  # the end (0), or a non-blocking file with nothing yet (None)
            break
        filled += count
    return filled
