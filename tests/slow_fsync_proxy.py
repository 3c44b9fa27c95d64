"""The proxy, built for tests with a slow-disk stand-in: ``python -m tests.slow_fsync_proxy``.

Every ``os.fdatasync`` (the call that makes a chunk's bytes durable before its offset is
committed) first sleeps ``PYARCHIVE_TEST_FSYNC_DELAY`` seconds, and writes a ``start`` and an
``end`` line (id, ``time.monotonic()``) to ``PYARCHIVE_TEST_FSYNC_LOG``, so a test can cut a
connection while a chunk is being fsynced and prove it did. The monotonic clock is the
machine's, shared by the test process and this one. Nothing else about the proxy changes.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import HasFileno


def _install(delay: float, log_path: str) -> None:
    real = os.fdatasync
    numbers = itertools.count(1)
    lock = threading.Lock()

    def note(line: str) -> None:
        with lock, open(log_path, "a") as log:
            log.write(line + "\n")

    def slow_fdatasync(fd: int | HasFileno) -> None:
        number = next(numbers)
        note(f"start {number} {time.monotonic()}")
        time.sleep(delay)
        real(fd)
        note(f"end {number} {time.monotonic()}")

    os.fdatasync = slow_fdatasync


if __name__ == "__main__":
    _install(
        float(os.environ.get("PYARCHIVE_TEST_FSYNC_DELAY", "0.3")),
        os.environ["PYARCHIVE_TEST_FSYNC_LOG"],
    )
    from proxy.cli import main

    main()
