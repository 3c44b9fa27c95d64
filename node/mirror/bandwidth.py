"""A per-node bandwidth cap shared by every S3 transfer, waited on in worker threads.

The mirror's worker threads ask ``take(n)`` before sending or after fetching ``n`` bytes; the
bucket lets ``rate`` bytes a second through on average (plus a small burst) and makes the
caller sleep for the rest. Callers go into debt in turn, so concurrent transfers share the
rate instead of racing for it. Never call ``take`` on the reactor thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Closed(Exception):
    """The bucket was closed (the node is stopping) while a transfer waited."""


class TokenBucket:
    """``rate`` bytes per second on average, ``burst`` at most without waiting.

    ``rate`` 0 means no limit: ``take`` returns at once.
    """

    def __init__(
        self,
        rate: int,
        *,
        burst: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else min(rate, 256 * 1024)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._stamp = monotonic()
        self._closed = threading.Event()

    def take(self, amount: int) -> float:
        """Wait until ``amount`` more bytes fit under the rate; the seconds waited.

        Raises ``Closed`` if the bucket is closed before (or while) waiting.
        """
        if self._closed.is_set():
            raise Closed("the node is stopping")
        if self.rate <= 0 or amount <= 0:
            return 0.0
        with self._lock:
            now = self._monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0 and self._closed.wait(wait):
            raise Closed("the node is stopping")
        return wait

    def close(self) -> None:
        """Wake every waiting transfer with ``Closed`` (so stopping never waits on the cap)."""
        self._closed.set()
