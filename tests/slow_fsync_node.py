"""A storage node with slow directories, for tests: ``python -m tests.slow_fsync_node ARGS``.

Every ``os.fsync`` of a directory (the step that makes a rename durable) first sleeps
``PYARCHIVE_TEST_DIR_FSYNC_DELAY`` seconds (default 0.2), so a test can kill the node between
the renames of a batch confirm and its answer, every time rather than when the machine
happens to be slow. Files are fsynced at full speed; nothing else about the node changes.
"""

from __future__ import annotations

import os
import stat
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike


def _install(delay: float) -> None:
    real = os.fsync

    def slow_for_directories(fd: FileDescriptorLike) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        if stat.S_ISDIR(os.fstat(number).st_mode):
            time.sleep(delay)
        real(number)

    os.fsync = slow_for_directories


if __name__ == "__main__":
    _install(float(os.environ.get("PYARCHIVE_TEST_DIR_FSYNC_DELAY", "0.2")))
    from node.cli import main

    main()
