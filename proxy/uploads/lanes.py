"""Serial lanes: ordered work on a shared thread pool."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool


class SerialLane:
    """Runs submitted calls one after another, in order, on a shared thread pool.

    At most one pool thread works for a lane at a time, so a lane is a cheap, ordered
    "thread of its own" that gives its thread back whenever it has nothing to do.
    """

    def __init__(self, pool: ThreadPool) -> None:
        self._pool = pool
        self._tasks: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._tasks.append((fn, args))
            if self._running:
                return
            self._running = True
        self._pool.callInThread(self._drain)

    def idle(self, reactor: IReactorFromThreads) -> Deferred[None]:
        """Fires (on the reactor thread) once everything submitted before this call has run."""
        done: Deferred[None] = Deferred()
        self.submit(reactor.callFromThread, done.callback, None)
        return done

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._tasks:
                    self._running = False
                    return
                fn, args = self._tasks.popleft()
            fn(*args)
