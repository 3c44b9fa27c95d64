"""Running a service in the foreground until SIGINT/SIGTERM (the proxy's and a node's serve)."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import globalLogBeginner, textFileLogObserver


class Service(Protocol):
    def start(self) -> Coroutine[Any, Any, IListeningPort]: ...

    def stop(self) -> Coroutine[Any, Any, None]: ...


PRIVATE_UMASK = 0o077


def keep_files_private() -> None:
    """Make every file and folder this process creates from now on private to its user.

    The proxy's data directory holds password hashes (the SQLite database), key files and
    stored data; a node's holds replicas and the rsync secrets. Files opened with an explicit
    mode (0o644, 0o640) are narrowed too, and so are those of children such as the node's
    rsync daemon, which inherit the mask.
    """
    os.umask(PRIVATE_UMASK)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 16 << 20  # below one password hash's block (common.passwords.MEMORY_KIB)
TRIM_THRESHOLD = 32 << 20


def return_large_blocks() -> bool:
    """Have glibc give blocks of 16 MiB and more back to the system when they are freed.

    An argon2 hash (a login, a password change) allocates one 19 MiB block. By default glibc
    raises its mmap threshold to the size of the largest block freed so far, so from the second
    hash on that block comes from a heap, and a heap keeps it: one login left the proxy 19 MiB
    larger for the rest of its life (scripts/bench scale, 2026-12-02). A fixed threshold keeps
    such blocks mmapped, so freeing one unmaps it; the trim threshold is set to what glibc's
    own adjustment would make of that threshold, so smaller blocks (8 MiB upload and S3 part
    buffers) stay in the heap as before. Returns False where the C library has no mallopt
    (not glibc): nothing is changed there.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def begin_logging() -> None:
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)


def serve_forever(
    reactor: Any, service: Service, program: str, announce: Callable[[Any], str]
) -> None:
    """Start ``service`` once the reactor runs, print ``announce(address)``, stop it before
    the reactor shuts down. A start that fails prints one line and exits with status 1."""

    async def start() -> None:
        try:
            port = await service.start()
        except Exception as exc:
            print(f"{program}: cannot start: {exc}", file=sys.stderr, flush=True)
            reactor.stop()
            os._exit(1)
        print(announce(port.getHost()), flush=True)
        # What start-up built (modules, routes, settings) lives as long as the process: out of
        # the collector's sight, a collection no longer walks all of it. An upload makes many
        # short-lived objects (Deferreds, callbacks) and so collections; freezing took about
        # 0.1 CPU s/GiB off the reactor thread (scripts/bench upload --client requests).
        gc.freeze()

    return_large_blocks()
    reactor.callWhenRunning(lambda: ensureDeferred(start()))
    reactor.addSystemEventTrigger("before", "shutdown", lambda: ensureDeferred(service.stop()))
    reactor.run()
