"""tus 1.0 resumable uploads at ``/files/``: the second dialect over the one upload engine.

Each request is checked here for what tus asks of it (``Tus-Resumable``, the content type,
``Upload-Offset``...) and handed to ``proxy.uploads.tus``. ``Tus-Resumable`` is set on every
answer under ``/files/`` but OPTIONS by the site (``proxy.uploads.site``), errors included;
``X-HTTP-Method-Override`` is applied there too, before routing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.threads import deferToThreadPool
from twisted.web.iweb import IRequest

from common.errors import ApiError, BadRequest, Conflict
from common.tokens import TokenClaims
from common.web import header
from proxy.api.contract import operation
from proxy.api.docs_parts import (
    QUOTA_EXCEEDED,
    TUS_CAPABILITIES,
    TUS_OLD_CLIENT,
    TUS_STREAM_BODY,
    TUS_VERSION_PARAM,
    error,
    header_param,
    too_many_uploads,
    tus_headers,
)
from proxy.api.forms import content_type
from proxy.api.routes.base import RouteBase
from proxy.api.tus_headers import (
    CHECKSUMS,
    EXTENSIONS,
    OFFSET_STREAM,
    TUS_VERSION,
    Checksum,
    ChecksumMismatch,
    PreconditionFailed,
    check_version,
    http_date,
    number,
    parse_checksum,
    parse_concat,
    parse_metadata,
)
from proxy.uploads.bodies import ChunkBody, PlacedChunk, SpoolBody, SpooledChunk
from proxy.uploads.rules import OffsetMismatch, validate_upload_id
from proxy.uploads.uploadstore import COMPLETE, Upload

Json = dict[str, Any]


_NO_UPLOAD = error("No such upload, or it is someone else's.")
_GONE = error("The upload expired and its bytes were dropped.")


class TusRoutes(RouteBase):
    def _capabilities(self, request: IRequest) -> bytes:
        request.setResponseCode(204)
        request.setHeader("Tus-Version", TUS_VERSION)
        request.setHeader("Tus-Extension", ",".join(EXTENSIONS))
        request.setHeader("Tus-Max-Size", str(self._tus.max_size))
        request.setHeader("Tus-Checksum-Algorithm", ",".join(CHECKSUMS))
        return b""

    @operation(
        method="OPTIONS",
        path="/files/",
        operation_id="tus_options",
        tag="tus",
        summary="tus: what this server supports",
        access="public",
        status=204,
        responses={204: TUS_CAPABILITIES},
    )
    async def tus_options(self, request: IRequest) -> bytes:
        return self._capabilities(request)

    @operation(
        method="OPTIONS",
        path="/files/{upload_id}",
        operation_id="tus_upload_options",
        tag="tus",
        summary="tus: what this server supports (asked of an upload's URL)",
        access="public",
        status=204,
        responses={204: TUS_CAPABILITIES, 404: error("Not an upload's URL.")},
    )
    async def tus_upload_options(self, request: IRequest, upload_id: str) -> bytes:
        validate_upload_id(upload_id)
        return self._capabilities(request)

    @operation(
        method="POST",
        path="/files/",
        operation_id="tus_create",
        tag="tus",
        summary="tus: create an upload (creation, creation-with-upload, defer-length)",
        description="Send `Upload-Length` or `Upload-Defer-Length: 1`, and `Upload-Metadata` "
        "(`filename` or `name`, `path`, `parent`: a file id to add a version to, `filetype`). "
        "A body (`application/offset+octet-stream`) is the upload's first bytes.",
        status=201,
        request_body=TUS_STREAM_BODY,
        parameters=(
            TUS_VERSION_PARAM,
            header_param("Upload-Length", "The upload's size in bytes."),
            header_param("Upload-Defer-Length", "`1`: the size comes with a later PATCH."),
            header_param("Upload-Metadata", "`key base64value` pairs, comma-separated."),
            header_param(
                "Upload-Concat",
                "`partial` (a part of a parallel upload), or `final;<url> <url> ...`: the file "
                "is these partial uploads, in order (they may still be unfinished).",
            ),
        ),
        responses={
            201: {
                "description": "Created (a final upload of finished partials: stored).",
                "headers": tus_headers(
                    "Location", "Upload-Offset", "Upload-Expires", "Upload-Concat"
                ),
            },
            400: error(
                "Bad Upload-Length, Upload-Defer-Length, Upload-Metadata or Upload-Concat; a "
                "final upload with a length or a body, or naming an upload that is not partial."
            ),
            404: error("No such `parent` file or partial upload, or it is someone else's."),
            412: TUS_OLD_CLIENT,
            413: error(
                "Upload-Length is above Tus-Max-Size, or the upload (its Upload-Length, or with "
                "a deferred length the body sent with the creation) would pass your quota; "
                "nothing is created. The answer says your `quota` and the bytes `used` (your "
                "files' versions and open uploads).",
                quota_exceeded=QUOTA_EXCEEDED,
            ),
            429: too_many_uploads(),
        },
    )
    async def tus_create(self, request: IRequest, caller: TokenClaims) -> bytes:
        self._check_version(request)
        length = number(header(request, "upload-length"), "Upload-Length")
        deferred = header(request, "upload-defer-length")
        concat, part_ids = parse_concat(header(request, "upload-concat"), self._tus.path)
        raw_metadata = header(request, "upload-metadata") or ""
        metadata = parse_metadata(raw_metadata)
        if concat == "final":
            return await self._create_final(request, caller, part_ids, metadata, raw_metadata)
        if deferred is not None and deferred.strip() != "1":
            raise BadRequest("Upload-Defer-Length must be 1", field="Upload-Defer-Length")
        if (length is None) == (deferred is None):
            raise BadRequest("Send either Upload-Length or Upload-Defer-Length: 1")
        body = self._stream_body(request)
        upload = await self._tus.create(
            caller.user_id, length, metadata, raw_metadata.strip(), concat, body
        )
        return self._created(request, upload)

    async def _create_final(
        self,
        request: IRequest,
        caller: TokenClaims,
        part_ids: list[str],
        metadata: dict[str, str],
        raw_metadata: str,
    ) -> bytes:
        """``Upload-Concat: final;...``: no length (the partials say it) and no body."""
        if header(request, "upload-length") is not None:
            raise BadRequest("A final upload takes no Upload-Length: its partials add up to it")
        body = request.content
        assert isinstance(body, SpoolBody)  # only PATCH bodies are written in place
        if body.size:
            raise BadRequest("A final upload takes no body: PATCH its partial uploads")
        upload = await self._tus.create_final(
            caller.user_id, part_ids, metadata, raw_metadata.strip()
        )
        return self._created(request, upload)

    @operation(
        method="HEAD",
        path="/files/{upload_id}",
        operation_id="tus_head",
        tag="tus",
        summary="tus: where to resume an upload",
        parameters=(TUS_VERSION_PARAM,),
        responses={
            200: {
                "description": "The upload's offset (and length, metadata, expiry).",
                "headers": tus_headers(
                    "Upload-Offset",
                    "Upload-Length",
                    "Upload-Defer-Length",
                    "Upload-Metadata",
                    "Upload-Expires",
                    "Upload-Concat",
                    "Cache-Control",
                ),
            },
            404: _NO_UPLOAD,
            410: _GONE,
            412: TUS_OLD_CLIENT,
        },
    )
    async def tus_head(self, request: IRequest, caller: TokenClaims, upload_id: str) -> bytes:
        self._check_version(request)
        request.setHeader("Cache-Control", "no-store")
        upload = await self._tus.status(caller.user_id, upload_id)
        if upload.metadata:
            request.setHeader("Upload-Metadata", upload.metadata)
        if upload.total is not None:
            request.setHeader("Upload-Length", str(upload.total))
        else:
            request.setHeader("Upload-Defer-Length", "1")
        self._progress_headers(request, upload)
        return b""

    @operation(
        method="PATCH",
        path="/files/{upload_id}",
        operation_id="tus_patch",
        tag="tus",
        summary="tus: send bytes at the upload's offset",
        description="The body (`application/offset+octet-stream`) is written at `Upload-Offset`,"
        " which must be the upload's offset. Bytes that arrive before the connection drops are "
        "kept (ask with HEAD). With `Upload-Checksum` the bytes are checked first and dropped "
        "on a mismatch (460). When the last byte is in, the upload becomes a file.",
        status=204,
        request_body=TUS_STREAM_BODY,
        parameters=(
            TUS_VERSION_PARAM,
            header_param("Upload-Offset", "Where these bytes start.", required=True),
            header_param("Upload-Length", "A deferred upload's size, said once."),
            header_param("Upload-Checksum", "`sha1|md5|sha256 <base64 digest>` of this body."),
        ),
        responses={
            204: {
                "description": "Stored durably.",
                "headers": tus_headers("Upload-Offset", "Upload-Expires"),
            },
            400: error("Bad Upload-Offset, Upload-Length or Upload-Checksum."),
            403: error("A final upload takes no bytes: PATCH its partial uploads."),
            404: _NO_UPLOAD,
            409: error(
                "Upload-Offset is not the upload's offset (nothing was written), or another "
                "request is writing to the upload.",
            ),
            410: _GONE,
            412: TUS_OLD_CLIENT,
            413: error(
                "The upload would pass Tus-Max-Size, or, for an upload of deferred length, this "
                "body or the Upload-Length said would pass your quota: nothing of it is kept, "
                "the offset stays (HEAD); the bytes before it stay and the upload can go on.",
                quota_exceeded=QUOTA_EXCEEDED,
            ),
            460: error("The body does not have the checksum in Upload-Checksum: dropped."),
        },
    )
    async def tus_patch(self, request: IRequest, caller: TokenClaims, upload_id: str) -> bytes:
        # Until the engine takes over an in-place body (synchronously, in ``append``), the
        # end of this request releases its claim: a refusal here needs no clean-up.
        self._check_version(request)
        if content_type(header(request, "content-type")) != OFFSET_STREAM:
            raise ApiError(f"Content-Type must be {OFFSET_STREAM}", status=415)
        offset = number(header(request, "upload-offset"), "Upload-Offset")
        if offset is None:
            raise BadRequest("Upload-Offset is required", field="Upload-Offset")
        length = number(header(request, "upload-length"), "Upload-Length")
        checksum = parse_checksum(header(request, "upload-checksum"))
        chunk = await self._patch_body(request, caller, upload_id, offset, checksum)
        try:
            upload = await self._tus.patch(caller.user_id, upload_id, offset, chunk, length)
        except OffsetMismatch as exc:
            request.setHeader("Upload-Offset", str(exc.extra.get("offset", "")))
            raise Conflict(exc.detail, **exc.extra) from None
        request.setResponseCode(204)
        self._progress_headers(request, upload)
        return b""

    async def _patch_body(
        self,
        request: IRequest,
        caller: TokenClaims,
        upload_id: str,
        offset: int,
        checksum: Checksum | None,
    ) -> ChunkBody:
        body = request.content
        if isinstance(body, PlacedChunk):
            return body  # written in place while it arrived (checksummed bodies never are)
        assert isinstance(body, SpoolBody)
        if body.too_large:
            # Spooled (this process did not know the offset), and too big for the spool: the
            # offset is now learned, so the client's next PATCH is written in place.
            upload = await self._tus.status(caller.user_id, upload_id)
            request.setHeader("Upload-Offset", str(upload.received))
            raise Conflict(
                "This PATCH could not be taken in one piece: send HEAD, then PATCH again",
                offset=upload.received,
            )
        spooled = SpooledChunk(body.hand_over(), body.size)
        if checksum is not None:
            digest = await deferToThreadPool(self._threads, self._pool, _digest, spooled, checksum)
            if digest != checksum.digest:
                spooled.close()
                raise ChecksumMismatch(f"The body does not have this {checksum.algorithm}")
        return spooled

    @operation(
        method="DELETE",
        path="/files/{upload_id}",
        operation_id="tus_terminate",
        tag="tus",
        summary="tus: terminate an unfinished upload and drop its bytes",
        status=204,
        parameters=(TUS_VERSION_PARAM,),
        responses={
            204: {"description": "Terminated.", "headers": tus_headers("Tus-Resumable")},
            400: error("The upload is finished: delete the file instead."),
            404: _NO_UPLOAD,
            409: error("Another request is writing to the upload."),
            412: TUS_OLD_CLIENT,
        },
    )
    async def tus_terminate(self, request: IRequest, caller: TokenClaims, upload_id: str) -> bytes:
        self._check_version(request)
        await self._tus.terminate(caller.user_id, upload_id)
        request.setResponseCode(204)
        return b""

    def _stream_body(self, request: IRequest) -> SpooledChunk | None:
        body = request.content
        assert isinstance(body, SpoolBody)
        if not body.size:
            return None
        if content_type(header(request, "content-type")) != OFFSET_STREAM:
            raise ApiError(f"Content-Type must be {OFFSET_STREAM}", status=415)
        if body.too_large:
            return None  # created without it: the client PATCHes from offset 0
        return SpooledChunk(body.hand_over(), body.size)

    @staticmethod
    def _check_version(request: IRequest) -> None:
        """412 with ``Tus-Version`` unless the request says ``Tus-Resumable: 1.0.0``."""
        try:
            check_version(header(request, "tus-resumable"))
        except PreconditionFailed:
            request.setHeader("Tus-Version", TUS_VERSION)
            raise

    def _created(self, request: IRequest, upload: Upload) -> bytes:
        request.setResponseCode(201)
        request.setHeader("Location", self._upload_url(request, upload.id))
        self._progress_headers(request, upload)
        return b""

    def _upload_url(self, request: IRequest, upload_id: str) -> str:
        return f"{self._base_url(request)}{self._tus.path}{upload_id}"

    def _progress_headers(self, request: IRequest, upload: Upload) -> None:
        """The offset (none for a final upload not assembled yet), expiry and concatenation."""
        if upload.concat != "final" or upload.status == COMPLETE:
            request.setHeader("Upload-Offset", str(upload.received))
        if upload.status != COMPLETE:
            request.setHeader("Upload-Expires", http_date(upload.expires_at))
        if upload.concat == "partial":
            request.setHeader("Upload-Concat", "partial")
        elif upload.concat == "final":
            urls = " ".join(self._upload_url(request, part) for part in upload.parts.split())
            request.setHeader("Upload-Concat", f"final;{urls}")


def _digest(body: SpooledChunk, checksum: Checksum) -> bytes:
    hasher = checksum.hasher()
    body.file.seek(0)
    while piece := body.file.read(1 << 20):
        hasher.update(piece)
    body.file.seek(0)
    return hasher.digest()
