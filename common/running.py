"""Running a service in the foreground until SIGINT/SIGTERM (the proxy's and a node's serve)."""

from __future__ import annotations

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

    reactor.callWhenRunning(lambda: ensureDeferred(start()))
    reactor.addSystemEventTrigger("before", "shutdown", lambda: ensureDeferred(service.stop()))
    reactor.run()
