"""The seed's resumable chunked uploads: start, chunks, status, completion, abort."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from common.contentrange import parse_content_range
from common.tokens import TokenClaims
from common.web import header, respond
from proxy.api import types as t
from proxy.api.contract import operation
from proxy.api.docs_parts import (
    QUOTA_EXCEEDED,
    UPLOAD_ERRORS,
    busy,
    chunk_body,
    error,
    param,
    too_many_uploads,
)
from proxy.api.inputs import chunk_input
from proxy.api.routes.base import RouteBase
from proxy.api.views import upload_json
from proxy.uploads.bodies import SpooledChunk

_CHUNK_FIELDS = {"filename", "path", "parent"}
_TOO_LARGE = error(
    "The chunk is larger than this proxy accepts in one request. Also when the upload would "
    "pass your quota (its total, or with a total of `*` this chunk): nothing is stored, and "
    "the answer says your `quota` and the bytes `used` (your files' versions and open "
    "uploads).",
    quota_exceeded=QUOTA_EXCEEDED,
)
_NO_UPLOAD = error("No such upload, or it is someone else's.")
_NO_PARENT = error("No such `parent` file, or it is someone else's.")
_GONE = error("The upload expired and its bytes were dropped.")
_DISK = error("The chunk could not be written durably; send it again.")
_STANDING = "The upload as it now stands."


class UploadRoutes(RouteBase):
    @operation(
        method="GET",
        path="/storage/tmp-upload/",
        operation_id="upload_list",
        tag="uploads",
        summary="List your unfinished uploads, to resume one",
        description="Both dialects' uploads still in progress and not expired, newest first, "
        "each with where it stands (`offset` of `total`). A tus upload also says its `tus_url`.",
        answer=t.UnfinishedUploads,
        answer_description="Your unfinished uploads.",
    )
    async def list_uploads(self, request: IRequest, caller: TokenClaims) -> bytes:
        uploads = await self._uploads.unfinished(caller.user_id)
        base = self._base_url(request)
        results = []
        for upload in uploads:
            shown = {**upload_json(upload, base), "dialect": upload.dialect}
            if upload.dialect == "tus":
                shown["tus_url"] = f"{base}{self._tus.path}{upload.id}"
            results.append(shown)
        return respond(request, 200, {"results": results})

    @operation(
        method="PUT",
        path="/storage/tmp-upload/",
        operation_id="upload_start",
        tag="uploads",
        summary="Start an upload with its first chunk",
        description="The body is either a multipart form with the chunk in `file`, or the raw "
        "chunk with `filename` (and `parent`) in the query string. Send the next chunks to the "
        "`url` in the answer. A `path` (`folder/name`, in the form or the query) may stand "
        "beside or instead of `filename`: it is the file's place among yours, and its last "
        "segment is the filename; without one, the path is the filename. An upload to the "
        "path of one of your files adds a version to it.",
        answer=t.Upload,
        answer_description=_STANDING,
        request_body=chunk_body("ChunkForm"),
        responses={
            400: error(
                "Bad Content-Range, bad or missing filename, unknown form fields, or a first "
                "chunk that does not start at 0. Also a bad path, or a filename that is not "
                "the path's last segment (`field` says which).",
                **UPLOAD_ERRORS,
            ),
            404: _NO_PARENT,
            413: _TOO_LARGE,
            429: too_many_uploads(),
            503: _DISK,
        },
        parameters=(
            param("ContentRange"),
            param("FilenameQuery"),
            param("PathQuery"),
            param("ParentQuery"),
        ),
    )
    async def start_upload(self, request: IRequest, caller: TokenClaims) -> bytes:
        chunk = parse_content_range(header(request, "content-range"))
        fields, body = await chunk_input(
            request, _CHUNK_FIELDS, self._threads, self._pool, self._spool
        )
        upload = await self._uploads.start(
            caller.user_id,
            fields.get("filename", ""),
            fields.get("parent") or None,
            chunk,
            body,
            fields.get("path") or None,
        )
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @operation(
        method="POST",
        path="/storage/tmp-upload/",
        operation_id="upload_whole",
        tag="uploads",
        summary="Upload a whole file in one request",
        description="No Content-Range is needed. The body is a multipart form, or the raw file "
        "with `filename` and `md5` in the query string. A `path` may stand beside or instead "
        "of `filename`, as for the first chunk of a chunked upload.",
        answer=t.Upload,
        answer_description="The completed upload (status 2, with `file_id`).",
        request_body=chunk_body("WholeFileForm"),
        responses={
            400: error(
                "md5 mismatch, bad or missing filename or md5, or unknown fields. Also a bad "
                "path, or a filename that is not the path's last segment (`field` says which)."
            ),
            404: _NO_PARENT,
            413: _TOO_LARGE,
            429: too_many_uploads(),
            503: _DISK,
        },
        parameters=(
            param("FilenameQuery"),
            param("PathQuery"),
            param("ParentQuery"),
            param("Md5Query"),
        ),
    )
    async def whole_upload(self, request: IRequest, caller: TokenClaims) -> bytes:
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
            fields.get("path") or None,
        )
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @operation(
        method="PUT",
        path="/storage/tmp-upload/{upload_id}/",
        operation_id="upload_chunk",
        tag="uploads",
        summary="Send the next chunk",
        description="Same body forms as the first chunk; `filename` and `parent` may be "
        "repeated, but the first chunk's values stand. So does its `path`.",
        answer=t.Upload,
        answer_description=_STANDING,
        request_body=chunk_body("ChunkForm"),
        responses={
            400: error(
                "Bad Content-Range, the upload is already complete, or the chunk does not "
                "start at the upload's `offset` (which the answer carries).",
                **UPLOAD_ERRORS,
            ),
            404: _NO_UPLOAD,
            409: busy(),
            410: _GONE,
            413: _TOO_LARGE,
            503: _DISK,
        },
        parameters=(param("ContentRange"),),
    )
    async def append_chunk(self, request: IRequest, caller: TokenClaims, upload_id: str) -> bytes:
        chunk = parse_content_range(header(request, "content-range"))
        _, body = await chunk_input(request, _CHUNK_FIELDS, self._threads, self._pool, self._spool)
        upload = await self._uploads.append(caller.user_id, upload_id, chunk, body)
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @operation(
        method="GET",
        path="/storage/tmp-upload/{upload_id}/",
        operation_id="upload_get",
        tag="uploads",
        summary="See an upload, e.g. to learn where to resume",
        answer=t.Upload,
        answer_description=_STANDING,
        responses={404: _NO_UPLOAD},
    )
    async def upload_status(self, request: IRequest, caller: TokenClaims, upload_id: str) -> bytes:
        upload = await self._uploads.resumable(caller.user_id, upload_id)
        upload = await self._uploads.with_sha256(upload)
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @operation(
        method="POST",
        path="/storage/tmp-upload/{upload_id}/",
        operation_id="upload_complete",
        tag="uploads",
        summary="Complete an upload by checking its md5",
        description="`md5` may also be given in the query string.",
        answer=t.Upload,
        answer_description="Complete (status 2, with `file_id`).",
        body=t.Completion,
        body_media=(
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/json",
        ),
        body_required=False,
        responses={
            400: error(
                "md5 mismatch (the upload stays open and can be completed again), md5 missing "
                "or malformed, not all bytes received yet (with `offset`), or already complete."
            ),
            404: error("No such upload or `parent` file, or it is someone else's."),
            409: busy(),
            410: _GONE,
        },
        parameters=(param("Md5Query"),),
    )
    async def complete_upload(
        self, request: IRequest, caller: TokenClaims, upload_id: str, body: t.Completion
    ) -> bytes:
        upload = await self._uploads.complete(caller.user_id, upload_id, body.md5)
        return respond(request, 200, upload_json(upload, self._base_url(request)))

    @operation(
        method="DELETE",
        path="/storage/tmp-upload/{upload_id}/",
        operation_id="upload_abort",
        tag="uploads",
        summary="Abort an upload and drop its bytes",
        status=204,
        answer_description="Aborted.",
        responses={
            400: error("The upload is already complete: delete the file instead."),
            404: _NO_UPLOAD,
            409: busy(),
        },
    )
    async def abort_upload(self, request: IRequest, caller: TokenClaims, upload_id: str) -> bytes:
        await self._uploads.abort(caller.user_id, upload_id)
        request.setResponseCode(204)
        return b""
