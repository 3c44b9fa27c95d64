"""The node's disk: replicas pushed into ``incoming/``, confirmed into ``replicas/``.

Layout under the data directory::

    incoming/<key>                 what rsync received, not yet trusted
    replicas/<key[-2:]>/<key>      confirmed: size, md5 and sha256 checked, fsynced
    quarantine/<key>               a confirmed replica that later failed a check

A key is ``<blob id>-<sha256 hex>`` (``common.signing.replica_key``); nothing becomes a path
unless ``valid_replica_key`` accepts it first. ``ReplicaStore``'s methods block (they read,
hash and fsync whole files); ``Replicas`` runs them on a thread pool, one at a time per key.

Over 400 lines, for now: the single and batch confirm share the checks and the grouped
fsyncs, and the paged listing shares the layout; the paged listing and the usage count
(``page``, ``Usage``) are what can leave for a module of their own.
"""

from __future__ import annotations

import builtins
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from common.digests import BLOCK_SIZE, file_digests
from common.durable import fsync_dir
from common.errors import ApiError, BadRequest, Conflict, NotFound
from common.signing import valid_replica_key


@dataclass(frozen=True)
class Expected:
    """What the proxy knows about a replica's content. ``md5`` is None when not checked."""

    size: int
    sha256: str
    md5: str | None = None


@dataclass(frozen=True)
class Replica:
    key: str
    size: int


@dataclass(frozen=True)
class Usage:
    free_bytes: int
    total_bytes: int
    files: int


def key_sha256(key: str) -> str:
    return key.rpartition("-")[2]


class ReplicaStore:
    """Blocking operations on one data directory's replicas."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.incoming = data_dir / "incoming"
        self.replicas = data_dir / "replicas"
        self.quarantine = data_dir / "quarantine"

    def create(self) -> None:
        for directory in (self.data_dir, self.incoming, self.replicas, self.quarantine):
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where a confirmed replica lives; NotFound for anything that is not a key."""
        check_key(key)
        return self.replicas / key[-2:] / key

    # -- the operations

    def confirm(self, key: str, expected: Expected) -> Replica:
        """Move ``incoming/<key>`` into ``replicas/`` if its content is what was expected.

        A confirmed replica asked for again answers as before; incoming content that does
        not match is deleted (Conflict), so the proxy pushes it again from scratch.
        """
        (outcome,) = self.confirm_batch([(key, expected)])
        if isinstance(outcome, ApiError):
            raise outcome
        return outcome

    def confirm_batch(self, wanted: Sequence[tuple[str, Expected]]) -> list[Replica | ApiError]:
        """``confirm`` for many keys, each checked alone (one key's error, in its place in
        the answer, leaves the others be), with the fsyncs grouped: every good file is
        fsynced, then all are renamed, then each directory touched is fsynced once. Nothing
        is answered confirmed before its rename is durable."""
        outcomes: list[Replica | ApiError] = []
        moves: list[tuple[Path, Path]] = []
        incoming_changed = False
        for key, expected in wanted:
            try:
                replica, move = self._check_received(key, expected)
            except ApiError as refused:
                outcomes.append(refused)
                incoming_changed = incoming_changed or isinstance(refused, Conflict)
                continue
            outcomes.append(replica)
            if move is not None:  # its content is fsynced already (while it was hashed)
                moves.append(move)
        shards = {target.parent for _, target in moves}
        created = [shard for shard in shards if not shard.exists()]
        for shard in created:
            shard.mkdir(mode=0o750, exist_ok=True)
        if created:
            fsync_dir(self.replicas)
        for received, target in moves:
            os.rename(received, target)
        for shard in sorted(shards):
            fsync_dir(shard)
        if moves or incoming_changed:
            fsync_dir(self.incoming)
        return outcomes

    def _check_received(
        self, key: str, expected: Expected
    ) -> tuple[Replica, tuple[Path, Path] | None]:
        """The replica ``confirm`` answers for ``key`` and, unless it was confirmed before,
        the (received, target) rename that makes it so; raises for what cannot be confirmed
        (deleting received content that does not match)."""
        target = self.path(key)
        _check_matches_key(key, expected)
        received = self.incoming / key
        if target.exists():
            _unlink(received)  # a second push of content already held
            size = target.stat().st_size
            if size != expected.size:
                raise Conflict(f"Replica {key} is confirmed with {size} bytes, not {expected.size}")
            return Replica(key, size), None
        try:
            info = received.lstat()
        except FileNotFoundError:
            raise NotFound(f"Nothing was received for replica {key}") from None
        if not stat.S_ISREG(info.st_mode):
            _remove_any(received)
            raise Conflict(f"What was received for replica {key} is not a regular file")
        problem = _mismatch_while_syncing(received, expected, info.st_size)
        if problem is not None:
            _unlink(received)
            raise Conflict(f"Replica {key} was deleted: {problem}")
        return Replica(key, info.st_size), (received, target)

    def verify(self, key: str, expected: Expected) -> None:
        """Check a confirmed replica's content again; a bad one goes to ``quarantine/``."""
        path = self.path(key)
        _check_matches_key(key, expected)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise NotFound(f"No replica {key} here") from None
        problem = _mismatch(path, expected, size)
        if problem is None:
            return
        os.replace(path, self.quarantine / key)
        fsync_dir(self.quarantine)
        fsync_dir(path.parent)
        raise Conflict(f"Replica {key} was quarantined: {problem}", ok=False)

    def delete(self, key: str) -> None:
        """Remove a replica and anything received for it; nothing there is fine too."""
        path = self.path(key)
        for gone, directory in ((path, path.parent), (self.incoming / key, self.incoming)):
            if _remove_any(gone):
                fsync_dir(directory)

    def list(self) -> list[Replica]:
        return sorted(self._walk(), key=lambda replica: replica.key)

    def page(self, after: str | None, limit: int) -> tuple[builtins.list[Replica], str | None]:
        """Up to ``limit`` replicas after the key ``after`` (from the first when None), in
        listing order (shard, then key), and the key to ask after next (None: that was all).

        Held in memory: one shard's names (1/256 of the replicas) and the page, never every
        replica.
        """
        start = "" if after is None else after[-2:]
        found: builtins.list[Replica] = []
        try:
            shards = sorted(
                entry.name
                for entry in os.scandir(self.replicas)
                if len(entry.name) == 2 and entry.is_dir(follow_symlinks=False)
            )
        except FileNotFoundError:
            return [], None
        for shard in shards:
            if shard < start:
                continue
            directory = self.replicas / shard
            try:
                names = sorted(
                    entry.name
                    for entry in os.scandir(directory)
                    if valid_replica_key(entry.name) and entry.name[-2:] == shard
                )
            except FileNotFoundError:
                continue
            for name in names:
                if after is not None and (shard, name) <= (start, after):
                    continue
                try:
                    info = (directory / name).lstat()
                except FileNotFoundError:  # deleted meanwhile
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                if len(found) == limit:
                    return found, found[-1].key
                found.append(Replica(name, info.st_size))
        return found, None

    def usage(self, files: int | None = None) -> Usage:
        """Free and total bytes of the data directory's filesystem, and replicas held
        (counted by walking them all, unless the caller knows ``files``)."""
        fs = os.statvfs(self.data_dir)
        if files is None:
            files = self.count()
        return Usage(fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize, files)

    def count(self) -> int:
        """How many replicas are held: one walk over every shard (100,000 entries at a
        100,000-file catalogue)."""
        return sum(1 for _ in self._walk(with_size=False))

    def _walk(self, *, with_size: bool = True) -> Iterator[Replica]:
        try:
            shards = list(os.scandir(self.replicas))
        except FileNotFoundError:
            return
        for shard in shards:
            if len(shard.name) != 2 or not shard.is_dir(follow_symlinks=False):
                continue
            with os.scandir(shard.path) as entries:
                for entry in entries:
                    name = entry.name
                    if not valid_replica_key(name) or name[-2:] != shard.name:
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        size = entry.stat(follow_symlinks=False).st_size if with_size else 0
                    except FileNotFoundError:  # deleted meanwhile
                        continue
                    yield Replica(name, size)


def check_key(key: str) -> str:
    """``key`` if it is a replica key; NotFound otherwise (it names nothing this node holds)."""
    if not valid_replica_key(key):
        raise NotFound("No such replica")
    return key


def _check_matches_key(key: str, expected: Expected) -> None:
    if expected.sha256 != key_sha256(key):
        raise BadRequest(f"sha256 {expected.sha256} is not the one in the key {key}")


def _mismatch(path: Path, expected: Expected, size: int) -> str | None:
    """Why the file at ``path`` is not ``expected``, or None when it is."""
    if size != expected.size:
        return f"it has {size} bytes, not {expected.size}"
    with open(path, "rb", buffering=0) as file:
        found = file_digests(file)
    if found.size != expected.size:  # it changed since it was measured
        return f"it has {found.size} bytes, not {expected.size}"
    if found.sha256 != expected.sha256:
        return f"its sha256 is {found.sha256}, not {expected.sha256}"
    if expected.md5 is not None and found.md5 != expected.md5:
        return f"its md5 is {found.md5}, not {expected.md5}"
    return None


def _mismatch_while_syncing(path: Path, expected: Expected, size: int) -> str | None:
    """``_mismatch``, with the file fsynced meanwhile on another thread.

    What rsync wrote is still in the page cache: the hashing reads it from there on the CPU
    while the disk writes it back, so confirming costs about the longer of the two rather
    than their sum. The fsync's error, if any, is raised once the hashing is over; a file
    that turns out wrong was fsynced for nothing, which is harmless. A file of one block is
    checked, then fsynced, on the calling thread, as a wrong one needs no fsync at all.
    """
    if size != expected.size or size <= BLOCK_SIZE:  # a thread would cost more than it saves
        problem = _mismatch(path, expected, size)
        if problem is None:
            _fsync_file(path)
        return problem
    with ThreadPoolExecutor(1, thread_name_prefix="confirm-fsync") as syncer:
        synced = syncer.submit(_fsync_file, path)
        try:
            problem = _mismatch(path, expected, size)
        finally:
            synced.result()
    return problem


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _remove_any(path: Path) -> bool:
    """Remove a file, link or whole directory (rsync may have been sent one); True if it was."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return True
    return _unlink(path)


P = ParamSpec("P")
R = TypeVar("R")


RECOUNT_AFTER = 300.0  # seconds a replica count is reused while this node changes nothing


class Replicas:
    """``ReplicaStore`` off the reactor: each call runs on ``pool``, one at a time per key.

    With a ``clock``, ``usage`` (what every health ping answers) reuses its count of the
    replicas while none was confirmed, verified or deleted through here, for up to
    ``RECOUNT_AFTER`` seconds: an idle node then walks its 100,000 replicas every five
    minutes, not at every ping. Changes made another way show at the next recount."""

    def __init__(
        self,
        store: ReplicaStore,
        threads: IReactorThreads,
        pool: ThreadPool,
        clock: IReactorTime | None = None,
    ) -> None:
        self.store = store
        self._threads = threads
        self._pool = pool
        self._clock = clock
        self._locks: dict[str, DeferredLock] = {}
        self._changes = 0  # confirms, quarantines and deletions through here
        self._counted: tuple[float, int, int] | None = None  # (when, how many, _changes then)

    async def confirm(self, key: str, expected: Expected) -> Replica:
        try:
            return await self._for_key(key, self.store.confirm, key, expected)
        finally:
            self._changes += 1

    async def confirm_batch(
        self, wanted: Sequence[tuple[str, Expected]]
    ) -> list[Replica | ApiError]:
        """``ReplicaStore.confirm_batch`` on the pool, holding every key's lock (taken in
        key order, so two batches sharing keys cannot wait for each other)."""
        keys = sorted({check_key(key) for key, _ in wanted})
        taken: list[tuple[str, DeferredLock]] = []
        try:
            for key in keys:
                lock = self._locks.setdefault(key, DeferredLock())
                await lock.acquire()
                taken.append((key, lock))
            return await self._run(self.store.confirm_batch, wanted)
        finally:
            for key, lock in taken:
                self._release(key, lock)

    async def verify(self, key: str, expected: Expected) -> None:
        try:
            await self._for_key(key, self.store.verify, key, expected)
        except Conflict:
            self._changes += 1  # quarantined: one replica fewer
            raise

    async def delete(self, key: str) -> None:
        try:
            await self._for_key(key, self.store.delete, key)
        finally:
            self._changes += 1

    async def list(self) -> list[Replica]:
        return await self._run(self.store.list)

    async def page(
        self, after: str | None, limit: int
    ) -> tuple[builtins.list[Replica], str | None]:
        return await self._run(self.store.page, after, limit)

    async def usage(self) -> Usage:
        if self._clock is None:
            return await self._run(self.store.usage)
        now, changes = self._clock.seconds(), self._changes
        counted = self._counted
        if counted is None or counted[2] != changes or not 0 <= now - counted[0] < RECOUNT_AFTER:
            files = await self._run(self.store.count)
            # Stamped with the changes seen before the walk: one made during it makes the
            # next call walk again.
            counted = self._counted = (now, files, changes)
        return await self._run(self.store.usage, counted[1])

    async def _for_key(
        self, key: str, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        check_key(key)
        lock = self._locks.setdefault(key, DeferredLock())
        await lock.acquire()
        try:
            return await self._run(function, *args, **kwargs)
        finally:
            self._release(key, lock)

    def _release(self, key: str, lock: DeferredLock) -> None:
        lock.release()
        if not lock.locked and not lock.waiting:
            del self._locks[key]

    async def _run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await deferToThreadPool(self._threads, self._pool, function, *args, **kwargs)
