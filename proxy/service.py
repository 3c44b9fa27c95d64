"""Wiring: builds the proxy's parts from its configuration and runs them on a reactor."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from proxy.files import FileService
from proxy.intake import BodyIntake
from proxy.migrations import migrate
from proxy.progress import UploadProgress
from proxy.request import ArchiveSite
from proxy.staging import StagingArea
from proxy.uploads import UploadEngine

log = Logger()
EXPIRE_INTERVAL = 600.0


def database_url(config: ProxyConfig) -> str:
    return config.database or f"sqlite:///{Path(config.data_dir).resolve()}/pyarchive.sqlite3"


def load_secret(config: ProxyConfig) -> str:
    """The token-signing secret: from config, or made once and kept in DATA_DIR (0600)."""
    if config.secret_key:
        return config.secret_key
    path = Path(config.data_dir) / "secret_key"
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
    _expire_loop: LoopingCall | None = None

    async def start(self) -> IListeningPort:
        await self.db.run(migrate)
        endpoint = endpoints.serverFromString(self.reactor, self.config.listen)
        self.port = await endpoint.listen(self.site)
        self._expire_loop = LoopingCall(self._expire)
        self._expire_loop.clock = self.clock
        self._expire_loop.start(EXPIRE_INTERVAL, now=False)
        return self.port

    def _expire(self) -> Deferred[None]:
        def logged(count: int) -> None:
            if count:
                log.info("removed {count} expired uploads", count=count)

        d = ensureDeferred(self.uploads.expire())
        d.addCallback(logged)
        d.addErrback(lambda failure: log.failure("expiring uploads failed", failure))
        return d  # type: ignore[return-value]

    async def stop(self) -> None:
        if self._expire_loop is not None and self._expire_loop.running:
            self._expire_loop.stop()
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
    uploads = UploadEngine(
        db=db,
        staging=staging,
        progress=progress,
        reactor=clock,
        threads=reactor,
        pool=pool,
        upload_expiry=config.upload_expiry,
        max_chunk_size=config.max_chunk_size,
    )
    files = FileService(db=db, staging=staging, clock=clock, page_size=config.page_size)
    app = ProxyApp(
        accounts=accounts,
        uploads=uploads,
        files=files,
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
    return Proxy(config, reactor, clock, db, pool, site, uploads, accounts)
