"""What this proxy process knows about its uploads in flight, beyond the database.

- the acknowledged offset of each upload, learned from our own commits, so a chunk that
  starts there can be written in place while it arrives;
- running md5/sha256 states, so completion need not re-read the file. They may lag a little
  behind the acknowledged offset: each upload has one serial lane per hash, so a chunk's
  hashing runs after its predecessor's, while the client sends the next chunk;
- which request is writing into an upload right now (a claim), so no two writers overlap.

All of it is a cache: after a restart it is empty and everything still works, a bit slower
(chunks are spooled, completion re-hashes the file on a thread).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

from proxy.uploads.lanes import SerialLane
from proxy.uploads.shield import shielded


class HashHolder:
    """A hash state that a chunk's work on one of the upload's hash lanes fills in.

    ``state`` is complete once every task queued on the lane before a call to
    ``UploadProgress.hashes_settled`` has run; only lane tasks touch it before that.
    """

    def __init__(self, state: hashlib._Hash | None = None) -> None:
        self.state = state

    def fork(self, previous: HashHolder) -> None:
        """Continue from ``previous`` (run on the lane, after ``previous``'s own work)."""
        assert previous.state is not None
        self.state = previous.state.copy()

    @property
    def final(self) -> hashlib._Hash:
        assert self.state is not None
        return self.state


@dataclass
class HashState:
    offset: int
    md5: HashHolder
    sha256: HashHolder

    @classmethod
    def empty(cls) -> HashState:
        return cls(0, HashHolder(hashlib.md5()), HashHolder(hashlib.sha256()))

    def copy(self) -> HashState:
        """An independent copy; only valid once the hash lanes have settled."""
        return HashState(
            self.offset, HashHolder(self.md5.final.copy()), HashHolder(self.sha256.final.copy())
        )


@dataclass(frozen=True)
class HashLanes:
    """One upload's md5 and sha256 lanes: each chunk's hashing runs after its predecessor's."""

    md5: SerialLane
    sha256: SerialLane


class UploadProgress:
    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool) -> None:
        self._reactor = reactor
        self._pool = pool
        self._lanes: dict[str, HashLanes] = {}
        # The acknowledged offset of each upload and whose upload it is: a body is written
        # in place only for its owner (``proxy.uploads.intake``).
        self._offsets: dict[str, tuple[int, int]] = {}
        self._hashes: dict[str, HashState] = {}
        self._claims: dict[str, object] = {}
        self._waiters: dict[str, list[tuple[object, Deferred[None]]]] = {}

    def offset(self, upload_id: str, owner_id: int) -> int | None:
        """The offset this process knows the upload is acknowledged at, if it is the owner's."""
        found = self._offsets.get(upload_id)
        return found[1] if found is not None and found[0] == owner_id else None

    def hashes_at(self, upload_id: str, offset: int) -> HashState | None:
        """A private copy of the running hashes if they cover exactly ``offset`` bytes.

        Call it after ``hashes_settled``: the copy is taken of the states as they are now.
        """
        state = self._hashes.get(upload_id)
        return state.copy() if state is not None and state.offset == offset else None

    def chain_at(self, upload_id: str, offset: int) -> HashState | None:
        """The running hashes themselves (possibly unsettled), for forking on the lanes."""
        state = self._hashes.get(upload_id)
        return state if state is not None and state.offset == offset else None

    def hash_lanes(self, upload_id: str) -> HashLanes:
        lanes = self._lanes.get(upload_id)
        if lanes is None:
            lanes = HashLanes(SerialLane(self._pool), SerialLane(self._pool))
            self._lanes[upload_id] = lanes
        return lanes

    def hashes_settled(self, upload_id: str) -> Deferred[None]:
        """Fires once the hashing queued so far for the upload has run."""
        lanes = self._lanes.get(upload_id)
        if lanes is None:
            return succeed(None)
        both = gatherResults([lanes.md5.idle(self._reactor), lanes.sha256.idle(self._reactor)])
        # Waiting may be cancelled (the client went away); the lanes' own work goes on.
        return shielded(both.addCallback(lambda _: None))

    def acknowledged(
        self, upload_id: str, start: int, end: int, hashes: HashState | None, *, owner: int
    ) -> None:
        """Record a committed chunk [start, end) of ``owner``'s upload; keep hashes only if
        they chain on."""
        self._offsets[upload_id] = (owner, end)
        current = self._hashes.get(upload_id)
        chained = start == 0 or (current is not None and current.offset == start)
        if hashes is not None and hashes.offset == end and chained:
            self._hashes[upload_id] = hashes
        else:
            self._hashes.pop(upload_id, None)

    def learn_offset(self, upload_id: str, offset: int, *, owner: int) -> None:
        """An offset read from the database, used only if this process knows none.

        Never over one it knows: that one comes from a commit at least as recent as the
        read (every commit records its offset before it releases the claim).
        """
        self._offsets.setdefault(upload_id, (owner, offset))

    def remember_hashes(self, upload_id: str, hashes: HashState) -> None:
        self._hashes[upload_id] = hashes

    def forget(self, upload_id: str) -> None:
        self._lanes.pop(upload_id, None)
        self._offsets.pop(upload_id, None)
        self._hashes.pop(upload_id, None)

    # -- claims: at most one request writes into an upload's file at a time

    def try_claim(self, upload_id: str, owner: object) -> bool:
        """Claim the upload at once if nobody holds it (the in-place fast path)."""
        if upload_id in self._claims:
            return False
        self._claims[upload_id] = owner
        return True

    def claim(self, upload_id: str, owner: object) -> Deferred[None]:
        """Fires when ``owner`` holds the claim, after the requests queued before it.

        Cancelling the Deferred (a timeout, a client that went away) takes ``owner`` out of
        the queue, so a claim is never handed to a waiter nobody is left to release it.
        """
        if self.try_claim(upload_id, owner):
            return succeed(None)

        def leave_queue(waiter: Deferred[None]) -> None:
            queue = self._waiters.get(upload_id, [])
            if (owner, waiter) in queue:
                queue.remove((owner, waiter))
            if not queue:
                self._waiters.pop(upload_id, None)

        waiter: Deferred[None] = Deferred(leave_queue)
        self._waiters.setdefault(upload_id, []).append((owner, waiter))
        return waiter

    def holder(self, upload_id: str) -> object | None:
        """Who holds the upload's claim now, if anyone."""
        return self._claims.get(upload_id)

    def release(self, upload_id: str, owner: object) -> None:
        if self._claims.get(upload_id) is not owner:
            return
        del self._claims[upload_id]
        queue = self._waiters.get(upload_id)
        if queue:
            next_owner, waiter = queue.pop(0)
            if not queue:
                del self._waiters[upload_id]
            self._claims[upload_id] = next_owner
            waiter.callback(None)
