"""At most one event per key and interval (upload progress: once a second per upload)."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

_TIDY_AT = 1024  # keys remembered before the ones whose interval has passed are forgotten


class Throttle:
    """``due(key)`` says whether an event for ``key`` may be recorded now; ``done(key)``
    notes that one was. Memory stays small: a key whose interval has passed is due anyway,
    so it is forgotten when the table grows."""

    def __init__(self, clock: IReactorTime, interval: float = 1.0) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        last = self._last.get(key)
        return last is None or self._clock.seconds() - last >= self._interval

    def done(self, key: str) -> None:
        now = self._clock.seconds()
        if len(self._last) >= _TIDY_AT:
            self._last = {k: t for k, t in self._last.items() if now - t < self._interval}
        self._last[key] = now
