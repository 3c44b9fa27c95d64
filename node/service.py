"""Wiring: builds a storage node's parts from its configuration and runs them on a reactor."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProcessTransport,
    IProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.python.threadpool import ThreadPool

from common.accesslog import redacting_log_formatter
from common.config import ConfigError
from common.signing import NodeKeys
from node.api.app import NodeApp
from node.api.receiving import NodeSite
from node.config import NodeConfig
from node.mirror.journal import Journal
from node.mirror.loop import MirrorEngine, MirrorSettings
from node.replicas import deathsig
from node.replicas.rsyncd import (
    RsyncDaemon,
    RsyncdSettings,
    daemon_argv,
    process_identity,
    reap_stale_daemon,
    rsyncd_conf,
    rsyncd_secrets,
    write_private,
)
from node.replicas.store import Replicas, ReplicaStore


@dataclass(frozen=True)
class RsyncdFiles:
    conf: Path
    secrets: Path
    lock: Path
    pid: Path

    @classmethod
    def under(cls, data_dir: Path) -> RsyncdFiles:
        return cls(
            data_dir / "rsyncd.conf",
            data_dir / "rsyncd.secrets",
            data_dir / "rsyncd.lock",
            data_dir / "rsyncd.pid",
        )


@dataclass
class Node:
    """Everything a running node holds; ``start`` listens, ``stop`` lets go of it all."""

    config: NodeConfig
    reactor: Any
    clock: IReactorTime
    store: ReplicaStore
    pool: ThreadPool
    site: NodeSite
    rsyncd: RsyncDaemon
    rsyncd_files: RsyncdFiles
    lock_fd: int
    mirror: MirrorEngine
    mirror_pool: ThreadPool
    port: IListeningPort | None = None

    async def start(self) -> IListeningPort:
        await reap_stale_daemon(self.rsyncd_files.pid, self.rsyncd_files.conf, self.clock)
        await self.mirror.start()
        self.rsyncd.start()
        endpoint = endpoints.serverFromString(self.reactor, self.config.listen)
        try:
            self.port = await endpoint.listen(self.site)
        except BaseException:
            await self.rsyncd.stop()
            await self.mirror.stop()
            raise
        return self.port

    async def stop(self) -> None:
        if self.port is not None:
            await defer.maybeDeferred(self.port.stopListening)
            self.port = None
        await self.rsyncd.stop()
        await self.mirror.stop()
        self.mirror_pool.stop()
        self.pool.stop()
        os.close(self.lock_fd)


def lock_data_dir(data_dir: Path) -> int:
    """Hold ``data_dir/node.lock`` for this process's life: one node per data directory.

    Without it a second node started by mistake on the same directory would take the
    first one's rsync daemon for a stale one and stop it.
    """
    fd = os.open(data_dir / "node.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"data_dir {data_dir} is in use by another pyarchive-node") from None
    return fd


def write_rsyncd_files(
    config: NodeConfig, keys: NodeKeys, store: ReplicaStore, files: RsyncdFiles
) -> None:
    uid, gid = process_identity()
    settings = RsyncdSettings(
        address=config.rsync_bind_address(),
        incoming=store.incoming.resolve(),
        secrets_file=files.secrets.resolve(),
        lock_file=files.lock.resolve(),
        max_connections=config.rsync_max_connections,
        uid=uid,
        gid=gid,
    )
    try:
        text = rsyncd_conf(settings)
    except ValueError as exc:
        raise ConfigError(f"data_dir or rsync_address: {exc}") from None
    write_private(files.secrets, rsyncd_secrets(keys.rsync_password))
    write_private(files.conf, text, 0o644)


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the rsync daemon: this one without the node's secrets.

    >>> child_environment({"PATH": "/bin", "PYARCHIVE_NODE_KEY": "k"})
    {'PATH': '/bin'}
    """
    return {k: v for k, v in environ.items() if k not in _SECRET_VARIABLES}


_SECRET_VARIABLES = frozenset({"PYARCHIVE_NODE_KEY", "PYARCHIVE_CLUSTER_SECRET"})


def _probe(reactor: Any, host: str, port: int) -> Deferred[None]:
    """Fires once something accepts a TCP connection at host:port (and it is closed again)."""
    endpoint_type = (
        endpoints.TCP6ClientEndpoint if isIPv6Address(host) else endpoints.TCP4ClientEndpoint
    )
    endpoint = endpoint_type(reactor, host, port, timeout=2)
    factory = Factory.forProtocol(Protocol)
    factory.noisy = False  # one attempt every 100 ms while the daemon starts
    connected: Deferred[IProtocol] = endpoint.connect(factory)

    def close(protocol: IProtocol) -> None:
        assert isinstance(protocol, Protocol) and protocol.transport is not None
        protocol.transport.loseConnection()

    return connected.addCallback(close)


def _version() -> str:
    try:
        return metadata.version("pyarchive")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_node(config: NodeConfig, reactor: Any, *, clock: IReactorTime | None = None) -> Node:
    """Build a node on ``reactor``; time-based behaviour reads ``clock`` (default: reactor).

    Checks the configuration (ConfigError names the setting), creates the data directory's
    layout and writes rsyncd.conf and rsyncd.secrets (0600); nothing runs until ``start``.
    """
    clock = clock or reactor
    config.check()
    # The node keeps its derived keys and forgets the node key and any cluster secret.
    keys = config.keys()
    config = config.without_secrets()
    rsync = shutil.which(config.rsync_binary)
    if rsync is None:
        raise ConfigError(
            f"rsync_binary: {config.rsync_binary!r} is not an executable program "
            "(install rsync, e.g. apt-get install rsync)"
        )
    data_dir = Path(config.data_dir)
    store = ReplicaStore(data_dir)
    store.create()
    lock_fd = lock_data_dir(data_dir)
    files = RsyncdFiles.under(data_dir)
    try:
        write_rsyncd_files(config, keys, store, files)
    except BaseException:
        os.close(lock_fd)
        raise

    def spawn(protocol: ProcessProtocol, argv: Sequence[str]) -> IProcessTransport:
        # Through deathsig: the daemon dies with this process, even on SIGKILL, so a node
        # started again (by run-local's supervisor, systemd...) finds the rsync port free.
        command = deathsig.wrapped(os.getpid(), rsync, argv)
        transport: IProcessTransport = reactor.spawnProcess(
            protocol, command[0], command, env=child_environment(os.environ)
        )
        return transport

    address = config.rsync_bind_address()
    probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
    daemon = RsyncDaemon(
        daemon_argv(config.rsync_binary, config.rsync_port, files.conf.resolve()),
        spawn=spawn,
        clock=clock,
        probe=lambda: _probe(reactor, probe_host, config.rsync_port),
        restart_delay=config.rsync_restart_delay,
        max_restart_delay=config.rsync_restart_max_delay,
        pid_file=files.pid,
    )
    pool = ThreadPool(minthreads=0, maxthreads=config.io_threads, name="pyarchive-node-io")
    pool.start()
    replicas = Replicas(store, reactor, pool, clock)
    # S3 transfers get their own threads, so a slow bucket never holds up replica work.
    settings = MirrorSettings.from_config(config)
    mirror_pool = ThreadPool(minthreads=0, maxthreads=settings.threads, name="pyarchive-mirror")
    mirror_pool.start()
    mirror = MirrorEngine(
        clock=clock,
        threads=reactor,
        pool=mirror_pool,
        replicas=replicas,
        state=Journal(data_dir / "mirror"),
        settings=settings,
    )
    app = NodeApp(
        name=config.name,
        zone=config.zone,
        version=_version(),
        replicas=replicas,
        keys=keys,
        clock=clock,
        rsync_ready=lambda: daemon.ready,
        mirror=mirror,
    )
    site = NodeSite(app.app.resource(), gate=app.refusal, logFormatter=redacting_log_formatter)
    site.displayTracebacks = False
    return Node(
        config, reactor, clock, store, pool, site, daemon, files, lock_fd, mirror, mirror_pool
    )
