"""Work that must run to its end even when the request that started it goes away.

Klein cancels a route's Deferred when the client's connection is lost, and Twisted passes that
cancellation down to whatever the coroutine awaits. For most awaits that is right. For an
upload's critical section it is not: once a request holds the upload's claim and has started
to fsync and commit a chunk, stopping half-way would leave the claim held for ever (nobody is
left to release it) or release it while a transaction still writes on a pool thread. So the
critical section runs shielded: the request stops waiting, the work finishes (commits or rolls
back as a whole) and releases the claim itself.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from common.errors import ApiError

T = TypeVar("T")
log = Logger()


def shielded(work: Coroutine[Any, Any, T] | Deferred[T]) -> Deferred[T]:
    """A Deferred for ``work`` whose cancellation does not reach ``work``.

    Cancelling the returned Deferred fails it with ``CancelledError`` at once; ``work`` runs
    on, and its outcome is dropped (an unexpected failure is logged, not lost).
    """
    inner: Deferred[T] = ensureDeferred(work)
    outer: Deferred[T] = Deferred()

    def settle(result: T | Failure) -> None:
        if not outer.called:
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)
        elif isinstance(result, Failure) and not result.check(ApiError):
            log.failure("work went on after its request was cancelled, and failed", result)

    inner.addBoth(settle)
    return outer
