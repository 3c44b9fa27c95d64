"""How long to wait before trying again after failures in a row: one rule for every retry.

Used by the proxy (failed replica copies, replica and S3 deletions) and by the nodes' mirror
loop, so a wait reads the same in either role's log.
"""

from __future__ import annotations


def retry_delay(attempt: int, base: float = 5.0, cap: float = 600.0) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row before the next try.

    Attempt 1 (the first failure) waits ``base``, each further failure doubles the wait, and
    no wait is longer than ``cap``; an ``attempt`` below 1 counts as 1.

    >>> [retry_delay(n) for n in (1, 2, 3, 8, 9, 50)]
    [5.0, 10.0, 20.0, 600.0, 600.0, 600.0]
    >>> retry_delay(0), retry_delay(3, base=1.0, cap=3.0)
    (5.0, 3.0)
    """
    return float(min(base * 2.0 ** min(max(attempt - 1, 0), 60), cap))
