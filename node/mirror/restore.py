"""The restore side of the mirror: one blob back from S3 into this node's replicas, verified.

A ``Restorer`` fetches a blob with ranged GETs of its parts into ``incoming/<key>.restoring``
(so a restart resumes with the parts already written), each part's sha256 checked against the
proxy's; the file then takes the replica's name in ``incoming/`` and is confirmed like a pushed
replica. A part that does not match fails the restore for good (while it stays listed): S3's
copy is damaged, and retrying would not repair it. The engine (``node.mirror.loop``) decides
which blob and when, and has a dropped restore's partial file removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import DeferredList, DeferredSemaphore

from common.durable import fsync_dir
from common.errors import ApiError
from node.mirror.ledger import Interrupted, Ledger, Threads, interrupted
from node.mirror.s3blob import RemoteBlobs, describe
from node.mirror.settings import MirrorSettings
from node.mirror.state import FAILED, RESTORED, RestoreRecord
from node.replicas.store import Expected, Replicas


class PartCorrupt(Exception):
    """A part fetched from S3 does not have the sha256 the proxy recorded for it."""


class Restorer:
    """Restores one blob at a time from S3, or removes a dropped restore's file, for the engine."""

    def __init__(
        self, ledger: Ledger, io: Threads, replicas: Replicas, settings: MirrorSettings
    ) -> None:
        self._ledger = ledger
        self._io = io
        self._replicas = replicas
        self._settings = settings

    async def restore(
        self, remote: RemoteBlobs, record: RestoreRecord, tally: dict[str, int]
    ) -> None:
        """Fetch and confirm one blob; its record says how that went, ``tally`` counts it."""
        blob = record.blob
        self._ledger.active.add(blob.key)
        try:
            await self._fetch(remote, record)
            # Only now does it take the replica's name in incoming/: a replica deletion the
            # proxy queued before this restore (an uncache) cannot remove the parts on the way.
            await self._io(
                _move_into, self._partial_path(blob.key), self._replicas.store.incoming / blob.key
            )
            await self._replicas.confirm(blob.key, Expected(blob.size, blob.sha256, blob.md5))
        except (PartCorrupt, ApiError) as exc:
            record.state = FAILED
            record.detail = str(exc.detail if isinstance(exc, ApiError) else exc)
            await self.remove_partial(record)
            tally["failed"] = tally.get("failed", 0) + 1
            self._ledger.event(
                "error",
                "restore.failed",
                f"restore of blob {blob.key} failed: {record.detail}; nothing was kept",
                blob.key,
            )
        except Exception as exc:
            if isinstance(exc, Interrupted) or self._ledger.stopping:  # not the blob's fault
                record.detail = str(exc) if isinstance(exc, Interrupted) else "interrupted"
                return
            wait = self._ledger.back_off(record)
            record.detail = f"{describe(exc)} (attempt {record.attempts}; next try in {wait:g} s)"
            tally["retry"] = tally.get("retry", 0) + 1
            self._ledger.event(
                "warn",
                "restore.retry",
                f"restore of blob {blob.key} paused: {record.detail}",
                blob.key,
            )
        else:
            record.state, record.detail = RESTORED, ""
            tally["restored"] = tally.get("restored", 0) + 1
            what = f"{blob.size} bytes, {len(record.parts)} parts verified"
            self._ledger.event(
                "info",
                "restore.completed",
                f"blob {blob.key} is restored from S3 ({what})",
                blob.key,
            )
        finally:
            self._ledger.active.discard(blob.key)
            await self._ledger.persist_quietly(record)

    async def _fetch(self, remote: RemoteBlobs, record: RestoreRecord) -> None:
        """Every part not yet written, a few at a time, each checked against its sha256."""
        blob = record.blob
        if await self._io(self._replicas.store.path(blob.key).exists):
            return  # already confirmed here: confirm answers as before
        object_key = remote.settings.object_key(blob.sha256)
        fd, kept = await self._io(_open_partial, self._partial_path(blob.key), blob.size)
        if not kept:  # the partial file is new (or was not the right size): start over
            for part in record.parts:
                part.done = False
        failures: list[Exception] = []

        async def one(part: Any) -> None:
            if failures or self._ledger.stopping or record.dropped:
                return
            try:
                sha256 = await self._io(remote.download_part, object_key, part, fd)
            except Exception as exc:
                failures.append(exc)
                return
            if sha256 != part.sha256:
                failures.append(
                    PartCorrupt(
                        f"part {part.index} (bytes {part.offset}-{part.offset + part.size - 1}) "
                        f"from S3 has sha256 {sha256}, not {part.sha256}: the copy in S3 is damaged"
                    )
                )
                return
            part.done = True
            await self._ledger.persist_quietly(record)

        try:
            limit = DeferredSemaphore(self._settings.restore_parts_in_flight)
            todo = [p for p in record.parts if not p.done]
            await DeferredList([limit.run(one, p) for p in todo], consumeErrors=True)
        finally:
            await self._io(os.close, fd)
        corrupt = [f for f in failures if isinstance(f, PartCorrupt)]
        if corrupt or failures:
            raise (corrupt or failures)[0]
        if self._ledger.stopping or record.dropped:
            raise interrupted(self._ledger.stopping)

    async def remove_partial(self, record: RestoreRecord) -> None:
        """Remove the restore's file from ``incoming/``; its parts are to be fetched again."""
        for part in record.parts:
            part.done = False
        await self._io(_unlink, self._partial_path(record.blob.key))
        await self._io(_unlink, self._replicas.store.incoming / record.blob.key)

    def _partial_path(self, key: str) -> Path:
        """Where a restore writes its parts: beside incoming/'s replicas, under its own name."""
        return self._replicas.store.incoming / f"{key}.restoring"


def _open_partial(path: Path, size: int) -> tuple[int, bool]:
    """The restore's file in ``incoming/``, sized (sparse) so parts land at their offsets;
    and whether it was there already with that size (so parts written before are kept)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    try:
        kept = os.fstat(fd).st_size == size and size > 0
        if not kept:
            os.ftruncate(fd, 0)
            os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd, kept


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _move_into(partial: Path, target: Path) -> None:
    """Give a fully fetched restore the replica's name in incoming/ (a rename, made durable)."""
    if partial.exists():
        os.replace(partial, target)
        fsync_dir(target.parent)
