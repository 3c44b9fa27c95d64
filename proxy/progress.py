"""What this proxy process knows about its uploads in flight, beyond the database.

- the acknowledged offset of each upload, learned from our own commits, so a chunk that
  starts there can be written in place while it arrives;
- running md5/sha256 states, so completion need not re-read the file. md5 (the slowest
  hash) may lag a little behind the acknowledged offset: each upload has one serial md5 lane,
  so a chunk's md5 work runs after its predecessor's, while the client sends the next chunk;
- which request is writing into an upload right now (a claim), so no two writers overlap.

All of it is a cache: after a restart it is empty and everything still works, a bit slower
(chunks are spooled, completion re-hashes the file on a thread).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

from proxy.lanes import SerialLane


class Md5Holder:
    """An md5 state that a chunk's work on the upload's md5 lane fills in.

    ``state`` is complete once every task queued on the lane before a call to
    ``UploadProgress.md5_settled`` has run; only lane tasks touch it before that.
    """

    def __init__(self, state: hashlib._Hash | None = None) -> None:
        self.state = state if state is not None else hashlib.md5()


@dataclass
class HashState:
    offset: int
    md5: Md5Holder
    sha256: hashlib._Hash

    def copy(self) -> HashState:
        """An independent copy; only valid once the md5 lane has settled."""
        return HashState(self.offset, Md5Holder(self.md5.state.copy()), self.sha256.copy())


class UploadProgress:
    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool) -> None:
        self._reactor = reactor
        self._pool = pool
        self._md5_lanes: dict[str, SerialLane] = {}
        self._offsets: dict[str, int] = {}
        self._hashes: dict[str, HashState] = {}
        self._claims: dict[str, object] = {}
        self._waiters: dict[str, list[tuple[object, Deferred[None]]]] = {}

    def offset(self, upload_id: str) -> int | None:
        return self._offsets.get(upload_id)

    def hashes_at(self, upload_id: str, offset: int) -> HashState | None:
        """A private copy of the running hashes if they cover exactly ``offset`` bytes.

        Call it after ``md5_settled``: the copy is taken of the md5 as it is now.
        """
        state = self._hashes.get(upload_id)
        return state.copy() if state is not None and state.offset == offset else None

    def chain_at(self, upload_id: str, offset: int) -> HashState | None:
        """The running hashes themselves (md5 possibly unsettled), for forking on the lane."""
        state = self._hashes.get(upload_id)
        return state if state is not None and state.offset == offset else None

    def md5_lane(self, upload_id: str) -> SerialLane:
        lane = self._md5_lanes.get(upload_id)
        if lane is None:
            lane = self._md5_lanes[upload_id] = SerialLane(self._pool)
        return lane

    def md5_settled(self, upload_id: str) -> Deferred[None]:
        """Fires once the md5 work queued so far for the upload has run."""
        lane = self._md5_lanes.get(upload_id)
        if lane is None:
            return succeed(None)
        return lane.idle(self._reactor)

    def acknowledged(self, upload_id: str, start: int, end: int, hashes: HashState | None) -> None:
        """Record a committed chunk [start, end); keep hashes only if they chain on."""
        self._offsets[upload_id] = end
        current = self._hashes.get(upload_id)
        chained = start == 0 or (current is not None and current.offset == start)
        if hashes is not None and hashes.offset == end and chained:
            self._hashes[upload_id] = hashes
        else:
            self._hashes.pop(upload_id, None)

    def remember_hashes(self, upload_id: str, hashes: HashState) -> None:
        self._hashes[upload_id] = hashes

    def forget(self, upload_id: str) -> None:
        self._md5_lanes.pop(upload_id, None)
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
        """Fires when ``owner`` holds the claim, after the requests queued before it."""
        if self.try_claim(upload_id, owner):
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.setdefault(upload_id, []).append((owner, waiter))
        return waiter

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
