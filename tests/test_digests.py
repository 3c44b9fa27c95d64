"""common.digests: md5 and sha256 in one read on two threads, checked against hashlib."""

from __future__ import annotations

import doctest
import hashlib
import io
import os
import threading
import tracemalloc
from pathlib import Path

import pytest

import common.digests
from common.digests import Digests, file_digests

BLOCK = 64 * 1024


def expected(data: bytes) -> Digests:
    return Digests(len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(
    "size",
    [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK - 1, 2 * BLOCK, 2 * BLOCK + 1, 5 * BLOCK + 7],
)
def test_the_digests_of_a_file_of_any_size_are_hashlibs(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as file:
        assert file_digests(file, BLOCK) == expected(data)


def test_the_default_block_size_gives_the_same_digests(tmp_path: Path) -> None:
    data = os.urandom(common.digests.BLOCK_SIZE * 2 + 12345)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as file:
        assert file_digests(file) == expected(data)


class ShortReads(io.RawIOBase):
    """A raw file that hands out at most ``most`` bytes per read, as a pipe or a signal can."""

    def __init__(self, data: bytes, most: int) -> None:
        self._data = memoryview(data)
        self._most = most

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._most, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


def test_short_reads_do_not_end_the_file_early() -> None:
    data = os.urandom(3 * BLOCK + 5)
    assert file_digests(ShortReads(data, 1000), BLOCK) == expected(data)


def test_hashing_starts_where_the_file_is_positioned() -> None:
    data = os.urandom(2 * BLOCK)
    stream = io.BytesIO(data)
    stream.seek(10)
    assert file_digests(stream, BLOCK) == expected(data[10:])


def test_a_file_of_one_block_is_hashed_without_starting_threads() -> None:
    before = threading.active_count()
    seen: list[int] = []

    class Watching(io.BytesIO):
        def readinto(self, buffer: object) -> int:  # type: ignore[override]
            seen.append(threading.active_count())
            return super().readinto(buffer)  # type: ignore[arg-type]

    assert file_digests(Watching(b"x" * (BLOCK - 1)), BLOCK) == expected(b"x" * (BLOCK - 1))
    assert seen and max(seen) == before


def test_a_read_error_propagates_and_leaves_no_thread_behind() -> None:
    class Failing(io.BytesIO):
        reads = 0

        def readinto(self, buffer: object) -> int:  # type: ignore[override]
            self.reads += 1
            if self.reads == 3:
                raise OSError("disk gone")
            return super().readinto(buffer)  # type: ignore[arg-type]

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(OSError, match="disk gone"):
        file_digests(Failing(os.urandom(5 * BLOCK)), BLOCK)
    assert {t.name for t in threading.enumerate()} <= before


def test_memory_stays_at_two_blocks_whatever_the_file_size() -> None:
    class Zeros(io.RawIOBase):
        def __init__(self, size: int) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            count = min(len(buffer), self.left)
            self.left -= count
            return count  # the buffer already holds zeros

    size = 64 * BLOCK  # 4 MiB through 64 KiB blocks
    tracemalloc.start()
    try:
        found = file_digests(Zeros(size), BLOCK)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == expected(bytes(size))
    assert peak < 2 * BLOCK + 256 * 1024


def test_a_block_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        file_digests(io.BytesIO(b""), 0)


def test_the_examples_in_the_digests_docstrings_hold() -> None:
    results = doctest.testmod(common.digests)
    assert results.attempted >= 1 and results.failed == 0
