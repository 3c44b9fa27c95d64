"""The ``metadata-backup`` job: a consistent metadata snapshot to the active bucket, keep-last-N.

The bucket alone must be enough to bring PyArchive back after a fire: the nodes mirror every
blob to ``<prefix>/<sha256>``, and this job writes the metadata (who owns which file, which
versions point at which blob, each blob's part checksums) beside them under
``<prefix>/metadata/``, keeping the newest ``keep``. What a snapshot holds and its format are
in ``proxy.remote.snapshots``; how it stays consistent while writers carry on is in
``proxy.remote.dump``. Restoring a snapshot into a new cluster is ``proxy.remote.restore``'s
job.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from common.db import Database
from common.errors import Conflict
from common.s3 import S3Settings, make_client
from proxy.ops.systemlog import EventLog
from proxy.remote.dump import write_dump
from proxy.remote.snapshots import (
    SIGNATURE,
    Snapshot,
    list_snapshots_in,
    prune_snapshots,
    signature,
    snapshot_name,
)

JOB_NAME = "metadata-backup"


class MetadataBackup:
    """The ``metadata-backup`` job: a consistent snapshot to the active bucket, keep-last-N.

    ``settings`` answers the active S3 connection (None: nothing to do); ``key`` is the
    backup key every snapshot is signed with (``proxy.remote.snapshots``). Every blocking step
    (the database copy, the export, boto3) runs in ``pool``; temporary files go to
    ``workdir`` (default: beside the SQLite file, else the system's temporary directory).
    """

    def __init__(
        self,
        *,
        db: Database,
        clock: IReactorTime,
        threads: IReactorThreads,
        pool: ThreadPool,
        settings: Callable[[], Awaitable[S3Settings | None]],
        keep: int,
        key: str,
        log: EventLog | None = None,
        workdir: str | None = None,
    ) -> None:
        self._url = db.url
        self._clock = clock
        self._threads = threads
        self._pool = pool
        self._settings = settings
        self._keep = max(1, keep)
        self._key = key
        self._log = log
        if workdir is None and self._url.dialect == "sqlite":
            workdir = str(Path(self._url.path).resolve().parent)
        self._workdir = workdir
        self._busy = False

    async def run_once(self) -> dict[str, Any]:
        """Write one snapshot and prune old ones; what was done, as JSON-able data."""
        if self._busy:
            raise Conflict("a metadata backup is running already")
        self._busy = True
        try:
            settings = await self._settings()
            if settings is None:
                return {"skipped": "no active S3 connection"}
            now = self._clock.seconds()
            name = snapshot_name(now, secrets.token_hex(4))
            result = await deferToThreadPool(
                self._threads, self._pool, self._backup, settings, name, now
            )
        finally:
            self._busy = False
        if self._log is not None:
            await self._log.record(
                "info", "metadata-backup",
                f"metadata snapshot {name} written ({result['bytes']} bytes); "
                f"{result['pruned']} old snapshot(s) removed",
                job=JOB_NAME, snapshot=result["snapshot"], bytes=result["bytes"],
            )  # fmt: skip
        return result

    def _backup(self, settings: S3Settings, name: str, now: float) -> dict[str, Any]:
        key = settings.metadata_prefix + name
        from boto3.s3.transfer import TransferConfig

        client = make_client(settings, max_pool_connections=4)
        # One 8 MiB part in memory at a time: boto3's default reads up to ten ahead (80 MiB
        # at once for a large catalogue's snapshot) in a proxy meant to stay under 120 MiB;
        # a daily job can send its parts one after the other.
        transfer = TransferConfig(max_concurrency=1)
        transfer.max_in_memory_upload_chunks = 1  # s3transfer's setting; boto3 takes no keyword
        with tempfile.TemporaryDirectory(prefix=".metadata-backup-", dir=self._workdir) as tmp:
            dump = write_dump(self._url, Path(tmp) / name, created_at=now, workdir=Path(tmp))
            client.upload_file(
                str(dump.path), settings.bucket, key, Config=transfer,
                ExtraArgs={
                    "ContentType": "application/gzip",
                    "ChecksumAlgorithm": "SHA256",
                    "Metadata": {
                        "sha256": dump.sha256,
                        SIGNATURE: signature(self._key, name, dump.sha256, dump.size),
                        "schema-version": str(dump.schema_version),
                        "dialect": dump.dialect,
                    },
                },
            )  # fmt: skip
        pruned = prune_snapshots(client, settings, self._keep, key=self._key, now=now)
        return {
            "snapshot": key,
            "bytes": dump.size,
            "sha256": dump.sha256,
            "schema_version": dump.schema_version,
            "tables": dump.rows,
            "pruned": len(pruned),
        }

    async def list_snapshots(self) -> list[dict[str, Any]]:
        """The snapshots in the active bucket, newest first."""
        settings = await self._settings()
        if settings is None:
            raise Conflict("no active S3 connection")

        def listing() -> list[Snapshot]:
            return list_snapshots_in(make_client(settings, max_pool_connections=1), settings)

        found = await deferToThreadPool(self._threads, self._pool, listing)
        return [s.public() for s in found]
