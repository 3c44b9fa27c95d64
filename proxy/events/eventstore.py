"""SQL for the live events: the ``events`` table and each user's ``event_counters`` row.

An event's id is its sequence number among its user's events. It is taken by an upsert that
row-locks the user's counter until the recording transaction ends, so one user's events
commit in the order of their ids (on PostgreSQL a global serial could commit 8 before 7, and
a reader at 8 would never see 7). The counter also keeps ``pruned_through``, the newest id
pruned, so a cursor older than what is kept is told to reset instead of silently skipping.

Every function takes a ``Txn`` first and runs inside ``Database.run``; recording runs inside
the transaction that makes the change, so an event is durable exactly when the change is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.db import Txn

_IN_ONE_QUERY = 500  # user ids per ``IN (...)``


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class Slice:
    """What one read after a cursor found (at most ``limit`` events)."""

    events: tuple[Event, ...]
    head: int  # the user's newest event id at the time of the read
    reset: bool  # the cursor is older than what is kept, or newer than the head
    cursor: int  # where the reader is after this slice: the next read starts here


def record(txn: Txn, user_id: int, kind: str, data: dict[str, Any], now: float) -> int:
    """Append one event for ``user_id``; its id. One upsert and one insert, nothing more."""
    seq = txn.scalar(
        "INSERT INTO event_counters (user_id, last_seq) VALUES (?, 1) ON CONFLICT (user_id)"
        " DO UPDATE SET last_seq = event_counters.last_seq + 1 RETURNING last_seq",
        (user_id,),
    )
    txn.execute(
        "INSERT INTO events (user_id, seq, type, data, created_at) VALUES (?, ?, ?, ?, ?)",
        (user_id, int(seq), kind, json.dumps(data, sort_keys=True, separators=(",", ":")), now),
    )
    return int(seq)


def _counter(txn: Txn, user_id: int) -> tuple[int, int]:
    row = txn.one(
        "SELECT last_seq, pruned_through FROM event_counters WHERE user_id = ?", (user_id,)
    )
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def head(txn: Txn, user_id: int) -> int:
    """The user's newest event id (0 before the first)."""
    return _counter(txn, user_id)[0]


def heads(txn: Txn, user_ids: Sequence[int]) -> dict[int, int]:
    """The newest event id of each of these users (missing: none yet)."""
    found: dict[int, int] = {}
    for start in range(0, len(user_ids), _IN_ONE_QUERY):
        part = list(user_ids[start : start + _IN_ONE_QUERY])
        marks = ", ".join("?" for _ in part)
        rows = txn.all(
            f"SELECT user_id, last_seq FROM event_counters WHERE user_id IN ({marks})", part
        )
        found.update({int(row[0]): int(row[1]) for row in rows})
    return found


def read_since(txn: Txn, user_id: int, since: int, limit: int) -> Slice:
    """The user's events after ``since``, oldest first, or a reset.

    The events are read before the counter: on PostgreSQL each statement sees the database
    as it is when the statement starts, so a prune that commits in between shows in the
    counter (a reset) rather than as a silent gap in the events.
    """
    rows = txn.all(
        "SELECT seq, type, data, created_at FROM events WHERE user_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (user_id, since, limit),
    )
    newest, pruned_through = _counter(txn, user_id)
    if since > newest or since < pruned_through:
        return Slice((), newest, True, newest)
    events = tuple(Event(int(r[0]), r[1], json.loads(r[2]), float(r[3])) for r in rows)
    return Slice(events, newest, False, events[-1].seq if events else since)


def users_with_events_before(txn: Txn, before: float, limit: int = 500) -> list[int]:
    rows = txn.all(
        "SELECT DISTINCT user_id FROM events WHERE created_at < ? LIMIT ?", (before, limit)
    )
    return [int(row[0]) for row in rows]


def prune_user(txn: Txn, user_id: int, before: float) -> int:
    """Drop the user's events recorded before ``before`` (and any older id); how many went.

    The counter row is locked first, as recording locks it, and remembers the newest id
    pruned: the kept events stay one unbroken run of ids.
    """
    txn.one("SELECT last_seq FROM event_counters WHERE user_id = ?" + txn.for_update, (user_id,))
    through = txn.scalar(
        "SELECT MAX(seq) FROM events WHERE user_id = ? AND created_at < ?", (user_id, before)
    )
    if through is None:
        return 0
    txn.execute(
        "UPDATE event_counters SET pruned_through = ? WHERE user_id = ? AND pruned_through < ?",
        (int(through), user_id, int(through)),
    )
    return txn.execute("DELETE FROM events WHERE user_id = ? AND seq <= ?", (user_id, int(through)))


def drop_kinds(txn: Txn, user_id: int, kinds: Sequence[str]) -> int:
    """Drop the user's events of these types (staff events, from someone no longer staff).
    Ids stay unique and in order; a reader's next read simply finds fewer."""
    marks = ", ".join("?" for _ in kinds)
    return txn.execute(
        f"DELETE FROM events WHERE user_id = ? AND type IN ({marks})", (user_id, *kinds)
    )
