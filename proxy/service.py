"""Wiring: builds the proxy's parts from its configuration and runs them on a reactor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from common.accesslog import redacting_log_formatter
from common.db import Database, parse_database_url
from proxy.api.app import ProxyApp
from proxy.api.edge import Cors, parse_networks
from proxy.catalog.accounts import Accounts
from proxy.catalog.files import FileService
from proxy.catalog.sessions import Sessions, session_key
from proxy.catalog.users import UserAdmin
from proxy.cluster.admin import NodeAdmin
from proxy.cluster.batches import BatchLimits
from proxy.cluster.client import NodeClient, RsyncPusher
from proxy.cluster.downloads import DownloadLocator
from proxy.cluster.monitor import NodeMonitor, Scrubber
from proxy.cluster.placement import parse_zone_map
from proxy.cluster.replication import Replicator
from proxy.cluster.tls import node_http_client
from proxy.config import ProxyConfig
from proxy.events.hub import EventHub
from proxy.keys import (
    load_backup_key,
    load_cluster_secret,
    load_connection_box,
    load_secret,
    reseal_connections,
)
from proxy.migrations import migrate
from proxy.ops.joblocks import JobLocks, job_locks
from proxy.ops.jobs import JobScheduler
from proxy.ops.systemlog import SystemLog
from proxy.remote.backup import MetadataBackup
from proxy.remote.connections import S3Connections
from proxy.remote.tier import RemoteTier
from proxy.uploads.concat import Concatenation
from proxy.uploads.engine import UploadEngine
from proxy.uploads.intake import BodyIntake
from proxy.uploads.progress import UploadProgress
from proxy.uploads.site import ArchiveSite
from proxy.uploads.staging import StagingArea
from proxy.uploads.tus import TusUploads
from proxy.web.app import PAGE_ROOTS, WebApp
from proxy.web.auth import SESSION_COOKIE, WebAuth
from proxy.web.pages.base import FILE_FORM_LIMIT, UploadSettings
from proxy.web.render import Renderer
from proxy.web.root import Root

log = Logger()
EXPIRE_INTERVAL = 600.0
EVENTS_PRUNE_INTERVAL = 3600.0


def database_url(config: ProxyConfig) -> str:
    return config.database or f"sqlite:///{Path(config.data_dir).resolve()}/pyarchive.sqlite3"


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
    sessions: Sessions
    port: IListeningPort | None = None
    monitor: NodeMonitor | None = None
    replicator: Replicator | None = None
    scrubber: Scrubber | None = None
    scheduler: JobScheduler | None = None
    syslog: SystemLog | None = None
    s3_connections: S3Connections | None = None
    remote: RemoteTier | None = None
    backup: MetadataBackup | None = None
    events: EventHub | None = None
    job_locks: JobLocks | None = None

    async def start(self) -> IListeningPort:
        await self.db.run(migrate)
        assert self.s3_connections is not None
        await reseal_connections(self.config, self.s3_connections)
        endpoint = endpoints.serverFromString(self.reactor, self.config.listen)
        self.port = await endpoint.listen(self.site)
        assert self.scheduler is not None
        await self.scheduler.start()
        return self.port

    def add_builtin_jobs(self) -> None:
        """The proxy's own periodic work, as jobs staff can see, re-time and run now."""
        assert self.scheduler is not None and self.monitor is not None
        assert self.replicator is not None and self.scrubber is not None
        add = self.scheduler.add
        add(
            "node-monitor",
            self.monitor.run_once,
            self.config.node_ping_interval,
            description="Ping every storage node: free space, round trip, up or down.",
        )
        add(
            "replication",
            self.replicator.run_once,
            self.config.replication_interval,
            description="Place, copy, confirm and repair replicas; drop surplus ones; release "
            "the proxy's own copies; delete replicas of deleted files.",
        )
        add(
            "scrub",
            self.scrubber.run_once,
            self.config.scrub_interval,
            now=False,
            description="Re-hash every confirmed replica on its node; quarantine bad ones.",
        )
        add(
            "expire-uploads",
            self._expire,
            EXPIRE_INTERVAL,
            now=False,
            description="Drop unfinished uploads past their expiry; prune the system log; end "
            "expired browser sessions and forget old failed logins.",
        )

        assert self.remote is not None and self.backup is not None
        add(
            "mirror-sync",
            self.remote.sync_once,
            self.config.mirror_sync_interval,
            description="Tell every node which files to mirror to S3 (one node per file) and "
            "which to restore from it; record the parts and mirrors they report.",
        )
        add(
            "s3-cleanup",
            self.remote.clean_once,
            self.config.s3_cleanup_interval,
            description="Remove the S3 objects of deleted files (retried while S3 is away).",
        )
        add(
            "metadata-backup",
            self.backup.run_once,
            self.config.backup_interval,
            now=False,
            description="Write a consistent snapshot of the metadata database to the active "
            "bucket under <prefix>/metadata/, keeping the newest backup_keep.",
        )
        assert self.events is not None
        add(
            "events-prune",
            self._prune_events,
            EVENTS_PRUNE_INTERVAL,
            now=False,
            description="Drop users' live events older than event_retention (a client whose "
            "cursor is older is told to reset).",
        )

    async def _expire(self) -> dict[str, int]:
        count = await self.uploads.expire()
        if count:
            log.info("removed {count} expired uploads", count=count)
        assert self.syslog is not None
        pruned = await self.syslog.prune(self.config.system_log_retention)
        sessions = await self.sessions.prune()
        failures = await self.accounts.throttle.prune()
        return {
            "expired_uploads": count,
            "pruned_log_entries": pruned,
            "expired_sessions": sessions,
            "forgotten_login_failures": failures,
        }

    async def _prune_events(self) -> dict[str, int]:
        assert self.events is not None
        return await self.events.prune(self.config.event_retention)

    async def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.events is not None:
            self.events.close()  # open streams and long polls end
        if self.port is not None:
            await defer.maybeDeferred(self.port.stopListening)
        if self.job_locks is not None:
            self.job_locks.close()
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
    cluster_secret = load_cluster_secret(config)
    secret = load_secret(config)
    db = db or open_database(config)
    pool = ThreadPool(minthreads=0, maxthreads=config.io_threads, name="pyarchive-io")
    pool.start()
    staging = StagingArea(data_dir)
    progress = UploadProgress(reactor, pool)
    syslog = SystemLog(db, clock)
    events = EventHub(
        db, clock, poll_interval=config.events_poll_interval, keepalive=config.events_keepalive
    )
    accounts = Accounts(
        db=db, clock=clock, secret=secret, token_lifetime=config.token_lifetime, syslog=syslog,
        allow_registration=config.allow_registration,
    )  # fmt: skip
    sessions = Sessions(db, clock, session_key(secret), lifetime=config.session_lifetime)
    auth = WebAuth(accounts, sessions, secure=config.public_url.startswith("https://"))
    locks = job_locks(db.url)
    scheduler = JobScheduler(db, clock, syslog, waker=events, locks=locks)
    box = load_connection_box(config)
    s3_connections = S3Connections(db, clock, box, reactor, pool, syslog)
    node_client = NodeClient(
        http=node_http_client(reactor, config.node_ca_file), clock=clock,
        cluster_secret=cluster_secret, timeout=config.node_ping_timeout,
    )  # fmt: skip
    rsync = RsyncPusher(
        reactor=reactor, clock=clock, cluster_secret=cluster_secret,
        timeout=config.rsync_timeout, binary=config.rsync_binary,
        scratch=staging.root / "rsync-batches",
    )  # fmt: skip
    replicator = Replicator(
        db=db, staging=staging, client=node_client, rsync=rsync, clock=clock,
        target=config.replicas, grace=config.replica_grace, syslog=syslog, waker=events,
        limits=BatchLimits(
            small_file=config.replication_small_file, files=config.replication_batch_files,
            bytes=config.replication_batch_bytes,
        ),
    )  # fmt: skip
    monitor = NodeMonitor(
        db=db, client=node_client, clock=clock, down_after=config.node_down_after,
        syslog=syslog, waker=events, on_node_up=replicator.kick,
    )  # fmt: skip
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
        claim_wait=config.claim_wait,
        max_open_uploads=config.max_open_uploads,
        on_completed=replicator.kick,
        waker=events,
    )
    concat = Concatenation(
        db=db, staging=staging, progress=progress, clock=clock, threads=reactor, pool=pool,
        on_completed=replicator.kick, waker=events,
    )  # fmt: skip
    tus = TusUploads(
        engine=uploads, db=db, progress=progress, clock=clock, max_size=config.max_upload_size,
        concat=concat, path=config.tus_path,
    )  # fmt: skip
    files = FileService(
        db=db, staging=staging, clock=clock, page_size=config.page_size, waker=events
    )
    remote = RemoteTier(
        db=db, clock=clock, client=node_client, active=s3_connections.active,
        events=syslog, jobs=scheduler, restore_retry_after=config.restore_retry_after,
        cluster_secret=cluster_secret, grace=config.replica_grace, threads=reactor, pool=pool,
        waker=events,
    )  # fmt: skip
    backup = MetadataBackup(
        db=db, clock=clock, threads=reactor, pool=pool, settings=s3_connections.active,
        keep=config.backup_keep, key=load_backup_key(config), log=syslog,
    )  # fmt: skip
    users = UserAdmin(db, clock)
    node_admin = NodeAdmin(db=db, clock=clock, waker=events)
    app = ProxyApp(
        accounts=accounts,
        auth=auth,
        users=users,
        uploads=uploads,
        files=files,
        nodes=node_admin,
        remote=remote,
        jobs=scheduler,
        syslog=syslog,
        s3_connections=s3_connections,
        downloads=downloads,
        staging=staging,
        tus=tus,
        events=events,
        threads=reactor,
        pool=pool,
        public_url=config.public_url,
        trusted_proxies=parse_networks(config.trusted_proxies),
    )
    intake = BodyIntake(
        reactor=reactor,
        clock=clock,
        pool=pool,
        staging=staging,
        progress=progress,
        secret=secret,
        max_chunk_size=config.max_chunk_size,
        max_upload_size=config.max_upload_size,
        tus_path=config.tus_path,
        keep_arrived=lambda sink: defer.ensureDeferred(tus.keep_arrived(sink)),
        session_cookie=(SESSION_COOKIE, session_key(secret)),
        large_bodies={(b"POST", b"/profile/picture"): FILE_FORM_LIMIT},
    )
    pages = WebApp(
        auth=auth, accounts=accounts, users=users, files=files, remote=remote, db=db, clock=clock,
        staging=staging, renderer=Renderer(), threads=reactor, pool=pool, nodes=node_admin,
        jobs=scheduler, syslog=syslog, s3_connections=s3_connections, events=events,
        uploads=UploadSettings(
            tus_endpoint=config.tus_path,
            chunk_size=config.web_chunk_size,
            stall_seconds=max(1, int(config.web_stall_timeout)),
        ),
        page_size=config.page_size, replica_target=config.replicas,
    )  # fmt: skip
    root = Root(app.app.resource(), pages.app.resource(), PAGE_ROOTS)
    site = ArchiveSite(
        root, intake, Cors.parse(config.cors_origins), tus_path=config.tus_path,
        logFormatter=redacting_log_formatter,
    )  # fmt: skip
    site.displayTracebacks = False
    proxy = Proxy(
        config, reactor, clock, db, pool, site, uploads, accounts, sessions,
        monitor=monitor, replicator=replicator, scrubber=scrubber,
        scheduler=scheduler, syslog=syslog, s3_connections=s3_connections,
        remote=remote, backup=backup, events=events, job_locks=locks,
    )  # fmt: skip
    proxy.add_builtin_jobs()
    return proxy
