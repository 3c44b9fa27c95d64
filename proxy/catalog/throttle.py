"""Login throttling: failed logins slow down the next attempt, per account and per address.

Each failure is a row of ``login_failures``; what they mean is a pure rule (``wait_after``).
An account gets a few free tries, then waits 1 s, 2 s, 4 s... up to ``cap``; an address
(a household behind one router) gets many more free tries and a shorter cap, so one member's
typing never locks the others out: every wait ends, and nothing is ever refused for good.
A successful login clears the account's failures (not the address's). Staff see the recent
failures per account and per address (``LoginThrottle.recent``) and may clear either's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from common.db import Database, Txn
from common.errors import TooManyRequests

if TYPE_CHECKING:
    from proxy.ops.systemlog import EventLog

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


def clear_account(txn: Txn, username: str) -> int:
    return txn.execute("DELETE FROM login_failures WHERE username = ?", (username,))


def clear_address(txn: Txn, address: str) -> int:
    return txn.execute("DELETE FROM login_failures WHERE address = ?", (address,))


@dataclass(frozen=True)
class Recent:
    """The recent failures of one account or one address, as staff see them."""

    key: str  # the username tried, or the address, as recorded
    count: int
    last: float
    until: float | None  # when its wait ends, if one runs now


RECENT_LIMIT = 100  # per kind, the most recently failing first


def _recent_by(txn: Txn, column: str, since: float, limit: int) -> list[tuple[str, int, float]]:
    assert column in {"username", "address"}
    rows = txn.all(
        f"SELECT {column}, COUNT(*), MAX(at) FROM login_failures WHERE at > ?"
        f" GROUP BY {column} ORDER BY 3 DESC, 1 LIMIT ?",
        (since, limit),
    )
    return [(str(key), int(count), float(last)) for key, count, last in rows]


def recent_by_kind(
    txn: Txn, since: float, limit: int
) -> tuple[list[tuple[str, int, float]], list[tuple[str, int, float]]]:
    return _recent_by(txn, "username", since, limit), _recent_by(txn, "address", since, limit)


def prune_failures(txn: Txn, before: float) -> int:
    return txn.execute("DELETE FROM login_failures WHERE at <= ?", (before,))


class LoginThrottle:
    def __init__(self, db: Database, clock: IReactorTime, syslog: EventLog | None = None) -> None:
        self._db = db
        self._clock = clock
        self._syslog = syslog

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

    async def recent(self, limit: int = RECENT_LIMIT) -> tuple[list[Recent], list[Recent]]:
        """Failures that still count (the last ``WINDOW``), per account and per address,
        the most recent first, each with the end of the wait it causes now, if any."""
        now = self._clock.seconds()
        accounts, places = await self._db.run(recent_by_kind, now - WINDOW, limit)
        return _seen(accounts, ACCOUNT, now), _seen(places, ADDRESS, now)

    async def clear_account(self, username: str, by: str) -> int:
        """Forget an account's failures (its wait ends at once); how many there were."""
        cleared = await self._db.run(clear_account, username)
        await self._note("account", username, cleared, by)
        return cleared

    async def clear_address(self, address: str, by: str) -> int:
        """Forget an address's failures (its wait ends at once); how many there were."""
        cleared = await self._db.run(clear_address, address)
        await self._note("address", address, cleared, by)
        return cleared

    async def _note(self, kind: str, key: str, cleared: int, by: str) -> None:
        if self._syslog is None:
            return
        await self._syslog.record(
            "info", "auth.throttle_cleared",
            f"{by} cleared {cleared} failed login(s) of {kind} {key!r}",
            kind=kind, key=key, cleared=cleared, by=by,
        )  # fmt: skip


def _seen(rows: list[tuple[str, int, float]], policy: Policy, now: float) -> list[Recent]:
    found = []
    for key, count, last in rows:
        ends = last + policy.wait_after(count)
        found.append(Recent(key, count, last, ends if ends > now else None))
    return found


def _ready_at(failures: Failures, policy: Policy) -> float:
    if failures.last is None:
        return 0.0
    return failures.last + policy.wait_after(failures.count)
