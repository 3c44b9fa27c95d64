"""The transaction that turns a whole upload into a stored file version (both dialects), and
records its events (``upload.complete``, then ``file.created`` or ``file.updated``)."""

from __future__ import annotations

import uuid
from dataclasses import replace

from common.db import Txn
from common.errors import BadRequest, NotFound
from proxy.catalog import store
from proxy.events import kinds
from proxy.events.emit import Emitter
from proxy.uploads import uploadstore
from proxy.uploads.rules import check_completable
from proxy.uploads.staging import StagingArea
from proxy.uploads.uploadstore import COMPLETE, Upload


def complete_txn(
    txn: Txn,
    staging: StagingArea,
    user_id: int,
    seen: Upload,
    md5: str,
    sha256: str,
    emitter: Emitter,
) -> Upload:
    """Record the blob (or reuse the owner's own with this content), add the version, mark the
    upload complete. ``seen`` is the upload as the hashes were taken: if it has moved on, refuse."""
    now = emitter.now
    upload = uploadstore.get_upload(txn, seen.id, user_id, lock=True)
    if upload is None:
        raise NotFound("Upload not found")
    check_completable(upload, now)
    if upload.received != seen.received:
        raise BadRequest("Upload changed while completing; retry", offset=upload.received)
    if upload.parent_id is not None:
        if store.get_file(txn, upload.parent_id, user_id, lock=True) is None:
            raise NotFound("Parent file not found", field="parent")
    # The row first: on PostgreSQL, inserting a sha256 that a concurrent deletion is
    # removing waits for that deletion to commit, and then makes a new row (new file).
    blob, created = store.ensure_blob(txn, user_id, sha256, md5, upload.received, now)
    # Content that is kept only in S3 (or was lost) is taken from this upload instead.
    revived = not created and store.revive_blob(txn, blob.id)
    if created or revived:
        staging.link_blob(upload.id, sha256, blob.id, upload.received)
    path = upload.path or upload.filename
    # A file stored before paths has its name, as sent, as its path: a name that NFC
    # normalisation changed still finds it at the top level.
    former = upload.filename if "/" not in path else None
    try:
        file_id, number = store.add_version(
            txn, user_id, upload.parent_id, uuid.uuid4().hex, upload.filename, blob, now,
            upload.content_type, path, former,
        )  # fmt: skip
        uploadstore.mark_complete(txn, upload.id, upload.received, file_id, number, now)
        _emit(txn, emitter, upload, file_id, number)
    except BaseException:
        if created or revived:
            staging.remove_blobs([(sha256, blob.id)])
        raise
    return replace(
        upload,
        status=COMPLETE,
        total=upload.received,
        completed_at=now,
        file_id=file_id,
        version=number,
        sha256=sha256,
    )


def _emit(txn: Txn, emitter: Emitter, upload: Upload, file_id: str, number: int) -> None:
    size, name = upload.received, upload.filename
    path = store.path_of(txn, file_id)  # a parent's, or one from before paths, may differ
    emitter.emit(
        txn, upload.owner_id, kinds.UPLOAD_COMPLETE,
        upload_id=upload.id, file_id=file_id, filename=name, path=path, size=size, version=number,
    )  # fmt: skip
    kind = kinds.FILE_CREATED if number == 1 else kinds.FILE_UPDATED  # add_version's first is 1
    emitter.emit(
        txn, upload.owner_id, kind,
        file_id=file_id, filename=name, path=path, size=size, version=number,
    )  # fmt: skip
