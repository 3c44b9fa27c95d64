"""tus 1.0 uploads over the one upload engine.

A tus upload is an ``uploads`` row like a seed-API upload (``dialect = 'tus'``), so both views
report the same offset. What tus adds is handled here: a length that may be said later,
uploads that finish themselves when the last byte is in (no completion request), and the
bytes of a PATCH whose connection dropped kept instead of thrown away ("commit what arrived").
"""

from __future__ import annotations

import re

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from common.contentrange import ContentRange
from common.db import Database, Txn
from common.errors import BadRequest, NotFound, PayloadTooLarge
from proxy.uploads import quota, uploadstore
from proxy.uploads.bodies import ChunkBody, PlacedChunk, SpooledChunk
from proxy.uploads.concat import Concatenation
from proxy.uploads.engine import UploadEngine
from proxy.uploads.progress import UploadProgress
from proxy.uploads.rules import check_offset, check_writable
from proxy.uploads.uploadstore import COMPLETE, Upload

log = Logger()
DEFAULT_NAME = "upload"  # the file's name when the metadata gives none


_MIME = re.compile(r"[A-Za-z0-9][\w.+-]{0,126}/[A-Za-z0-9][\w.+-]{0,126}")


def content_type(metadata: dict[str, str]) -> str:
    """``filetype`` if it is a plain ``type/subtype``, else "" (served as octet-stream).

    >>> content_type({"filetype": "image/jpeg"}), content_type({"filetype": "text/html\\r\\nX: y"})
    ('image/jpeg', '')
    """
    found = metadata.get("filetype", "")
    return found.lower() if _MIME.fullmatch(found) else ""


def file_name(metadata: dict[str, str]) -> str:
    """The stored file's name: ``filename``, else ``name`` (Uppy); "" when there is a
    ``path`` (its last segment is the name), else ``upload``.

    >>> file_name({"name": "cat.jpg"}), file_name({"path": "photos/cat.jpg"}), file_name({})
    ('cat.jpg', '', 'upload')
    """
    for key in ("filename", "name"):
        if metadata.get(key):
            return metadata[key]
    return "" if metadata.get("path") else DEFAULT_NAME


class TusUploads:
    def __init__(
        self,
        *,
        engine: UploadEngine,
        db: Database,
        progress: UploadProgress,
        clock: IReactorTime,
        max_size: int,
        concat: Concatenation,
        path: str = "/files/",
    ) -> None:
        self.path = path  # the endpoint clients were given (``tus_path``)
        self._concat = concat
        self._engine = engine
        self._db = db
        self._progress = progress
        self._clock = clock
        self.max_size = max_size

    async def create(
        self,
        user_id: int,
        length: int | None,
        metadata: dict[str, str],
        raw_metadata: str,
        concat: str = "",
        body: SpooledChunk | None = None,
    ) -> Upload:
        """A new upload of ``length`` bytes (None: deferred), with its first bytes if a
        ``body`` came with the creation; an empty one is a file at once, unless it is a
        partial upload (``concat``), which never becomes a file by itself."""
        first = body.size if body is not None else 0
        try:
            upload = await self._new(
                user_id, length, metadata, raw_metadata, initial=first, concat=concat
            )
        except BaseException:
            if body is not None:
                body.close()
            raise
        if length == 0 and not concat:
            if body is not None:
                body.close()
            return await self._engine.finish(user_id, upload.id)
        if body is None:
            return upload
        try:
            return await self.patch(user_id, upload.id, 0, body, None)
        except quota.QuotaExceeded:
            # Only when another request took the space since the creation was admitted: the
            # client never learns this upload's URL, so it must not stay open.
            await self.terminate(user_id, upload.id)
            raise

    async def create_final(
        self, user_id: int, part_ids: list[str], metadata: dict[str, str], raw_metadata: str
    ) -> Upload:
        """A final upload of these partials, assembled at once if they are whole, else when
        the last of them is. The same final POST again answers the same upload."""
        existing = await self._concat.existing_final(user_id, part_ids)
        if existing is not None:
            return existing
        parts = await self._concat.partials(user_id, part_ids)
        lengths = [part.total for part in parts]
        total = None if None in lengths else sum(n for n in lengths if n is not None)
        final = await self._new(
            user_id, total, metadata, raw_metadata, concat="final", parts=" ".join(part_ids)
        )
        self._progress.forget(final.id)  # it takes no PATCH: none is written in place
        return await self._concat.assemble(user_id, final.id) or final

    async def _new(
        self,
        user_id: int,
        total: int | None,
        metadata: dict[str, str],
        raw_metadata: str,
        initial: int = 0,
        **concat: str,
    ) -> Upload:
        """An upload row for tus, named and typed by its metadata; 413 above the maximum."""
        if total is not None and total > self.max_size:
            raise PayloadTooLarge(
                f"The upload would be larger than the largest upload, {self.max_size} bytes",
                max_size=self.max_size,
            )
        return await self._engine.create(
            user_id,
            file_name(metadata),
            metadata.get("parent") or None,
            total,
            initial,
            path=metadata.get("path") or None,
            dialect="tus",
            metadata=raw_metadata,
            content_type=content_type(metadata),
            **concat,
        )

    async def status(self, user_id: int, upload_id: str) -> Upload:
        """The upload as HEAD reports it; its offset is learned for in-place PATCHes."""
        upload = await self._engine.resumable(user_id, upload_id)
        if upload.status != COMPLETE and upload.concat != "final":
            self._progress.learn_offset(upload.id, upload.received, owner=upload.owner_id)
        return upload

    async def patch(
        self,
        user_id: int,
        upload_id: str,
        offset: int,
        body: ChunkBody,
        length: int | None,
    ) -> Upload:
        """Write ``body`` at ``offset`` (which must be the upload's), then finish the upload
        if that was its last byte. ``length`` sets a deferred length (once)."""
        if offset + body.size > self.max_size or (length or 0) > self.max_size:
            body.close()
            raise PayloadTooLarge(
                f"The upload would pass the largest upload, {self.max_size} bytes",
                max_size=self.max_size,
            )
        if body.size:
            chunk = ContentRange(offset, offset + body.size - 1, length)
            upload = await self._engine.append(user_id, upload_id, chunk, body, self.max_size)
        else:
            body.close()
            upload = await self._declare(user_id, upload_id, offset, length)
        return await self._finish_if_whole(user_id, upload)

    async def _declare(
        self, user_id: int, upload_id: str, offset: int, length: int | None
    ) -> Upload:
        """An empty PATCH: it may set a deferred length; its offset must still match."""
        upload = await self._engine.resumable(user_id, upload_id)
        check_writable(upload)
        if upload.status == COMPLETE:
            check_offset(upload, offset)
            return upload
        return await self._db.run(self._declare_txn, user_id, upload_id, offset, length)

    def _declare_txn(
        self, txn: Txn, user_id: int, upload_id: str, offset: int, length: int | None
    ) -> Upload:
        upload = uploadstore.get_upload(txn, upload_id, user_id, lock=True)
        if upload is None:
            raise NotFound("Upload not found")
        check_offset(upload, offset)
        if length is None or length == upload.total:
            return upload
        if upload.total is not None:
            raise BadRequest("Upload-Length is already set", total=upload.total)
        if length < upload.received:
            raise BadRequest("Upload-Length is below the bytes already received")
        quota.admit_growth_txn(txn, upload, length, upload.received, self._clock.seconds())
        uploadstore.set_received(txn, upload.id, upload.received, length)
        return uploadstore.get_upload(txn, upload_id, user_id) or upload

    async def _finish_if_whole(self, user_id: int, upload: Upload) -> Upload:
        if upload.status == COMPLETE or upload.total is None or upload.received != upload.total:
            return upload
        if upload.concat == "partial":
            await self._concat.partial_finished(user_id, upload.id)
            return upload
        return await self._engine.finish(user_id, upload.id)

    async def terminate(self, user_id: int, upload_id: str) -> None:
        """Drop an unfinished upload and its bytes (a finished one is a file: delete that)."""
        await self._engine.abort(user_id, upload_id)

    async def keep_arrived(self, sink: PlacedChunk) -> None:
        """A PATCH whose connection dropped: commit the bytes that reached the file."""
        assert sink.owner_id is not None
        try:
            upload = await self._engine.keep_arrived(sink.owner_id, sink, self.max_size)
            if upload is not None:
                await self._finish_if_whole(sink.owner_id, upload)
                log.info(
                    "tus upload {upload} kept {size} bytes of a PATCH cut short (offset {end})",
                    upload=sink.upload_id, size=sink.size, end=upload.received,
                )  # fmt: skip
        except quota.QuotaExceeded:
            log.info(
                "tus upload {upload}: the bytes of a PATCH cut short would pass the quota",
                upload=sink.upload_id,
            )
        except Exception:
            log.failure("keeping the bytes of a PATCH cut short of {upload}", upload=sink.upload_id)
