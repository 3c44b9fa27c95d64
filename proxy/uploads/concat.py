"""tus concatenation: partial uploads assembled into a final one, which becomes the file.

A partial upload is an upload that never becomes a file by itself. A final upload names its
partials, in order; it takes no bytes of its own (PATCH is 403). As soon as every partial
holds all its bytes (at the final's creation, or later when the last one finishes:
concatenation-unfinished), the final is assembled under its claim: each partial's bytes are
read once and written once into the final's staging file, md5 and sha256 computed in the same
pass (a copy is needed in any case: a blob is one file, hard-linked into place). Then one
transaction records the final's offset and completes it as any upload is completed, and the
partials are dropped.

For the quota (``proxy.uploads.quota``) the partials are the open uploads that count; the
final counts nothing of its own. The transaction that makes the final a file also expires its
partials, so their bytes are never counted twice (once as the partials, once as the version),
not even between that commit and the partials' deletion; if the process stops in between,
the expiry sweep deletes them and their staging files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from common.db import Database, Txn
from common.errors import BadRequest, NotFound
from proxy.events.emit import NO_WAKING, Emitter, Waker
from proxy.uploads import uploadstore
from proxy.uploads.completion import complete_txn
from proxy.uploads.progress import UploadProgress
from proxy.uploads.shield import shielded
from proxy.uploads.staging import StagingArea
from proxy.uploads.uploadstore import COMPLETE, Upload


class Concatenation:
    def __init__(
        self,
        *,
        db: Database,
        staging: StagingArea,
        progress: UploadProgress,
        clock: IReactorTime,
        threads: IReactorThreads,
        pool: ThreadPool,
        on_completed: Callable[[], None],
        waker: Waker = NO_WAKING,
    ) -> None:
        self._db = db
        self._staging = staging
        self._progress = progress
        self._clock = clock
        self._threads = threads
        self._pool = pool
        self._on_completed = on_completed
        self._waker = waker

    async def partials(self, user_id: int, part_ids: list[str]) -> list[Upload]:
        """The caller's partial uploads a final one names (404 for another's or a gone one)."""
        found = []
        for part_id in part_ids:
            part = await self._db.run(uploadstore.get_upload, part_id, user_id)
            if part is None:
                raise NotFound(f"No partial upload {part_id}", field="Upload-Concat")
            if part.concat != "partial":
                raise BadRequest(f"Upload {part_id} is not a partial upload", field="Upload-Concat")
            found.append(part)
        return found

    async def existing_final(self, user_id: int, part_ids: list[str]) -> Upload | None:
        """The final upload already made of these partials (a repeated final POST)."""
        return await self._db.run(uploadstore.find_final, user_id, " ".join(part_ids))

    async def partial_finished(self, user_id: int, partial_id: str) -> None:
        """A partial upload holds all its bytes: assemble every final waiting for it."""
        for final_id in await self._db.run(uploadstore.finals_waiting_on, user_id, partial_id):
            await self.assemble(user_id, final_id)

    async def assemble(self, user_id: int, final_id: str) -> Upload | None:
        """Make the final upload a file if all its partials are whole; None if they are not."""
        owner = object()
        await self._progress.claim(final_id, owner)
        return await shielded(self._assemble_claimed(user_id, final_id, owner))

    async def _assemble_claimed(self, user_id: int, final_id: str, owner: object) -> Upload | None:
        try:
            final = await self._db.run(uploadstore.get_upload, final_id, user_id)
            if final is None or final.status == COMPLETE:
                return final
            parts = []
            for part_id in final.parts.split():
                part = await self._db.run(uploadstore.get_upload, part_id, user_id)
                if part is None or part.total is None or part.received != part.total:
                    return None  # not yet (or a partial was terminated: it never will be)
                parts.append(part)
            md5, sha256 = await deferToThreadPool(
                self._threads,
                self._pool,
                self._staging.concatenate,
                final_id,
                [(part.id, part.received) for part in parts],
            )
            total = sum(part.received for part in parts)
            emitter = Emitter(self._clock.seconds())
            done = await self._db.run(
                self._complete_txn, user_id, final, total, md5, sha256, emitter
            )
        finally:
            self._progress.release(final_id, owner)
        self._waker.wake(emitter.users)
        self._progress.forget(final_id)
        await self._in_thread(self._staging.remove, final_id)
        for part_id in dict.fromkeys(final.parts.split()):  # the partials' work is done
            await self._db.run(uploadstore.delete_upload, part_id)
            self._progress.forget(part_id)
            await self._in_thread(self._staging.remove, part_id)
        self._on_completed()
        return done

    def _complete_txn(
        self,
        txn: Txn,
        user_id: int,
        final: Upload,
        total: int,
        md5: str,
        sha256: str,
        emitter: Emitter,
    ) -> Upload:
        uploadstore.set_received(txn, final.id, total, total)
        whole = replace(final, received=total, total=total)
        done = complete_txn(txn, self._staging, user_id, whole, md5, sha256, emitter)
        for part_id in dict.fromkeys(final.parts.split()):
            uploadstore.expire_now(txn, part_id, emitter.now)
        return done

    def _in_thread(self, fn, *args):  # type: ignore[no-untyped-def]
        return deferToThreadPool(self._threads, self._pool, fn, *args)
