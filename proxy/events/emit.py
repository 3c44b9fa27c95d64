"""Recording events inside the transactions that make the changes, and waking readers after.

Code that changes something a user sees makes an ``Emitter`` on the reactor thread, passes it
into its transaction function, which records events with it (``emit``, ``for_blob``), and
once the transaction has committed hands ``emitter.users`` to its ``Waker`` (the hub), which
wakes the streams and long polls of those users in this process. Readers in other proxies
find the events by re-reading the table (``proxy.events.hub``). An event recorded in a
transaction that rolls back was never there: no reader can have seen it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.logger import Logger

from common.db import Database, Txn
from proxy.catalog import store
from proxy.events import eventstore


class Waker(Protocol):
    """What recording code needs of the hub: wake these users' readers (reactor thread)."""

    def wake(self, user_ids: Iterable[int]) -> None: ...


class NoWaking:
    """For parts built without a hub (tests, command-line tools): readers poll instead."""

    def wake(self, user_ids: Iterable[int]) -> None:
        pass


NO_WAKING = NoWaking()
log = Logger()


@dataclass
class Emitter:
    """Records one transaction's events at one time; remembers whose they were."""

    now: float
    users: set[int] = field(default_factory=set)

    def emit(self, txn: Txn, user_id: int, kind: str, **data: Any) -> int:
        seq = eventstore.record(txn, user_id, kind, data, self.now)
        self.users.add(user_id)
        return seq

    def for_blob(self, txn: Txn, blob_id: int, kind: str, **data: Any) -> None:
        """One event per (owner, file) whose current version is this content (a blob may be
        shared by several files and users), each naming its ``file_id`` and ``path``."""
        for user_id, file_id, path in store.files_using_blob(txn, blob_id):
            self.emit(txn, user_id, kind, file_id=file_id, path=path, **data)

    def for_staff(self, txn: Txn, kind: str, **data: Any) -> None:
        """One event in the feed of every active staff account (``kinds.STAFF_ONLY``)."""
        for user_id in store.staff_ids(txn):
            self.emit(txn, user_id, kind, **data)


async def tell_staff(db: Database, waker: Waker, now: float, kind: str, **data: Any) -> None:
    """One staff-only event in a transaction of its own, its readers woken; a failure is
    logged, never raised (telling staff must not break what is being told)."""
    emitter = Emitter(now)
    try:
        await db.run(lambda txn: emitter.for_staff(txn, kind, **data))
    except Exception:
        log.failure("could not tell staff {kind}", kind=kind)
    waker.wake(emitter.users)
