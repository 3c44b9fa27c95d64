"""What every route module stands on: the domain services and a few request helpers."""

from __future__ import annotations

from typing import IO, Any

from twisted.internet.interfaces import IReactorThreads
from twisted.python.threadpool import ThreadPool
from twisted.web.iweb import IRequest

from common.tokens import TokenClaims
from common.web import header
from proxy.api.edge import HOST, Network, forwarded
from proxy.api.inputs import small_fields
from proxy.catalog.accounts import Accounts
from proxy.catalog.files import FileService
from proxy.catalog.users import UserAdmin
from proxy.cluster.admin import NodeAdmin
from proxy.cluster.downloads import DownloadLocator
from proxy.events.hub import EventHub
from proxy.ops.jobs import JobScheduler
from proxy.ops.systemlog import SystemLog
from proxy.remote.connections import S3Connections
from proxy.remote.tier import RemoteTier
from proxy.uploads.engine import UploadEngine
from proxy.uploads.staging import StagingArea
from proxy.uploads.tus import TusUploads
from proxy.web.auth import WebAuth


class RouteBase:
    def __init__(
        self,
        *,
        accounts: Accounts,
        auth: WebAuth,
        users: UserAdmin,
        uploads: UploadEngine,
        files: FileService,
        nodes: NodeAdmin,
        remote: RemoteTier,
        downloads: DownloadLocator,
        jobs: JobScheduler,
        syslog: SystemLog,
        s3_connections: S3Connections,
        staging: StagingArea,
        tus: TusUploads,
        events: EventHub,
        threads: IReactorThreads,
        pool: ThreadPool,
        public_url: str = "",
        trusted_proxies: tuple[Network, ...] = (),
    ) -> None:
        self._accounts = accounts
        self._auth = auth
        self._users = users
        self._uploads = uploads
        self._files = files
        self._nodes = nodes
        self._remote = remote
        self._jobs = jobs
        self._syslog = syslog
        self._s3 = s3_connections
        self._downloads = downloads
        self._staging = staging
        self._tus = tus
        self._events = events
        self._threads = threads
        self._pool = pool
        self._public_url = public_url.rstrip("/")
        self._trusted_proxies = trusted_proxies

    def _base_url(self, request: IRequest) -> str:
        """Where clients reach this proxy: ``public_url``, else what a trusted reverse proxy
        forwarded, else this connection's scheme and ``Host`` (``proxy.api.edge``)."""
        if self._public_url:
            return self._public_url
        proto, forwarded_host = forwarded(request, self._trusted_proxies)
        scheme = proto or ("https" if request.isSecure() else "http")
        host = forwarded_host or header(request, "host") or ""
        if not HOST.fullmatch(host):
            address = request.getHost()
            host = f"{address.host}:{address.port}"
        return f"{scheme}://{host}"

    async def _caller(self, request: IRequest) -> TokenClaims:
        """The caller's claims: a valid token, or a browser session whose state-changing
        requests carry its CSRF token (401/403 otherwise); the contract calls it."""
        return await self._auth.caller(request)

    def _spool(self) -> IO[bytes]:
        return self._staging.spool_file(256 * 1024)

    async def _fields(self, request: IRequest, allowed: set[str]) -> dict[str, Any]:
        return await small_fields(request, allowed, self._threads, self._pool, self._spool)

    def _file_url(self, request: IRequest, file_id: str, action: str) -> str:
        return f"{self._base_url(request)}/storage/files/{file_id}/{action}"
