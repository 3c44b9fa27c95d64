"""Settings staff change at run time, kept in the ``settings`` table (name, value).

The configuration gives each one's default; once staff set it, the stored value holds on
every proxy sharing the database, across restarts, until staff set it again. Each is read
from the database when it is used (one indexed row), so a change acts on the very next
request, on every proxy.

So far there is one: whether anyone may create an account (``allow_registration``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.db import Database, Txn

if TYPE_CHECKING:
    from proxy.ops.systemlog import EventLog

REGISTRATION = "allow_registration"


def read_setting(txn: Txn, name: str) -> str | None:
    row = txn.one("SELECT value FROM settings WHERE name = ?", (name,))
    return None if row is None else str(row[0])


def write_setting(txn: Txn, name: str, value: str) -> None:
    txn.execute(
        "INSERT INTO settings (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _as_bool(value: str) -> bool:
    """A stored flag: ``true`` or ``false`` (anything else is not written by us: off).

    >>> _as_bool("true"), _as_bool("false")
    (True, False)
    """
    return value == "true"


@dataclass(frozen=True)
class RegistrationState:
    open: bool
    source: str  # "config": nobody has switched it yet; "staff": someone has


class Registration:
    """The self-registration switch: the config's ``allow_registration`` until staff flip it."""

    def __init__(self, db: Database, syslog: EventLog | None, *, default: bool) -> None:
        self._db = db
        self._syslog = syslog
        self._default = default

    async def state(self) -> RegistrationState:
        stored = await self._db.run(read_setting, REGISTRATION)
        if stored is None:
            return RegistrationState(self._default, "config")
        return RegistrationState(_as_bool(stored), "staff")

    async def is_open(self) -> bool:
        return (await self.state()).open

    async def switch(self, is_open: bool, by: str) -> RegistrationState:
        """Open or close registration for everyone, at once; logged with who did it."""
        await self._db.run(write_setting, REGISTRATION, "true" if is_open else "false")
        if self._syslog is not None:
            word = "opened" if is_open else "closed"
            await self._syslog.record(
                "info", "settings.registration", f"{by} {word} self-registration",
                allow_registration=is_open, by=by,
            )  # fmt: skip
        return RegistrationState(is_open, "staff")
