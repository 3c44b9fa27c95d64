"""Cluster-wide job locks: several proxies on one PostgreSQL database never run a job at once.

A proxy takes a job's lock before a run and lets go of it after; a proxy that does not get it
skips that run (a debug line) and tries again at its next tick. The jobs the proxy runs all
change state shared in the database (replication, expiry, S3 cleanup, the metadata backup...),
so every built-in job takes it.

On PostgreSQL the lock is a session-level advisory lock (``pg_try_advisory_lock``) held on one
connection of its own for the run's whole length, not a lease row:

- the server releases it the moment the holder's connection ends, so a proxy that is SIGKILLed
  or loses its network never keeps the others waiting for an expiry, and no run is too long
  for a lease (a big metadata backup needs no renewal heartbeat);
- nothing compares the clocks of two machines;
- it needs no table. Session locks belong to a connection, which is why they are never taken
  through the shared adbapi pool (each call may get another connection): this pool has exactly
  one connection and one thread, used for nothing else.

If that connection breaks during a run, PostgreSQL has released the lock; the release then
says so in the log. Keys are derived from the job's name and the schema, because advisory
locks are per database, not per schema: two clusters in two schemas of one database must not
block each other.

SQLite is single-proxy (one database file on one machine, ``BEGIN IMMEDIATE`` serialising its
writers), so there the lock is a no-op that is always granted.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from common.db import Database, DatabaseUrl, Txn

log = Logger()


class JobLocks(Protocol):
    """Who runs a job now, across every proxy on one database."""

    def acquire(self, name: str) -> Deferred[bool]:
        """True if this proxy now holds ``name``'s lock; False if another proxy does."""
        ...

    def release(self, name: str) -> Deferred[None]: ...

    def close(self) -> None: ...


class LocalOnly:
    """The no-op for SQLite, where one proxy is the whole cluster."""

    def acquire(self, name: str) -> Deferred[bool]:
        return succeed(True)

    def release(self, name: str) -> Deferred[None]:
        return succeed(None)

    def close(self) -> None:
        pass


def lock_key(schema: str, name: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of job ``name`` in ``schema``.

    >>> lock_key("public", "replication") == lock_key("public", "replication")
    True
    >>> lock_key("public", "replication") != lock_key("other", "replication")
    True
    >>> -(2**63) <= lock_key("public", "scrub") < 2**63
    True
    """
    digest = hashlib.sha256(f"pyarchive job\0{schema}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _schema(txn: Txn) -> str:
    return str(txn.scalar("SELECT current_schema()"))


def _try_lock(txn: Txn, key: int) -> bool:
    return bool(txn.scalar("SELECT pg_try_advisory_lock(?)", (key,)))


def _unlock(txn: Txn, key: int) -> bool:
    return bool(txn.scalar("SELECT pg_advisory_unlock(?)", (key,)))


class AdvisoryLocks:
    """PostgreSQL advisory locks on a dedicated one-connection pool (see the module's notes)."""

    def __init__(self, url: DatabaseUrl) -> None:
        self._db = Database(url, pool_size=1)
        self._schema: str | None = None

    async def _key(self, name: str) -> int:
        if self._schema is None:
            self._schema = await self._db.run(_schema)
        return lock_key(self._schema, name)

    def acquire(self, name: str) -> Deferred[bool]:
        async def attempt() -> bool:
            return await self._db.run(_try_lock, await self._key(name))

        return Deferred.fromCoroutine(attempt())

    def release(self, name: str) -> Deferred[None]:
        async def attempt() -> None:
            if not await self._db.run(_unlock, await self._key(name)):
                log.warn(
                    "job {job}'s lock was not held at its end (the lock connection to "
                    "PostgreSQL was lost during the run)",
                    job=name,
                )

        return Deferred.fromCoroutine(attempt())

    def close(self) -> None:
        self._db.close()


async def take(locks: JobLocks, name: str) -> bool:
    """Whether this proxy may run ``name`` now; a lock that cannot be asked for is a no."""
    try:
        held = await locks.acquire(name)
    except Exception:
        log.failure("could not take job {job}'s lock; skipping this run", job=name)
        return False
    if not held:
        log.debug("job {job} is running on another proxy; skipping this run", job=name)
    return held


async def let_go(locks: JobLocks, name: str) -> None:
    try:
        await locks.release(name)
    except Exception:
        log.failure("could not release job {job}'s lock", job=name)


def job_locks(url: DatabaseUrl) -> JobLocks:
    """The locks for a proxy on ``url``: advisory locks on PostgreSQL, none on SQLite."""
    return AdvisoryLocks(url) if url.dialect == "postgresql" else LocalOnly()
