"""The upload engine: write these bytes at this offset, durably; report the offset; finish
with checksums. The seed's chunked-upload API (and later tus) are thin views of it.

Rule 1 of the design lives here: a chunk is checked and written under the upload's row lock,
fsynced, and only then is the new offset committed. Nothing is acknowledged before that.

Every way a request can end leaves the upload usable. Waiting for the upload's claim is
bounded (``claim_wait``: then 409 with the current offset) and cancellable; once a request
holds the claim, its critical section runs shielded (``proxy.uploads.shield``), so a client
that goes away mid-commit neither leaves the claim held nor a transaction running unowned: the
chunk is committed or rolled back as a whole, and the claim is released on every path.

Over 400 lines (460) since the live events and quotas joined the write path, and ~500 since
paths (issue 13) widened the creating calls: the candidate to split out is the finishing half
(``finish``/``complete``/``upload_whole``), which shares only the claim helpers with the chunk
half; not done in the sessions that grew it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from common.contentrange import ContentRange
from common.db import Database, Txn
from common.errors import BadRequest, Conflict, Gone, NotFound
from proxy.catalog import store
from proxy.events import kinds
from proxy.events.emit import NO_WAKING, Emitter, Waker
from proxy.events.throttle import Throttle
from proxy.uploads import quota, uploadstore
from proxy.uploads.bodies import ChunkBody, PlacedChunk, SpooledChunk, closing_spool
from proxy.uploads.completion import complete_txn
from proxy.uploads.progress import HashHolder, HashState, UploadProgress
from proxy.uploads.rules import (
    MD5_HEX,
    check_body,
    check_chunk,
    check_completable,
    name_and_path,
    validate_upload_id,
)
from proxy.uploads.shield import shielded
from proxy.uploads.staging import StagingArea
from proxy.uploads.uploadstore import COMPLETE, Upload

# A chunk is answered once its bytes are written and fsynced, with at most this much of its
# hashing still queued per hash: the rest overlaps the client sending the next chunk.
HASH_CARRY = 4 << 20
# What a request that waited ``claim_wait`` for another one is told to do.
BUSY_RETRY_AFTER = 1
# At most one upload.progress event per upload this often (and always at the last byte).
PROGRESS_EVERY = 1.0


class UploadEngine:
    def __init__(
        self,
        *,
        db: Database,
        staging: StagingArea,
        progress: UploadProgress,
        reactor: IReactorTime,
        threads: IReactorThreads,
        pool: ThreadPool,
        upload_expiry: float,
        max_chunk_size: int,
        claim_wait: float = 5.0,
        max_open_uploads: int = quota.DEFAULT_MAX_OPEN_UPLOADS,
        on_completed: Callable[[], None] = lambda: None,
        waker: Waker = NO_WAKING,
    ) -> None:
        self._db = db
        self._staging = staging
        self._progress = progress
        self._clock = reactor
        self._threads = threads
        self._pool = pool
        self._expiry = upload_expiry
        self.max_chunk_size = max_chunk_size
        self._claim_wait = claim_wait
        self._max_open = max_open_uploads
        self._on_completed = on_completed  # e.g. start replicating at once
        self._waker = waker
        self._progress_events = Throttle(reactor, PROGRESS_EVERY)

    # -- reading

    async def status(self, user_id: int, upload_id: str) -> Upload:
        upload = await self._db.run(uploadstore.get_upload, validate_upload_id(upload_id), user_id)
        if upload is None:
            raise NotFound("Upload not found")
        return upload

    async def unfinished(self, user_id: int, limit: int = 100) -> list[Upload]:
        """The caller's uploads in progress and not expired, newest first."""
        return await self._db.run(
            uploadstore.unfinished_uploads, user_id, self._clock.seconds(), limit
        )

    async def resumable(self, user_id: int, upload_id: str) -> Upload:
        """The upload a client asks about to resume it: 410 once it has expired unfinished."""
        upload = await self.status(user_id, upload_id)
        if upload.status != COMPLETE and upload.expires_at <= self._clock.seconds():
            raise Gone("Upload has expired")
        return upload

    async def with_sha256(self, upload: Upload) -> Upload:
        """A completed upload with the sha256 of the version it became, as its answer shows
        it (the completion knows it already; tus, which shows none, never asks)."""
        if upload.status != COMPLETE or upload.file_id is None or not upload.version:
            return upload
        sha256 = await self._db.run(uploadstore.completed_sha256, upload.file_id, upload.version)
        return replace(upload, sha256=sha256)

    # -- writing chunks

    def _new_upload(
        self,
        user_id: int,
        filename: str,
        parent_id: str | None,
        total: int | None,
        path: str | None = None,
        **tus: str,
    ) -> Upload:
        """A new upload's row, its filename and path checked (``name_and_path``). With a
        ``parent`` and no path, the path is left "" for ``_create_empty_txn``: the parent's."""
        name, at = name_and_path(filename, path)
        now = self._clock.seconds()
        return Upload(
            **tus,
            id=uuid.uuid4().hex,
            owner_id=user_id,
            filename=name,
            path="" if parent_id is not None and not path else at,
            parent_id=parent_id,
            total=total,
            received=0,
            status=uploadstore.UPLOADING,
            created_at=now,
            expires_at=now + self._expiry,
            completed_at=None,
            file_id=None,
            version=None,
        )

    async def start(
        self,
        user_id: int,
        filename: str,
        parent_id: str | None,
        chunk: ContentRange,
        body: ChunkBody,
        path: str | None = None,
    ) -> Upload:
        """Create an upload from its first chunk (which must start at 0)."""
        return await shielded(self._start(user_id, filename, parent_id, chunk, body, path))

    async def _start(
        self,
        user_id: int,
        filename: str,
        parent_id: str | None,
        chunk: ContentRange,
        body: ChunkBody,
        path: str | None = None,
    ) -> Upload:
        with closing_spool(body):
            name_and_path(filename, path)  # a bad name is told before a bad chunk
            if chunk.start != 0:
                if not chunk.looks_one_based:
                    raise BadRequest("Offsets do not match", offset=0)
                chunk = chunk.shifted_to_zero()  # the seed's documented ``bytes 1-N/N``
            check_body(chunk, body, self.max_chunk_size)
            upload = self._new_upload(user_id, filename, parent_id, chunk.total, path)
            hashes = HashState.empty()
            emitter, due = self._emitter(upload.id)
            try:
                accepted = await self._db.run(
                    self._create_txn, upload, chunk, body, hashes, emitter, due
                )
            except BaseException:
                await self._in_thread(self._staging.remove, upload.id)
                raise
            self._progress.acknowledged(
                upload.id, 0, accepted.received, hashes, owner=upload.owner_id
            )
            self._emitted(upload.id, emitter)
            return accepted

    def _create_txn(
        self,
        txn: Txn,
        upload: Upload,
        chunk: ContentRange,
        body: ChunkBody,
        hashes: HashState,
        emitter: Emitter,
        progress_due: bool,
    ) -> Upload:
        upload = self._create_empty_txn(txn, upload, chunk.length)
        return self._write_txn(txn, upload, chunk, body, hashes, emitter, progress_due)

    async def append(
        self,
        user_id: int,
        upload_id: str,
        chunk: ContentRange,
        body: ChunkBody,
        limit: int | None = None,
    ) -> Upload:
        """Add a chunk at the upload's current offset (at most ``limit`` bytes: by default
        the largest chunk, for tus the largest upload)."""
        validate_upload_id(upload_id)
        owner: object
        if isinstance(body, PlacedChunk):
            # The claim was taken when the body started arriving, and written in place.
            body.handed_over = True
            owner = body
        else:
            owner = object()
            try:
                await self._claim(user_id, upload_id, owner)
            except BaseException:
                body.close()
                raise
        limit = self.max_chunk_size if limit is None else limit
        return await shielded(self._append_claimed(user_id, upload_id, chunk, body, owner, limit))

    async def _append_claimed(
        self,
        user_id: int,
        upload_id: str,
        chunk: ContentRange,
        body: ChunkBody,
        owner: object,
        limit: int,
    ) -> Upload:
        """The critical section: runs to its end whether or not the client is still there."""
        try:
            if isinstance(body, PlacedChunk):
                await body.drained(hash_allowance=HASH_CARRY)
                hashes = body.final_hashes()
            else:
                await self._progress.hashes_settled(upload_id)
                hashes = self._progress.hashes_at(upload_id, chunk.start)
            check_body(chunk, body, limit)
            emitter, due = self._emitter(upload_id)
            accepted = await self._db.run(
                self._append_txn, user_id, upload_id, chunk, body, hashes, emitter, due
            )
            self._progress.acknowledged(
                upload_id, chunk.start, accepted.received, hashes, owner=user_id
            )
            self._emitted(upload_id, emitter)
            return accepted
        finally:
            self._progress.release(upload_id, owner)
            if isinstance(body, SpooledChunk):
                body.close()

    async def keep_arrived(self, user_id: int, body: PlacedChunk, limit: int) -> Upload | None:
        """Commit what reached the file of an in-place chunk cut short (tus), as ``append``
        commits a whole one; None if nothing arrived or it cannot be kept."""
        body.handed_over = True
        if not body.size or body.error is not None or body.too_large:
            self._progress.release(body.upload_id, body)
            return None
        chunk = ContentRange(body.start, body.start + body.size - 1, None)
        return await shielded(
            self._append_claimed(user_id, body.upload_id, chunk, body, body, limit)
        )

    async def _claim(self, user_id: int, upload_id: str, owner: object) -> None:
        """Take the upload's claim, waiting at most ``claim_wait`` for the request holding it.

        A request that gives up is told the offset the database holds, so a client can go on
        from there (or retry shortly) instead of hanging behind a writer it cannot see.
        """
        waiting = self._progress.claim(upload_id, owner)
        waiting.addTimeout(self._claim_wait, self._clock)
        try:
            await waiting
        except DeferredTimeout:
            upload = await self.status(user_id, upload_id)
            raise Conflict(
                "Another request is writing to this upload; retry shortly",
                offset=upload.received,
                retry_after=BUSY_RETRY_AFTER,
            ) from None

    def _append_txn(
        self,
        txn: Txn,
        user_id: int,
        upload_id: str,
        chunk: ContentRange,
        body: ChunkBody,
        hashes: HashState | None,
        emitter: Emitter,
        progress_due: bool,
    ) -> Upload:
        upload = uploadstore.get_upload(txn, upload_id, user_id, lock=True)
        if upload is None:
            raise NotFound("Upload not found")
        check_chunk(upload, chunk, self._clock.seconds())
        return self._write_txn(txn, upload, chunk, body, hashes, emitter, progress_due)

    def _write_txn(
        self,
        txn: Txn,
        upload: Upload,
        chunk: ContentRange,
        body: ChunkBody,
        hashes: HashState | None,
        emitter: Emitter,
        progress_due: bool,
    ) -> Upload:
        total = upload.total if upload.total is not None else chunk.total
        received = chunk.end + 1
        # Before the bytes are copied or made durable: refused, they are not acknowledged.
        quota.admit_growth_txn(txn, upload, total, received, self._clock.seconds())
        if isinstance(body, PlacedChunk):
            self._staging.sync(upload.id)  # bytes are in place; make them durable
        else:
            hashers = (hashes.md5.final, hashes.sha256.final) if hashes is not None else ()
            self._staging.copy_in(upload.id, body.file, 0, chunk.length, chunk.start, hashers)
            if hashes is not None:
                hashes.offset = chunk.end + 1
        uploadstore.set_received(txn, upload.id, received, total)
        if progress_due or received == total:  # the last byte is always told
            emitter.emit(
                txn, upload.owner_id, kinds.UPLOAD_PROGRESS,
                upload_id=upload.id, filename=upload.filename, offset=received, total=total,
            )  # fmt: skip
        return replace(upload, received=received, total=total)

    def _emitter(self, upload_id: str) -> tuple[Emitter, bool]:
        """The events of a chunk's transaction, and whether its progress may be told."""
        return Emitter(self._clock.seconds()), self._progress_events.due(upload_id)

    def _emitted(self, upload_id: str, emitter: Emitter) -> None:
        """A chunk's transaction has committed: readers learn of its events now."""
        if emitter.users:
            self._progress_events.done(upload_id)
            self._waker.wake(emitter.users)

    # -- finishing

    async def complete(self, user_id: int, upload_id: str, md5: object) -> Upload:
        """Check the whole file's md5 and turn the upload into a stored file version."""
        if not isinstance(md5, str) or not MD5_HEX.fullmatch(md5):
            raise BadRequest("md5 must be the 32 hex digits of the whole file's md5", field="md5")
        return await self.finish(user_id, upload_id, md5)

    async def finish(self, user_id: int, upload_id: str, md5: str | None = None) -> Upload:
        """Turn a whole upload into a stored file version, recording its md5 and sha256;
        with ``md5`` (the seed API's completion) only if the bytes have that md5."""
        upload = await self.status(user_id, upload_id)
        check_completable(upload, self._clock.seconds())
        await self._progress.hashes_settled(upload_id)
        hashes = self._progress.hashes_at(upload_id, upload.received)
        if hashes is None:
            try:
                md5_state, sha_state = await self._in_thread(
                    self._staging.hash_prefix, upload_id, upload.received
                )
            except FileNotFoundError:
                # A retried completion, racing the first one that has just finished.
                check_completable(await self.status(user_id, upload_id), self._clock.seconds())
                raise
            hashes = HashState(upload.received, HashHolder(md5_state), HashHolder(sha_state))
            self._progress.remember_hashes(upload_id, hashes.copy())
        if md5 is not None and hashes.md5.final.hexdigest() != md5.lower():
            raise BadRequest("md5 checksum does not match")
        owner = object()
        await self._claim(user_id, upload_id, owner)
        return await shielded(self._complete_claimed(user_id, upload, hashes, owner))

    async def _complete_claimed(
        self, user_id: int, upload: Upload, hashes: HashState, owner: object
    ) -> Upload:
        emitter = Emitter(self._clock.seconds())
        try:
            done = await self._db.run(
                complete_txn,
                self._staging,
                user_id,
                upload,
                hashes.md5.final.hexdigest(),
                hashes.sha256.final.hexdigest(),
                emitter,
            )
        finally:
            self._progress.release(upload.id, owner)
        self._waker.wake(emitter.users)
        self._progress.forget(upload.id)
        await self._in_thread(self._staging.remove, upload.id)
        self._on_completed()
        return done

    async def upload_whole(
        self,
        user_id: int,
        filename: str,
        parent_id: str | None,
        body: SpooledChunk,
        md5: object,
        path: str | None = None,
    ) -> Upload:
        """One request with the whole file and its md5 (the seed's single-chunk POST).

        Shielded as a whole: a client that goes away leaves a stored file or nothing, never
        an unfinished upload it cannot name.
        """
        if not isinstance(md5, str) or not MD5_HEX.fullmatch(md5):
            body.close()
            raise BadRequest("md5 must be the 32 hex digits of the whole file's md5", field="md5")
        return await shielded(self._upload_whole(user_id, filename, parent_id, body, md5, path))

    async def _upload_whole(
        self,
        user_id: int,
        filename: str,
        parent_id: str | None,
        body: SpooledChunk,
        md5: str,
        path: str | None,
    ) -> Upload:
        size = body.size
        chunk = ContentRange(0, size - 1, size) if size else None
        if chunk is None:
            body.close()
            upload = await self.create(user_id, filename, parent_id, 0, path=path)
        else:
            upload = await self._start(user_id, filename, parent_id, chunk, body, path)
        try:
            return await self.complete(user_id, upload.id, md5)
        except BadRequest:
            await self.abort(user_id, upload.id)
            raise

    async def create(
        self,
        user_id: int,
        filename: str,
        parent_id: str | None,
        total: int | None,
        initial: int = 0,
        path: str | None = None,
        **tus: str,
    ) -> Upload:
        """An upload with no bytes yet, of ``total`` bytes (None: said later; then the quota
        is checked for the ``initial`` bytes about to be sent with the creation)."""
        upload = self._new_upload(user_id, filename, parent_id, total, path, **tus)
        upload = await self._db.run(self._create_empty_txn, upload, initial)
        self._progress.acknowledged(upload.id, 0, 0, HashState.empty(), owner=upload.owner_id)
        return upload

    def _create_empty_txn(self, txn: Txn, upload: Upload, initial: int = 0) -> Upload:
        """Admit and record a new upload; one with a ``parent`` takes its path (a path the
        client gave must be the parent's)."""
        quota.admit_upload_txn(txn, upload, initial, self._clock.seconds(), self._max_open)
        if upload.parent_id is not None:
            parent = store.get_file(txn, upload.parent_id, upload.owner_id)
            if parent is None:
                raise NotFound("Parent file not found", field="parent")
            if upload.path and upload.path != parent.path:
                raise BadRequest(
                    f"path must be the parent file's, {parent.path!r}, or not given",
                    field="path",
                )
            upload = replace(upload, path=parent.path)
        uploadstore.insert_upload(txn, upload)
        self._staging.create(upload.id)
        return upload

    async def abort(self, user_id: int, upload_id: str) -> None:
        upload = await self.status(user_id, upload_id)
        if upload.status == COMPLETE:
            raise BadRequest("Upload has already been completed")
        owner = object()
        await self._claim(user_id, upload_id, owner)
        await shielded(self._abort_claimed(upload_id, owner))

    async def _abort_claimed(self, upload_id: str, owner: object) -> None:
        try:
            await self._db.run(uploadstore.delete_upload, upload_id)
        finally:
            self._progress.release(upload_id, owner)
        self._progress.forget(upload_id)
        await self._in_thread(self._staging.remove, upload_id)

    async def expire(self) -> int:
        """Delete uploads past their expiry and free their staging space; returns how many."""
        ids = await self._db.run(uploadstore.expired_uploads, self._clock.seconds())
        for upload_id in ids:
            await self._db.run(uploadstore.delete_upload, upload_id)
            self._progress.forget(upload_id)
            await self._in_thread(self._staging.remove, upload_id)
        return len(ids)

    def _in_thread(self, fn, *args):  # type: ignore[no-untyped-def]
        return deferToThreadPool(self._threads, self._pool, fn, *args)
