"""The system log: what the proxy did and saw, kept in the metadata database for staff.

Twisted's log goes to stdout and is gone after a restart or on another proxy; staff asking
"why is this file not mirrored?" or "when did node2 go down?" need the answer from the API.
Entries are small structured records (level, event, job, message, data), written by job runs,
node up/down transitions, replication and mirror events and failed logins, and read newest
first through ``GET /api/system-log/``. Old entries are pruned after a retention period.

Recording never raises: a log that cannot be written must not break the work it describes.
Nothing secret may be recorded; as a last line of defence, data keys that name a secret have
their values replaced before anything is stored or logged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from common.db import Database, Txn
from common.errors import BadRequest
from proxy.api.views import isotime

LEVELS = ("debug", "info", "warn", "error")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 200
_HIDDEN_KEYS = ("secret", "password", "token")
_MAX_MESSAGE = 2000

log = Logger(namespace="pyarchive.system")


def _scrubbed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the values of secret-sounding keys replaced (a guard, not a licence).

    >>> _scrubbed({"node": "n1", "secret_key": "abc", "Password": "x"})
    {'node': 'n1', 'secret_key': '[hidden]', 'Password': '[hidden]'}
    """
    return {
        key: "[hidden]" if any(word in key.lower() for word in _HIDDEN_KEYS) else value
        for key, value in data.items()
    }


def levels_from(level: str) -> tuple[str, ...]:
    """The levels shown when asking for ``level``: it and every level above it.

    >>> levels_from("warn")
    ('warn', 'error')
    """
    return LEVELS[LEVELS.index(level) :]


def parse_since(text: str, field: str = "since") -> float:
    """Unix seconds from an ISO 8601 time (UTC unless it says otherwise) or unix seconds.

    >>> parse_since("2027-01-15T08:00:00Z"), parse_since("1800000000.5")
    (1800000000.0, 1800000000.5)
    >>> parse_since("2027-01-15T09:00:00+01:00"), parse_since("2027-01-15T08:00")
    (1800000000.0, 1800000000.0)
    """
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        raise BadRequest(f"{field} must be a time after 1970", field=field)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(
            f"{field} must be an ISO 8601 time (2027-01-15T08:00:00Z) or unix seconds",
            field=field,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _parse_before(text: str) -> int:
    """The keyset cursor: the id of the last entry already seen (older ones come next).

    >>> _parse_before("42")
    42
    """
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    raise BadRequest("before must be the id of a log entry (a whole number)", field="before")


@dataclass(frozen=True)
class LogQuery:
    """What ``GET /api/system-log/`` (or the console's log page) asked for, parsed.

    ``before`` is a keyset cursor: only entries older than that entry in the log's order
    (time, then id), so paging never skips or repeats an entry while new ones arrive.
    """

    level: str | None = None
    since: float | None = None
    job: str | None = None
    limit: int = DEFAULT_LIMIT
    until: float | None = None
    before: int | None = None


def parse_log_query(args: dict[str, str]) -> LogQuery:
    """The query string's ``level``, ``since``, ``until``, ``job``, ``limit`` and
    ``before``, checked.

    >>> parse_log_query({"level": "warn", "limit": "5"})
    LogQuery(level='warn', since=None, job=None, limit=5, until=None, before=None)
    >>> parse_log_query({"since": "100", "until": "200", "before": "7"}).before
    7
    """
    level = args.get("level") or None
    if level is not None and level not in LEVELS:
        raise BadRequest(f"level must be one of {', '.join(LEVELS)}", field="level")
    since = parse_since(args["since"]) if args.get("since") else None
    until = parse_since(args["until"], "until") if args.get("until") else None
    if since is not None and until is not None and since > until:
        raise BadRequest("since must not be later than until", field="until")
    limit = DEFAULT_LIMIT
    if args.get("limit"):
        try:
            limit = int(args["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit")
    before = _parse_before(args["before"]) if args.get("before") else None
    return LogQuery(level, since, args.get("job") or None, limit, until, before)


def _entry_json(row: tuple[Any, ...]) -> dict[str, Any]:
    entry_id, at, level, event, job, message, data = row
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = {}
    return {
        "id": int(entry_id),
        "at": isotime(float(at)),
        "level": level,
        "event": event,
        "job": job,
        "message": message,
        "data": parsed if isinstance(parsed, dict) else {},
    }


class EventLog(Protocol):
    """What recording into the system log needs: ``SystemLog`` below, or a test's stand-in."""

    async def record(
        self, level: str, event: str, message: str, *, job: str = "", **data: Any
    ) -> None: ...


class SystemLog:
    """Writes and reads the ``system_log`` table; every entry also goes to Twisted's log."""

    def __init__(self, db: Database, clock: IReactorTime) -> None:
        self._db = db
        self._clock = clock

    async def record(
        self, level: str, event: str, message: str, *, job: str = "", **data: Any
    ) -> None:
        """Store one entry now and log it. Never raises: a failure to store is only logged."""
        try:
            safe = _scrubbed(data)
            log.emit(
                LogLevel.lookupByName(level),
                "{system_event}: {system_message}",
                system_event=event,
                system_message=message,
                system_job=job,
                system_data=safe,
            )
            await self._db.run(
                self.record_txn, self._clock.seconds(), level, event, message, job, safe
            )
        except Exception:
            log.failure("could not record {event} in the system log", event=event)

    @staticmethod
    def record_txn(
        txn: Txn,
        now: float,
        level: str,
        event: str,
        message: str,
        job: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Store one entry inside the caller's transaction (it commits or rolls back with it).

        This runs on a database thread, so it writes only the row; Twisted's log is the
        caller's to write, from the reactor, if the entry should appear there too.
        """
        if level not in LEVELS:
            raise ValueError(f"unknown system log level {level!r}")
        safe = _scrubbed(data or {})
        text = message[:_MAX_MESSAGE]
        txn.execute(
            "INSERT INTO system_log (at, level, event, job, message, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (now, level, event, job, text, json.dumps(safe, default=str, sort_keys=True)),
        )

    async def query(
        self,
        level: str | None = None,
        since: float | None = None,
        job: str | None = None,
        limit: int = DEFAULT_LIMIT,
        *,
        until: float | None = None,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """Entries newest first: ``level`` and above, from ``since`` to ``until`` (both
        included), of ``job``, older than the entry ``before``."""
        asked = LogQuery(level, since, job, max(1, min(limit, MAX_LIMIT)), until, before)
        return await self._db.run(self._query_txn, asked)

    async def page(self, asked: LogQuery) -> tuple[list[dict[str, Any]], bool]:
        """A page of entries as ``query`` gives them, and whether older ones match too."""
        wider = replace(asked, limit=min(asked.limit, MAX_LIMIT) + 1)
        entries = await self._db.run(self._query_txn, wider)
        return entries[: asked.limit], len(entries) > asked.limit

    @staticmethod
    def _query_txn(txn: Txn, asked: LogQuery) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if asked.level is not None:
            shown = levels_from(asked.level)
            where.append(f"level IN ({', '.join('?' for _ in shown)})")
            params.extend(shown)
        if asked.since is not None:
            where.append("at >= ?")
            params.append(asked.since)
        if asked.until is not None:
            where.append("at <= ?")
            params.append(asked.until)
        if asked.job is not None:
            where.append("job = ?")
            params.append(asked.job)
        if asked.before is not None:
            cursor = txn.one("SELECT at FROM system_log WHERE id = ?", (asked.before,))
            if cursor is None:  # pruned (and everything older with it), or never was
                return []
            where.append("(at < ? OR (at = ? AND id < ?))")
            params.extend((cursor[0], cursor[0], asked.before))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = txn.all(
            "SELECT id, at, level, event, job, message, data FROM system_log"
            f"{clause} ORDER BY at DESC, id DESC LIMIT ?",
            (*params, max(1, asked.limit)),
        )
        return [_entry_json(row) for row in rows]

    async def prune(self, retention: float) -> int:
        """Drop entries older than ``retention`` seconds; how many went."""
        return await self._db.run(self._prune_txn, self._clock.seconds() - retention)

    @staticmethod
    def _prune_txn(txn: Txn, before: float) -> int:
        return txn.execute("DELETE FROM system_log WHERE at < ?", (before,))
