"""Login throttling: failed logins slow down the next attempt, per account and per address.

Each failure is a row of ``login_failures``; what they mean is a pure rule (``wait_after``).
An account gets a few free tries, then waits 1 s, 2 s, 4 s... up to ``cap``; an address
(a household behind one router) gets many more free tries and a shorter cap, so one member's
typing never locks the others out: every wait ends, and nothing is ever refused for good.
A successful login clears the account's failures (not the address's).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from common.db import Database, Txn
from common.errors import TooManyRequests

WINDOW = 15 * 60.0  # failures older than this no longer count


@dataclass(frozen=True)
class Policy:
    free: int  # failures that cost nothing
    cap: float  # the longest wait, seconds

    def wait_after(self, failures: int) -> float:
        """Seconds to wait after ``failures`` recent failures.

        >>> Policy(free=3, cap=60).wait_after(3)
        0.0
        >>> [Policy(free=3, cap=60).wait_after(n) for n in (4, 5, 6, 12)]
        [1.0, 2.0, 4.0, 60.0]
        """
        over = failures - self.free
        if over <= 0:
            return 0.0
        return float(min(self.cap, 2 ** min(over - 1, 30)))


ACCOUNT = Policy(free=4, cap=300.0)
ADDRESS = Policy(free=20, cap=60.0)


@dataclass(frozen=True)
class Failures:
    count: int
    last: float | None


def _failures(txn: Txn, column: str, value: str, since: float) -> Failures:
    assert column in {"username", "address"}
    row = txn.one(
        f"SELECT COUNT(*), MAX(at) FROM login_failures WHERE {column} = ? AND at > ?",
        (value, since),
    )
    assert row is not None
    return Failures(int(row[0]), None if row[1] is None else float(row[1]))


def recent_failures(
    txn: Txn, username: str, address: str, since: float
) -> tuple[Failures, Failures]:
    return _failures(txn, "username", username, since), _failures(txn, "address", address, since)


def record_failure(txn: Txn, username: str, address: str, at: float) -> None:
    txn.execute(
        "INSERT INTO login_failures (username, address, at) VALUES (?, ?, ?)",
        (username, address, at),
    )


def clear_account(txn: Txn, username: str) -> None:
    txn.execute("DELETE FROM login_failures WHERE username = ?", (username,))


def prune_failures(txn: Txn, before: float) -> int:
    return txn.execute("DELETE FROM login_failures WHERE at <= ?", (before,))


class LoginThrottle:
    def __init__(self, db: Database, clock: IReactorTime) -> None:
        self._db = db
        self._clock = clock

    async def check(self, username: str, address: str) -> None:
        """Refuse (429, ``retry_after``) while the account's or the address's wait runs."""
        now = self._clock.seconds()
        account, place = await self._db.run(recent_failures, username, address, now - WINDOW)
        ready = max(_ready_at(account, ACCOUNT), _ready_at(place, ADDRESS))
        if ready > now:
            wait = int(ready - now) + 1
            raise TooManyRequests(
                f"Too many failed logins; try again in {wait} s", retry_after=wait
            )

    async def failed(self, username: str, address: str) -> None:
        await self._db.run(record_failure, username, address, self._clock.seconds())

    async def succeeded(self, username: str) -> None:
        await self._db.run(clear_account, username)

    async def prune(self) -> int:
        return await self._db.run(prune_failures, self._clock.seconds() - WINDOW)


def _ready_at(failures: Failures, policy: Policy) -> float:
    if failures.last is None:
        return 0.0
    return failures.last + policy.wait_after(failures.count)
