"""The job scheduler's pure rules: what an interval may be, how a run's result or error is
written into ``last_result``, and when a ``LoopingCall`` ticks next."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from common.config import parse_duration
from common.errors import BadRequest

MAX_INTERVAL = 30 * 86400.0
QUIET_BELOW = 60.0  # successful runs of jobs more frequent than this stay out of the system log
_MAX_RESULT = 1000
Work = Callable[[], Awaitable[Any]]


def parse_interval(value: object) -> float | None:
    """An interval in seconds from a JSON number or a duration text (``90``, ``10m``, ``1h``);
    None (null) means "back to the configured default".

    >>> parse_interval(90), parse_interval("10m"), parse_interval(None)
    (90.0, 600.0, None)
    """
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds) or not 0 < seconds <= MAX_INTERVAL:
        raise BadRequest(
            "interval must be a number of seconds (or a duration like 10m) above 0 and at "
            "most 30 days, or null for the default",
            field="interval",
        )
    return seconds


def summary(result: Any) -> str:
    """What a run's result looks like in ``last_result``: short JSON, or nothing for None.

    >>> summary({"checked": 3}), summary(None)
    ('{"checked": 3}', '')
    """
    if result is None:
        return ""
    try:
        text = json.dumps(result, default=str, sort_keys=True)
    except ValueError:
        text = repr(result)
    return text[:_MAX_RESULT]


def next_tick(start: float, interval: float, now: float) -> float:
    """When a ``LoopingCall`` started at ``start`` runs next, seen at ``now`` (it keeps to
    multiples of ``interval`` from its start, skipping the ones a long run overran).

    >>> next_tick(100.0, 10.0, 100.0), next_tick(100.0, 10.0, 123.5)
    (110.0, 130.0)
    """
    return now + (interval - (now - start) % interval)


def error_text(exc: BaseException) -> str:
    """A failed run's ``last_result``: the error's class and message.

    >>> error_text(ValueError("no bucket"))
    'ValueError: no bucket'
    """
    return f"{type(exc).__name__}: {exc}"[:_MAX_RESULT]
