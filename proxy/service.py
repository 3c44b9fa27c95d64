"""Wiring: builds the proxy's parts from its configuration and runs them on a reactor."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer, endpoints
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from common.db import Database, parse_database_url
from proxy.accounts import Accounts
from proxy.app import ProxyApp
from proxy.config import ProxyConfig
from proxy.downloads import DownloadLocator
from proxy.files import FileService
from proxy.intake import BodyIntake
from proxy.migrations import migrate
from proxy.nodeclient import NodeClient, RsyncPusher
from proxy.nodes import NodeAdmin
from proxy.placement import parse_zone_map
from proxy.progress import UploadProgress
from proxy.remote import RemoteTier
from proxy.replication import NodeMonitor, Replicator, Scrubber
from proxy.request import ArchiveSite
from proxy.staging import StagingArea
from proxy.uploads import UploadEngine

log = Logger()
EXPIRE_INTERVAL = 600.0


def database_url(config: ProxyConfig) -> str:
    return config.database or f"sqlite:///{Path(config.data_dir).resolve()}/pyarchive.sqlite3"


def load_secret(config: ProxyConfig) -> str:
    """The token-signing secret: from config, or made once and kept in DATA_DIR (0600)."""
    return config.secret_key or _kept_secret(Path(config.data_dir) / "secret_key")


def load_cluster_secret(config: ProxyConfig) -> str:
    """The secret shared with nodes: from config, or made once and kept in DATA_DIR (0600)."""
    return config.cluster_secret or _kept_secret(Path(config.data_dir) / "cluster_secret")


def _kept_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
        out.flush()
        os.fsync(out.fileno())
    return value


async def _no_connection() -> None:
    return None  # replaced by the S3 connections store once wired


def open_database(config: ProxyConfig) -> Database:
    return Database(parse_database_url(database_url(config)), pool_size=config.db_pool_size)


@dataclass
class Proxy:
    """Everything a running proxy holds; ``start`` listens, ``stop`` lets go of it all."""

    config: ProxyConfig
    reactor: Any
    clock: IReactorTime
    db: Database
    pool: ThreadPool
    site: ArchiveSite
    uploads: UploadEngine
    accounts: Accounts
    port: IListeningPort | None = None
    monitor: NodeMonitor | None = None
    replicator: Replicator | None = None
    scrubber: Scrubber | None = None
    _loops: list[LoopingCall] = field(default_factory=list)

    async def start(self) -> IListeningPort:
        await self.db.run(migrate)
        endpoint = endpoints.serverFromString(self.reactor, self.config.listen)
        self.port = await endpoint.listen(self.site)
        assert self.monitor is not None and self.replicator is not None
        self._loop(self._expire, EXPIRE_INTERVAL, "expiring uploads", now=False)
        self._loop(self.monitor.run_once, self.config.node_ping_interval, "node monitor")
        self._loop(self.replicator.run_once, self.config.replication_interval, "replication")
        assert self.scrubber is not None
        self._loop(self.scrubber.run_once, self.config.scrub_interval, "scrub", now=False)
        return self.port

    def _loop(self, work: Any, interval: float, what: str, *, now: bool = True) -> None:
        """A LoopingCall on the proxy's clock whose failures are logged, never fatal."""

        def guarded() -> Deferred[None]:
            d = ensureDeferred(work())
            d.addErrback(lambda failure: log.failure("{what} failed", failure, what=what))
            return d  # type: ignore[return-value]

        loop = LoopingCall(guarded)
        loop.clock = self.clock
        loop.start(interval, now=now)
        self._loops.append(loop)

    async def _expire(self) -> None:
        count = await self.uploads.expire()
        if count:
            log.info("removed {count} expired uploads", count=count)

    async def stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        if self.port is not None:
            await defer.maybeDeferred(self.port.stopListening)
        self.db.close()
        self.pool.stop()


def build_proxy(
    config: ProxyConfig,
    reactor: Any,
    *,
    clock: IReactorTime | None = None,
    db: Database | None = None,
) -> Proxy:
    """Build a proxy on ``reactor``; time-based behaviour reads ``clock`` (default: reactor).

    Tests pass a ``task.Clock`` to move token expiry, upload expiry and the cleanup loop
    forward without waiting.
    """
    clock = clock or reactor
    data_dir = Path(config.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = load_secret(config)
    db = db or open_database(config)
    pool = ThreadPool(minthreads=0, maxthreads=config.io_threads, name="pyarchive-io")
    pool.start()
    staging = StagingArea(data_dir)
    progress = UploadProgress(reactor, pool)
    accounts = Accounts(db=db, clock=clock, secret=secret, token_lifetime=config.token_lifetime)
    cluster_secret = load_cluster_secret(config)
    node_client = NodeClient(
        http=treq, clock=clock, cluster_secret=cluster_secret, timeout=config.node_ping_timeout
    )
    rsync = RsyncPusher(
        reactor=reactor, clock=clock, cluster_secret=cluster_secret,
        timeout=config.rsync_timeout, binary=config.rsync_binary,
    )  # fmt: skip
    replicator = Replicator(
        db=db, staging=staging, client=node_client, rsync=rsync, clock=clock,
        target=config.replicas, grace=config.replica_grace,
    )  # fmt: skip
    monitor = NodeMonitor(db=db, client=node_client, clock=clock, down_after=config.node_down_after)
    scrubber = Scrubber(db=db, client=node_client, clock=clock)
    downloads = DownloadLocator(
        db=db, staging=staging, clock=clock, cluster_secret=cluster_secret,
        token_lifetime=config.download_token_lifetime,
        zones=parse_zone_map(config.client_zones),
    )  # fmt: skip
    uploads = UploadEngine(
        db=db,
        staging=staging,
        progress=progress,
        reactor=clock,
        threads=reactor,
        pool=pool,
        upload_expiry=config.upload_expiry,
        max_chunk_size=config.max_chunk_size,
        on_completed=replicator.kick,
    )
    files = FileService(db=db, staging=staging, clock=clock, page_size=config.page_size)
    remote = RemoteTier(
        db=db, clock=clock, client=node_client, active=_no_connection,
        cluster_secret=cluster_secret, grace=config.replica_grace, threads=reactor, pool=pool,
    )  # fmt: skip
    app = ProxyApp(
        accounts=accounts,
        uploads=uploads,
        files=files,
        nodes=NodeAdmin(db=db, clock=clock),
        remote=remote,
        jobs={"scrub": scrubber.run_once, "replication": replicator.run_once},
        downloads=downloads,
        staging=staging,
        threads=reactor,
        pool=pool,
        public_url=config.public_url,
    )
    intake = BodyIntake(
        reactor=reactor,
        clock=clock,
        pool=pool,
        staging=staging,
        progress=progress,
        secret=secret,
        max_chunk_size=config.max_chunk_size,
    )
    site = ArchiveSite(app.app.resource(), intake)
    site.displayTracebacks = False
    return Proxy(
        config, reactor, clock, db, pool, site, uploads, accounts,
        monitor=monitor, replicator=replicator, scrubber=scrubber,
    )  # fmt: skip
