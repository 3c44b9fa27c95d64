"""Making a rename or a new file's name durable: fsync the directory that holds it.

Blocking; call it on a thread-pool thread, as the proxy's staging and the nodes' stores do.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush ``path``'s directory entries (after a create, rename or unlink in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
