"""The proxy's HTTP routes. Each parses the request, calls the domain, shapes the answer."""

from __future__ import annotations

import re
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from klein import Klein
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException

from common.contentrange import parse_content_range
from common.errors import ApiError, BadRequest, Forbidden, Gone, NotFound
from common.fileserve import serve_file
from common.tokens import TokenClaims
from common.web import header, respond
from proxy.api import docs_page, openapi
from proxy.api.inputs import chunk_input, query, small_fields
from proxy.api.views import file_json, file_page_json, upload_json
from proxy.catalog.accounts import Accounts
from proxy.catalog.files import FileService
from proxy.cluster.admin import NodeAdmin
from proxy.cluster.downloads import DownloadLocator, Redirect
from proxy.ops.jobs import JobScheduler, parse_interval
from proxy.ops.systemlog import SystemLog, parse_log_query
from proxy.remote.connections import CHANGEABLE, FIELDS, S3Connections
from proxy.remote.tier import LOST, NOT_HERE, RemoteTier
from proxy.uploads.bodies import SpooledChunk
from proxy.uploads.engine import UploadEngine
from proxy.uploads.staging import StagingArea

log = Logger()
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_CHUNK_FIELDS = {"filename", "parent"}


class ProxyApp:
    app = Klein()

    def __init__(
        self,
        *,
        accounts: Accounts,
        uploads: UploadEngine,
        files: FileService,
        nodes: NodeAdmin,
        remote: RemoteTier,
        downloads: DownloadLocator,
        jobs: JobScheduler,
        syslog: SystemLog,
        s3_connections: S3Connections,
        staging: StagingArea,
        threads: IReactorThreads,
        pool: ThreadPool,
        public_url: str = "",
    ) -> None:
        self._accounts = accounts
        self._uploads = uploads
        self._files = files
        self._nodes = nodes
        self._remote = remote
        self._jobs = jobs
        self._syslog = syslog
        self._s3 = s3_connections
        self._downloads = downloads
        self._staging = staging
        self._threads = threads
        self._pool = pool
        self._public_url = public_url.rstrip("/")

    # -- helpers

    def _base_url(self, request: IRequest) -> str:
        if self._public_url:
            return self._public_url
        scheme = "https" if request.isSecure() else "http"
        host = header(request, "host") or ""
        if not _HOST.fullmatch(host):
            address = request.getHost()
            host = f"{address.host}:{address.port}"
        return f"{scheme}://{host}"

    def _caller(self, request: IRequest) -> TokenClaims:
        return self._accounts.authenticate(header(request, "authorization"))

    def _staff(self, request: IRequest) -> TokenClaims:
        caller = self._caller(request)
        if not caller.is_staff:
            raise Forbidden("Staff only")
        return caller

    def _spool(self) -> IO[bytes]:
        return self._staging.spool_file(256 * 1024)

    async def _fields(self, request: IRequest, allowed: set[str]) -> dict[str, Any]:
        return await small_fields(request, allowed, self._threads, self._pool, self._spool)

    # -- errors

    @app.handle_errors(ApiError)
    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, ApiError)
        if error.status == 401:
            request.setHeader("WWW-Authenticate", 'JWT realm="api"')
        if "retry_after" in error.extra:
            request.setHeader("Retry-After", str(error.extra["retry_after"]))
        return respond(request, error.status, error.body())

    @app.handle_errors(HTTPException)
    def _routing_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        status = error.code or 500
        new_url = getattr(error, "new_url", None)
        if status in {301, 302, 307, 308} and isinstance(new_url, str):
            # The path without its trailing slash: say where the route is, in JSON like any
            # other answer. The Location is relative so it never echoes the Host header.
            # The query is the request's own: Klein binds the URL map without it.
            query = request.uri.decode("latin-1").partition("?")[2]
            location = urlunsplit(("", "", urlsplit(new_url).path, query, ""))
            request.setHeader("Location", location)
            return respond(
                request, status, {"detail": "This path ends with a slash", "location": location}
            )
        return respond(request, status, {"detail": error.name})

    @app.handle_errors(Exception)
    def _unexpected(self, request: IRequest, failure: Failure) -> bytes:
        log.failure(
            "unhandled error in {method} {uri}", failure, method=request.method, uri=request.uri
        )
        return respond(request, 500, {"detail": "Internal server error"})

    # -- service

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        return respond(request, 200, {"status": "ok"})

    @app.route("/openapi.json", methods=["GET"])
    def openapi_json(self, request: IRequest) -> bytes:
        return respond(request, 200, openapi.openapi_spec(self._base_url(request)))

    @app.route("/docs/redoc/", methods=["GET"])
    def redoc(self, request: IRequest) -> bytes:
        request.setHeader("Content-Type", "text/html; charset=utf-8")
        return docs_page.redoc_html()

    @app.route("/docs/redoc/redoc.standalone.js", methods=["GET"])
    def redoc_asset(self, request: IRequest) -> bytes:
        path = docs_page.redoc_asset_path()
        if path is None:
            raise NotFound("ReDoc is not installed here; run scripts/fetch-assets")
        request.setHeader("Content-Type", "application/javascript")
        request.setHeader("Cache-Control", "public, max-age=86400")
        return path.read_bytes()

    # -- accounts

    @app.route("/api/auth/register", methods=["POST"])
    async def register(self, request: IRequest) -> bytes:
        user = await self._accounts.register(
            await self._fields(request, {"username", "password", "email"})
        )
        body = {
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "is_staff": user.is_staff,
        }
        return respond(request, 201, body)

    @app.route("/api-token-auth/", methods=["POST"])
    async def token(self, request: IRequest) -> bytes:
        token = await self._accounts.login(await self._fields(request, {"username", "password"}))
        return respond(request, 200, {"token": token})

    # -- uploads

    @app.route("/storage/tmp-upload/", methods=["PUT"])
    async def start_upload(self, request: IRequest) -> bytes:
        caller = self._caller(request)
        chunk = parse_content_range(header(request, "content-range"))
        fields, body = await chunk_input(
            request, _CHUNK_FIELDS, self._threads, self._pool, self._spool
        )
        upload = await self._uploads.start(
            caller.user_id, fields.get("filename", ""), fields.get("parent") or None, chunk, body
        )
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @app.route("/storage/tmp-upload/", methods=["POST"])
    async def whole_upload(self, request: IRequest) -> bytes:
        caller = self._caller(request)
        fields, body = await chunk_input(
            request, _CHUNK_FIELDS | {"md5"}, self._threads, self._pool, self._spool
        )
        assert isinstance(body, SpooledChunk)  # only PUT chunks are written in place
        upload = await self._uploads.upload_whole(
            caller.user_id,
            fields.get("filename", ""),
            fields.get("parent") or None,
            body,
            fields.get("md5"),
        )
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @app.route("/storage/tmp-upload/<upload_id>/", methods=["PUT"])
    async def append_chunk(self, request: IRequest, upload_id: str) -> bytes:
        caller = self._caller(request)
        chunk = parse_content_range(header(request, "content-range"))
        _, body = await chunk_input(request, _CHUNK_FIELDS, self._threads, self._pool, self._spool)
        upload = await self._uploads.append(caller.user_id, upload_id, chunk, body)
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @app.route("/storage/tmp-upload/<upload_id>/", methods=["GET"])
    async def upload_status(self, request: IRequest, upload_id: str) -> bytes:
        caller = self._caller(request)
        upload = await self._uploads.resumable(caller.user_id, upload_id)
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @app.route("/storage/tmp-upload/<upload_id>/", methods=["POST"])
    async def complete_upload(self, request: IRequest, upload_id: str) -> bytes:
        caller = self._caller(request)
        fields = await self._fields(request, {"md5"})
        upload = await self._uploads.complete(caller.user_id, upload_id, fields.get("md5"))
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @app.route("/storage/tmp-upload/<upload_id>/", methods=["DELETE"])
    async def abort_upload(self, request: IRequest, upload_id: str) -> bytes:
        caller = self._caller(request)
        await self._uploads.abort(caller.user_id, upload_id)
        request.setResponseCode(204)
        return b""

    # -- files

    @app.route("/storage/files/", methods=["GET"])
    async def list_files(self, request: IRequest) -> bytes:
        caller = self._caller(request)
        page = query(request, {"page"}).get("page")
        count, where, files = await self._files.page(caller.user_id, page)
        return respond(request, 200, file_page_json(count, where, files, self._base_url(request)))

    @app.route("/storage/files/<file_id>/", methods=["GET"])
    async def file_detail(self, request: IRequest, file_id: str) -> bytes:
        caller = self._caller(request)
        found = await self._files.get(caller.user_id, file_id)
        replicas = await self._files.replicas(found)
        body = file_json(found, self._base_url(request), replicas)
        body.update(await self._remote.view(found.current.blob.id))
        body["cache_url"] = self._file_url(request, found.id, "cache")
        body["uncache_url"] = self._file_url(request, found.id, "uncache")
        return respond(request, 200, body)

    def _file_url(self, request: IRequest, file_id: str, action: str) -> str:
        return f"{self._base_url(request)}/storage/files/{file_id}/{action}"

    async def _own_or_staff(self, request: IRequest, file_id: str) -> Any:
        caller = self._caller(request)
        return await self._files.get(None if caller.is_staff else caller.user_id, file_id)

    @app.route("/storage/files/<file_id>/uncache", methods=["POST"])
    async def uncache(self, request: IRequest, file_id: str) -> bytes:
        """Release the local copies of a file verified in S3 (owner or staff)."""
        found = await self._own_or_staff(request, file_id)
        await self._remote.uncache(found.current.blob.id)
        body = {"detail": "Local copies released; the file is kept in S3", "remote_state": "remote"}
        return respond(
            request, 200, {**body, "cache_url": self._file_url(request, found.id, "cache")}
        )

    @app.route("/storage/files/<file_id>/cache", methods=["POST"])
    async def cache(self, request: IRequest, file_id: str) -> bytes:
        """Bring a file back from S3 to storage nodes (owner or staff); joins a queued restore."""
        found = await self._own_or_staff(request, file_id)
        state = await self._remote.cache(found.current.blob.id)
        detail_url = f"{self._base_url(request)}/storage/files/{found.id}/"
        if state == "restoring":
            request.setHeader("Retry-After", str(self._remote.restore_retry_after))
            body = {
                "detail": "Restore from S3 queued",
                "remote_state": state,
                "status_url": detail_url,
            }
            return respond(request, 202, body)
        body = {
            "detail": "This file is already on storage nodes",
            "remote_state": state,
            "status_url": detail_url,
        }
        return respond(request, 200, body)

    @app.route("/storage/files/<file_id>/", methods=["DELETE"])
    async def delete_file(self, request: IRequest, file_id: str) -> bytes:
        caller = self._caller(request)
        await self._files.delete(caller.user_id, file_id)
        request.setResponseCode(204)
        return b""

    @app.route("/storage/files/<file_id>/rollback/", methods=["POST"])
    async def rollback(self, request: IRequest, file_id: str) -> bytes:
        caller = self._caller(request)
        fields = await self._fields(request, {"version"})
        found = await self._files.rollback(caller.user_id, file_id, fields.get("version"))
        return respond(request, 200, file_json(found, self._base_url(request)))

    @app.route("/storage/download/<file_id>/", methods=["GET", "HEAD"])
    async def download(self, request: IRequest, file_id: str) -> Any:
        caller = self._caller(request)
        asked = query(request, {"version", "restore"})
        stored, chosen = await self._files.for_download(
            caller.user_id, file_id, asked.get("version")
        )
        state = await self._remote.state_of(chosen.blob.id)
        if state == LOST:
            raise Gone(
                "This file's content was not in the S3 bucket the catalogue was restored from"
            )
        if state in NOT_HERE:
            cache_url = self._file_url(request, stored.id, "cache")
            if asked.get("restore") in {"1", "true", "yes"}:
                state = await self._remote.cache(chosen.blob.id)
                request.setHeader("Retry-After", str(self._remote.restore_retry_after))
                body = {
                    "detail": "file is in remote storage; restore queued",
                    "remote_state": state,
                    "cache_url": cache_url,
                }
                return respond(request, 202, body)
            body = {"detail": "file is in remote storage", "cache_url": cache_url}
            return respond(request, 409, body)
        client = request.getClientAddress()
        where = await self._downloads.locate(
            chosen.blob, stored.filename, getattr(client, "host", "")
        )
        if isinstance(where, Redirect):
            request.setHeader("Location", where.url)
            return respond(
                request, 307, {"detail": "Download from a storage node", "location": where.url}
            )
        assert isinstance(request, Request)
        return await serve_file(
            request,
            str(where),
            size=chosen.blob.size,
            etag=f'"{chosen.blob.sha256}"',
            last_modified=chosen.created_at,
            filename=stored.filename,
        )

    # -- storage nodes (staff)

    @app.route("/api/nodes/", methods=["GET"])
    async def list_nodes(self, request: IRequest) -> bytes:
        self._staff(request)
        return respond(request, 200, await self._nodes.list_nodes())

    @app.route("/api/nodes/", methods=["POST"])
    async def add_node(self, request: IRequest) -> bytes:
        self._staff(request)
        fields = await self._fields(request, {"name", "url", "rsync_url", "zone"})
        return respond(request, 201, await self._nodes.add(fields))

    @app.route("/api/nodes/<name>/", methods=["PATCH"])
    async def update_node(self, request: IRequest, name: str) -> bytes:
        self._staff(request)
        fields = await self._fields(request, {"state", "zone", "url", "rsync_url"})
        return respond(request, 200, await self._nodes.update(name, fields))

    @app.route("/api/nodes/<name>/", methods=["DELETE"])
    async def remove_node(self, request: IRequest, name: str) -> bytes:
        self._staff(request)
        await self._nodes.remove(name)
        request.setResponseCode(204)
        return b""

    # -- jobs and the system log (staff)

    @app.route("/api/jobs/", methods=["GET"])
    async def list_jobs(self, request: IRequest) -> bytes:
        self._staff(request)
        return respond(request, 200, await self._jobs.list())

    @app.route("/api/jobs/<name>/", methods=["PATCH"])
    async def update_job(self, request: IRequest, name: str) -> bytes:
        self._staff(request)
        fields = await self._fields(request, {"interval"})
        if "interval" not in fields:
            raise BadRequest("interval is required", field="interval")
        interval = parse_interval(fields["interval"])
        return respond(request, 200, await self._jobs.set_interval(name, interval))

    @app.route("/api/jobs/<name>/run", methods=["POST"])
    async def run_job(self, request: IRequest, name: str) -> bytes:
        """Run a built-in job now (staff), or join its run in progress. Never arbitrary code."""
        self._staff(request)
        outcome = await self._jobs.run_now(name)
        body: dict[str, Any] = {"job": name, "ok": outcome.ok, "result": outcome.result}
        if not outcome.ok:
            body["error"] = outcome.text
        return respond(request, 200, body)

    @app.route("/api/system-log/", methods=["GET"])
    async def system_log(self, request: IRequest) -> bytes:
        self._staff(request)
        asked = parse_log_query(query(request, {"level", "since", "job", "limit"}))
        entries = await self._syslog.query(asked.level, asked.since, asked.job, asked.limit)
        return respond(request, 200, entries)

    # -- S3 connections (staff)

    async def _s3_fields(self, request: IRequest, allowed: set[str]) -> dict[str, Any]:
        """The body's fields only: a secret in a URL would end up in access logs."""
        if request.args:
            names = sorted(key.decode("utf-8", "replace") for key in request.args)
            raise BadRequest(
                "Send an S3 connection's fields in the body, not the URL", fields=names
            )
        return await self._fields(request, allowed)

    @app.route("/api/s3-connections/", methods=["GET"])
    async def list_s3_connections(self, request: IRequest) -> bytes:
        self._staff(request)
        return respond(request, 200, await self._s3.list())

    @app.route("/api/s3-connections/", methods=["POST"])
    async def add_s3_connection(self, request: IRequest) -> bytes:
        self._staff(request)
        fields = await self._s3_fields(request, FIELDS)
        return respond(request, 201, await self._s3.create(fields))

    @app.route("/api/s3-connections/<name>/", methods=["GET"])
    async def s3_connection(self, request: IRequest, name: str) -> bytes:
        self._staff(request)
        return respond(request, 200, await self._s3.get(name))

    @app.route("/api/s3-connections/<name>/", methods=["PATCH"])
    async def update_s3_connection(self, request: IRequest, name: str) -> bytes:
        self._staff(request)
        fields = await self._s3_fields(request, CHANGEABLE)
        return respond(request, 200, await self._s3.update(name, fields))

    @app.route("/api/s3-connections/<name>/", methods=["DELETE"])
    async def remove_s3_connection(self, request: IRequest, name: str) -> bytes:
        self._staff(request)
        await self._s3.delete(name)
        request.setResponseCode(204)
        return b""

    @app.route("/api/s3-connections/<name>/validate", methods=["POST"])
    async def validate_s3_connection(self, request: IRequest, name: str) -> bytes:
        """Try the connection against its bucket now; answered 200 whether it works or not."""
        self._staff(request)
        await self._s3_fields(request, set())
        return respond(request, 200, await self._s3.validate(name))

    @app.route("/api/s3-connections/<name>/activate", methods=["POST"])
    async def activate_s3_connection(self, request: IRequest, name: str) -> bytes:
        self._staff(request)
        await self._s3_fields(request, set())
        return respond(request, 200, await self._s3.activate(name))
