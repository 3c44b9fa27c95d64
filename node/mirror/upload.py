"""The upload side of the mirror: one blob's replica into S3 as a multipart upload, verified.

An ``Uploader`` mirrors a blob to ``<prefix>/<sha256>``: it accepts an object that is already
there with the same content (content-addressed), else opens an upload (or resumes the one on
record: ListParts says which parts S3 already holds, so a restart or an outage never starts
over), uploads the missing parts a few at a time, each with its sha256 and its md5 checked
against the returned ETag, completes, and checks the object (size, metadata, multipart ETag,
SHA256 checksum) before calling it ``mirrored``. Meanwhile the whole local replica is hashed
once, so content that rotted on this disk is never mirrored as good (it is quarantined for the
proxy's scrub). A blob no longer wanted has its upload aborted, and S3 checked to have
forgotten it. The engine (``node.mirror.loop``) decides which blob and when.
"""

from __future__ import annotations

import os
from pathlib import Path

from botocore.exceptions import ClientError
from twisted.internet.defer import DeferredList, DeferredSemaphore, ensureDeferred

from common.errors import ApiError
from node.mirror.ledger import Interrupted, Ledger, Threads, interrupted
from node.mirror.s3blob import (
    ListedPart,
    LocalChanged,
    Mismatch,
    RemoteBlobs,
    UploadGone,
    check_object,
    claims_blob,
    describe,
    hash_file,
    listed_matches,
)
from node.mirror.settings import MirrorSettings
from node.mirror.state import (
    FAILED,
    MIRRORED,
    PENDING,
    UPLOADED,
    UPLOADING,
    Blob,
    MirrorRecord,
    Part,
    layout_of,
    plan_parts,
)
from node.replicas.store import Expected, Replicas


class NotHeld(Exception):
    """This node has no confirmed replica of a blob it was asked to mirror."""


class Uploader:
    """Mirrors one blob at a time to S3, or aborts a dropped blob's upload, for the engine."""

    def __init__(
        self, ledger: Ledger, io: Threads, replicas: Replicas, settings: MirrorSettings
    ) -> None:
        self._ledger = ledger
        self._io = io
        self._replicas = replicas
        self._settings = settings

    async def mirror(
        self, remote: RemoteBlobs, record: MirrorRecord, tally: dict[str, int]
    ) -> None:
        """Mirror one blob; its record says how that went, ``tally`` counts it."""
        key = record.blob.key
        self._ledger.active.add(key)
        record.state, record.detail = UPLOADING, ""
        try:
            accepted = await self._upload(remote, record)
        except Exception as exc:
            self._failed(record, exc, tally)
        else:
            record.state, record.verified, record.detail = MIRRORED, True, ""
            record.next_attempt_at = 0.0
            tally["mirrored"] = tally.get("mirrored", 0) + 1
            how = "was already in S3 with the same content" if accepted else "is mirrored to S3"
            self._ledger.event(
                "info",
                "mirror.completed",
                f"blob {key} {how} ({record.blob.size} "
                f"bytes in {len(record.parts)} parts, verified)",
                key,
            )
        finally:
            self._ledger.active.discard(key)
            await self._ledger.persist_quietly(record)

    def _failed(self, record: MirrorRecord, exc: Exception, tally: dict[str, int]) -> None:
        for part in record.parts:
            if part.remote_state == UPLOADING:
                part.remote_state = PENDING
        key = record.blob.key
        if isinstance(exc, Interrupted) or self._ledger.stopping:
            # not the blob's fault: no backoff
            record.state, record.detail = PENDING, "interrupted: the node is stopping"
            if isinstance(exc, Interrupted):
                record.detail = str(exc)
            return
        wait = self._ledger.back_off(record)
        gone = isinstance(exc, (NotHeld, LocalChanged))
        record.state = FAILED if gone else PENDING
        record.detail = f"{describe(exc)} (attempt {record.attempts}; next try in {wait:g} s)"
        tally["failed" if gone else "retry"] = tally.get("failed" if gone else "retry", 0) + 1
        self._ledger.event(
            "error" if gone else "warn",
            "mirror.failed",
            f"mirror of blob {key} failed: {record.detail}",
            key,
        )

    async def _upload(self, remote: RemoteBlobs, record: MirrorRecord) -> bool:
        """Mirror one blob, resuming what is on record; True if S3 already had it."""
        blob = record.blob
        path = self._replicas.store.path(blob.key)
        try:
            size = (await self._io(os.stat, path)).st_size
        except FileNotFoundError:
            raise NotHeld(f"this node holds no replica {blob.key}") from None
        if size != blob.size:
            raise LocalChanged(f"replica {blob.key} has {size} bytes, not {blob.size}")
        target = remote.target(blob)
        listed: dict[int, ListedPart] = {}
        if record.target != target:
            record.target, record.upload_id, record.parts = target, None, []
        if record.upload_id is not None and not record.parts:  # a record cut short: resume
            record.parts = plan_parts(blob.size, record.part_size or self._settings.part_size)
        if record.upload_id is not None:
            try:
                listed = await self._io(remote.list_parts, target.object_key, record.upload_id)
            except UploadGone:
                self._ledger.event(
                    "info",
                    "mirror.restarted",
                    f"S3 no longer knows the upload of blob {blob.key}: starting a new one",
                    blob.key,
                )
                record.upload_id = None
        if record.upload_id is None:
            if await self._accept_existing(remote, record, path):
                return True
            record.parts = plan_parts(blob.size, self._settings.part_size)
            record.part_size = record.parts[0].size
            record.upload_id = await self._io(remote.create_upload, target.object_key, blob)
            self._ledger.event(
                "info",
                "mirror.started",
                f"mirroring blob {blob.key} to S3 in {len(record.parts)} parts",
                blob.key,
            )
            await self._ledger.persist(record)
        await self._reconcile(record, listed, path)
        whole = ensureDeferred(self._io(hash_file, path))
        try:
            await self._upload_parts(remote, record, path)
        finally:
            hashes = await whole
        if (hashes.md5, hashes.sha256) != (blob.md5, blob.sha256):
            await self._quarantine(blob)
            raise LocalChanged(
                f"replica {blob.key} no longer has its md5 and sha256: not "
                "mirrored (quarantined for the proxy's scrub)"
            )
        upload_id = record.upload_id
        assert upload_id is not None
        await self._io(remote.complete, target.object_key, upload_id, record.parts)
        record.upload_id = None  # completed: S3 forgets the upload
        await self._ledger.persist(record)
        found = await self._io(remote.head, target.object_key)
        problem = check_object(found, blob, record.parts)
        if problem is not None:
            raise Mismatch(f"the completed object failed its check: {problem}")
        return False

    async def _accept_existing(self, remote: RemoteBlobs, record: MirrorRecord, path: Path) -> bool:
        """True if the object is already in S3 with this blob's content (then nothing is sent).

        Its size and metadata must match, and its ETag the one this replica's parts give in
        the object's own part layout."""
        blob = record.blob
        assert record.target is not None
        found = await self._io(remote.head, record.target.object_key)
        if found is None or not claims_blob(found, blob):
            return False  # none, or not ours: a new upload replaces it
        count = int(found.etag.rpartition("-")[2]) if "-" in found.etag else 1
        first = blob.size
        if count > 1:
            try:
                first = await self._io(remote.first_part_size, record.target.object_key)
            except ClientError:
                return False  # a server that cannot say: upload it again to be sure
        layout = layout_of(blob.size, first, count)
        if layout is None:
            return False
        hashes = await self._io(hash_file, path, layout)
        if (hashes.md5, hashes.sha256) != (blob.md5, blob.sha256):
            await self._quarantine(blob)
            raise LocalChanged(f"replica {blob.key} no longer has its md5 and sha256")
        for part, (md5, sha256) in zip(layout, hashes.parts, strict=True):
            part.md5, part.sha256, part.remote_state = md5, sha256, UPLOADED
        if check_object(found, blob, layout) is not None:
            return False
        record.parts, record.part_size = layout, layout[0].size
        return True

    async def _reconcile(
        self, record: MirrorRecord, listed: dict[int, ListedPart], path: Path
    ) -> None:
        """Count a part S3 lists as uploaded only if it is this replica's part (size, md5,
        sha256); parts hashed in an earlier life are hashed again only when S3 lists them."""
        unknown = [p for p in record.parts if p.index in listed and p.md5 is None]
        if unknown:
            hashes = await self._io(hash_file, path, unknown)
            for part, (md5, sha256) in zip(unknown, hashes.parts, strict=True):
                part.md5, part.sha256 = md5, sha256
        for part in record.parts:
            seen = listed.get(part.index)
            part.remote_state = (
                UPLOADED if seen is not None and listed_matches(seen, part) else PENDING
            )
        await self._ledger.persist(record)

    async def _upload_parts(self, remote: RemoteBlobs, record: MirrorRecord, path: Path) -> None:
        assert record.target is not None and record.upload_id is not None
        object_key, upload_id = record.target.object_key, record.upload_id
        failures: list[Exception] = []

        async def one(part: Part) -> None:
            if failures or self._ledger.stopping or record.dropped:
                return
            part.remote_state = UPLOADING
            try:
                md5, sha256 = await self._io(remote.upload_part, object_key, upload_id, part, path)
            except Exception as exc:
                part.remote_state = PENDING
                failures.append(exc)
                return
            part.md5, part.sha256, part.remote_state = md5, sha256, UPLOADED
            await self._ledger.persist_quietly(record)

        limit = DeferredSemaphore(self._settings.parts_in_flight)
        todo = [p for p in record.parts if p.remote_state != UPLOADED]
        await DeferredList([limit.run(one, p) for p in todo], consumeErrors=True)
        if failures:
            raise failures[0]
        if self._ledger.stopping or record.dropped:
            raise interrupted(self._ledger.stopping)

    async def abort(self, remote: RemoteBlobs, record: MirrorRecord, tally: dict[str, int]) -> None:
        """Abort a dropped blob's upload, check S3 forgot it, and forget the blob."""
        key = record.blob.key
        target, upload_id = record.target, record.upload_id
        if target is not None and upload_id is not None:
            if target != remote.target(record.blob):
                self._ledger.event(
                    "warn",
                    "mirror.aborted",
                    f"blob {key} is no longer wanted; its "
                    f"upload in bucket {target.bucket} is left to that bucket's "
                    "lifecycle rules (another connection is active)",
                    key,
                )
            else:
                try:
                    await self._io(remote.abort, target.object_key, upload_id)
                except Exception as exc:
                    wait = self._ledger.back_off(record)
                    record.detail = f"abort failed: {describe(exc)}"
                    tally["retry"] = tally.get("retry", 0) + 1
                    reason = f"{describe(exc)}; next try in {wait:g} s"
                    self._ledger.event(
                        "warn",
                        "mirror.aborted",
                        f"abort of blob {key}'s upload failed: {reason}",
                        key,
                    )
                    await self._ledger.persist_quietly(record)
                    return
                self._ledger.event(
                    "info",
                    "mirror.aborted",
                    f"blob {key} is no longer wanted: its "
                    "multipart upload is aborted (S3 no longer lists it)",
                    key,
                )
        tally["aborted"] = tally.get("aborted", 0) + 1
        await self._ledger.forget(record)

    async def _quarantine(self, blob: Blob) -> None:
        """Have the replica verified: one whose bytes changed is moved to quarantine."""
        try:
            await self._replicas.verify(blob.key, Expected(blob.size, blob.sha256))
        except ApiError:
            pass  # quarantined (Conflict) or gone (NotFound): the proxy's scrub finds out
