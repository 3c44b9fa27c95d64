"""Stored files: listing, detail, deletion, rollback, cache/uncache, downloads."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.server import Request

from common.errors import BadRequest, Gone
from common.fileserve import serve_file
from common.tokens import TokenClaims
from common.web import respond
from proxy.api import types as t
from proxy.api.contract import operation
from proxy.api.docs_parts import (
    RETRY_AFTER,
    download_parameters,
    download_responses,
    error,
    json_answer,
    param,
    ref,
)
from proxy.api.inputs import query
from proxy.api.routes.base import RouteBase
from proxy.api.views import cursor_page_json, file_json, file_page_json
from proxy.catalog.files import parse_listing, parse_page_size
from proxy.catalog.store import StoredFile
from proxy.cluster.downloads import Redirect
from proxy.remote.tier import LOST, NOT_HERE

_NO_FILE = error("No such file, or it is someone else's.")
_NO_VERSION = error("No such file or version, or the file is someone else's.")


class FileRoutes(RouteBase):
    @operation(
        method="GET",
        path="/storage/files/",
        operation_id="files_list",
        tag="files",
        summary="List your files by path, a page at a time",
        description="Ordered by path (Unicode code point order), then id, so pages are "
        "stable. `prefix` keeps the files whose path starts with it (`photos/2024/`), `path` "
        "finds the one file at that path, `page_size` sets the files per page (1 to 1000). "
        "The `next` and `previous` links keep these arguments. "
        "`after` pages by position instead of by number: send it empty for the first page, "
        "then follow `next`, which carries the position after the page's last file; every "
        "page then costs the same at any number of files, files added or deleted meanwhile "
        "shift nothing, and `previous` is null.",
        answer=t.FileList,
        answer_description="One page of files.",
        responses={
            400: error(
                "`page` is given more than once, or the query string is not UTF-8. Also any "
                "other argument given more than once, a `page_size` that is not a whole number "
                "from 1 to 1000, or a `prefix` or `path` with a control character (`field` "
                "says which), an `after` that is not a token from a `next` link, or `after` "
                "and `page` together.",
                page_size={
                    "detail": "page_size must be a whole number from 1 to 1000",
                    "field": "page_size",
                },
                after={"detail": "Invalid cursor.", "field": "after"},
            ),
            404: error(
                "`page` is not a positive whole number, or is past the last page (page 1 "
                "always exists).",
                invalid={"detail": "Invalid page."},
            ),
        },
        parameters=(
            param("Page"),
            param("PageSize"),
            param("PrefixQuery"),
            param("PathFilter"),
            param("After"),
        ),
    )
    async def list_files(self, request: IRequest, caller: TokenClaims) -> bytes:
        asked = query(request, {"page", "page_size", "prefix", "path", "after"})
        size = parse_page_size(asked.get("page_size"), self._files.page_size)
        listing = parse_listing(asked.get("prefix"), asked.get("path"))
        kept = {k: v for k, v in asked.items() if k not in ("page", "after") and v != ""}
        after = asked.get("after")
        if after is not None:
            if asked.get("page"):
                raise BadRequest("Give page or after, not both.", field="after")
            found = await self._files.page_after(caller.user_id, after, size, listing)
            body = cursor_page_json(found, self._base_url(request), kept)
            return respond(request, 200, body)
        count, where, files = await self._files.page(
            caller.user_id, asked.get("page"), size, listing
        )
        body = file_page_json(count, where, files, self._base_url(request), kept)
        return respond(request, 200, body)

    @operation(
        method="GET",
        path="/storage/files/{file_id}/",
        operation_id="file_get",
        tag="files",
        summary="See a file and its versions",
        answer=t.File,
        answer_description="The file.",
        responses={404: _NO_FILE},
    )
    async def file_detail(self, request: IRequest, caller: TokenClaims, file_id: str) -> bytes:
        found = await self._files.get(caller.user_id, file_id)
        replicas = await self._files.replicas(found)
        body = file_json(found, self._base_url(request), replicas)
        body.update(await self._remote.view(found.current.blob.id))
        body["cache_url"] = self._file_url(request, found.id, "cache")
        body["uncache_url"] = self._file_url(request, found.id, "uncache")
        return respond(request, 200, body)

    async def _own_or_staff(self, caller: TokenClaims, file_id: str) -> StoredFile:
        return await self._files.get(None if caller.is_staff else caller.user_id, file_id)

    @operation(
        method="POST",
        path="/storage/files/{file_id}/uncache",
        operation_id="file_uncache",
        tag="files",
        summary="Release a file's local copies; keep it only in S3",
        description="Owner or staff. Allowed once the current version is `mirrored` and its S3 "
        "copy verified; its replicas on storage nodes are deleted and the file shows "
        "`remote_state: remote`.",
        answer=t.RemoteAction,
        answer_description="Released (or already only in S3).",
        responses={
            404: _NO_FILE,
            409: error(
                "The file is not mirrored to S3 and verified yet. Content stored before each "
                "account's content was kept apart, and still used by another account's files, "
                "only staff can uncache."
            ),
        },
    )
    async def uncache(self, request: IRequest, caller: TokenClaims, file_id: str) -> bytes:
        """Release the local copies of a file verified in S3 (owner or staff)."""
        found = await self._own_or_staff(caller, file_id)
        await self._remote.uncache(
            found.current.blob.id, None if caller.is_staff else caller.user_id
        )
        body = {"detail": "Local copies released; the file is kept in S3", "remote_state": "remote"}
        return respond(
            request, 200, {**body, "cache_url": self._file_url(request, found.id, "cache")}
        )

    @operation(
        method="POST",
        path="/storage/files/{file_id}/cache",
        operation_id="file_cache",
        tag="files",
        summary="Bring a file back from S3 to storage nodes",
        description="Owner or staff. A storage node downloads the parts, checks each part's "
        "sha256 and the whole file's, then replication brings the copy count back. A second "
        "request joins the first.",
        answer=t.RemoteAction,
        answer_description="Already on storage nodes.",
        responses={
            202: json_answer(
                "Restore queued (or joined); watch the file's `restore` progress.",
                ref("RemoteAction"),
                RETRY_AFTER,
            ),
            404: _NO_FILE,
            409: error("The content is in neither a node nor the bucket."),
        },
    )
    async def cache(self, request: IRequest, caller: TokenClaims, file_id: str) -> bytes:
        """Bring a file back from S3 to storage nodes (owner or staff); joins a queued restore."""
        found = await self._own_or_staff(caller, file_id)
        state = await self._remote.cache(found.current.blob.id)
        detail_url = f"{self._base_url(request)}/storage/files/{found.id}/"
        if state == "restoring":
            request.setHeader("Retry-After", str(self._remote.restore_retry_after))
            body = {"detail": "Restore from S3 queued", "remote_state": state}
            return respond(request, 202, {**body, "status_url": detail_url})
        body = {"detail": "This file is already on storage nodes", "remote_state": state}
        return respond(request, 200, {**body, "status_url": detail_url})

    @operation(
        method="DELETE",
        path="/storage/files/{file_id}/",
        operation_id="file_delete",
        tag="files",
        summary="Delete a file with all its versions",
        status=204,
        answer_description="Deleted.",
        responses={404: _NO_FILE},
    )
    async def delete_file(self, request: IRequest, caller: TokenClaims, file_id: str) -> bytes:
        await self._files.delete(caller.user_id, file_id)
        request.setResponseCode(204)
        return b""

    @operation(
        method="PATCH",
        path="/storage/files/{file_id}/",
        operation_id="file_move",
        tag="files",
        summary="Move (rename) a file: another path among yours, with all its versions",
        answer=t.File,
        answer_description="The file at its new path.",
        body=t.FileMove,
        body_media=("application/json",),
        responses={
            400: error("`path` is missing or not a valid path (see `field`)."),
            404: _NO_FILE,
            409: error("Another of your files is at that path."),
        },
    )
    async def move_file(
        self, request: IRequest, caller: TokenClaims, file_id: str, body: t.FileMove
    ) -> bytes:
        found = await self._files.move(caller.user_id, file_id, body.path)
        return respond(request, 200, file_json(found, self._base_url(request)))

    @operation(
        method="POST",
        path="/storage/files/{file_id}/rollback/",
        operation_id="file_rollback",
        tag="files",
        summary="Make an earlier version current again",
        answer=t.File,
        answer_description="The file.",
        body=t.Rollback,
        responses={400: error("`version` is missing or not a positive integer."), 404: _NO_VERSION},
    )
    async def rollback(
        self, request: IRequest, caller: TokenClaims, file_id: str, body: t.Rollback
    ) -> bytes:
        found = await self._files.rollback(caller.user_id, file_id, body.version)
        return respond(request, 200, file_json(found, self._base_url(request)))

    @operation(
        method="GET",
        also=("HEAD",),
        path="/storage/download/{file_id}/",
        operation_id="file_download",
        tag="files",
        summary="Download a file, whole or by byte range",
        description="Without `version`, the current version is sent. One satisfiable range gets "
        "a 206 with `Content-Range`, several get `multipart/byteranges`; a malformed `Range`, "
        "or an `If-Range` that does not match, gets the whole file. `HEAD` is answered too, "
        "with the headers a `GET` would get.",
        responses={
            **download_responses(),
            202: json_answer(
                "With `restore=1` on a file kept only in S3: restore queued; try again later.",
                ref("RemoteAction"),
                RETRY_AFTER,
            ),
            400: error("`version` is not a positive whole number."),
            404: _NO_VERSION,
            409: error(
                "The file is kept only in S3 (uncached): `cache_url` brings it back.",
                remote={"detail": "file is in remote storage", "cache_url": "https://…/cache"},
            ),
            410: error("A disaster recovery found the content in no node and not in S3."),
        },
        parameters=download_parameters(),
    )
    async def download(self, request: IRequest, caller: TokenClaims, file_id: str) -> Any:
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
                body = {"detail": "file is in remote storage; restore queued"}
                return respond(
                    request, 202, {**body, "remote_state": state, "cache_url": cache_url}
                )
            body = {"detail": "file is in remote storage", "cache_url": cache_url}
            return respond(request, 409, body)
        client = request.getClientAddress()
        where = await self._downloads.locate(
            chosen.blob, stored.filename, getattr(client, "host", ""), chosen.content_type
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
            content_type=chosen.content_type or "application/octet-stream",
        )
