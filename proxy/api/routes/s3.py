"""Staff only: S3 connections. Their fields travel in the body, never the URL."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from common.errors import BadRequest
from common.tokens import TokenClaims
from common.web import respond
from proxy.api import types as t
from proxy.api.contract import operation, set_fields
from proxy.api.docs_parts import error
from proxy.api.routes.base import RouteBase

_NO_CONNECTION = error("No such connection.")
_NAME = {"name": t.Name}
_BAD = error("A field is missing or malformed (named in `field`), or sent in the URL.")


class S3Routes(RouteBase):
    async def _s3_fields(self, request: IRequest, allowed: set[str]) -> dict[str, Any]:
        """The body's fields only: a secret in a URL would end up in access logs."""
        if request.args:
            names = sorted(key.decode("utf-8", "replace") for key in request.args)
            raise BadRequest(
                "Send an S3 connection's fields in the body, not the URL", fields=names
            )
        return await self._fields(request, allowed)

    @operation(
        method="GET",
        path="/api/s3-connections/",
        operation_id="s3_list",
        tag="s3",
        summary="S3 connections",
        access="staff",
        answer=list[t.S3Connection],
        answer_description="The connections.",
    )
    async def list_s3_connections(self, request: IRequest, caller: TokenClaims) -> bytes:
        return respond(request, 200, await self._s3.list())

    @operation(
        method="POST",
        path="/api/s3-connections/",
        operation_id="s3_add",
        tag="s3",
        summary="Add an S3 connection",
        access="staff",
        status=201,
        answer=t.S3Connection,
        answer_description="Added (not active, not validated yet).",
        body=t.NewS3Connection,
        body_reader="_s3_fields",
        responses={400: _BAD, 409: error("A connection with that name exists.")},
    )
    async def add_s3_connection(
        self, request: IRequest, caller: TokenClaims, body: t.NewS3Connection
    ) -> bytes:
        return respond(request, 201, await self._s3.create(set_fields(body)))

    @operation(
        method="GET",
        path="/api/s3-connections/{name}/",
        operation_id="s3_get",
        tag="s3",
        summary="One S3 connection",
        access="staff",
        answer=t.S3Connection,
        answer_description="The connection.",
        responses={404: _NO_CONNECTION},
        path_types=_NAME,
    )
    async def s3_connection(self, request: IRequest, caller: TokenClaims, name: str) -> bytes:
        return respond(request, 200, await self._s3.get(name))

    @operation(
        method="PATCH",
        path="/api/s3-connections/{name}/",
        operation_id="s3_update",
        tag="s3",
        summary="Change an S3 connection (forgets its last validation)",
        access="staff",
        answer=t.S3Connection,
        answer_description="Changed.",
        body=t.S3ConnectionPatch,
        body_reader="_s3_fields",
        responses={400: _BAD, 404: _NO_CONNECTION},
        path_types=_NAME,
    )
    async def update_s3_connection(
        self, request: IRequest, caller: TokenClaims, name: str, body: t.S3ConnectionChange
    ) -> bytes:
        return respond(request, 200, await self._s3.update(name, set_fields(body)))

    @operation(
        method="DELETE",
        path="/api/s3-connections/{name}/",
        operation_id="s3_remove",
        tag="s3",
        summary="Remove an S3 connection",
        access="staff",
        status=204,
        answer_description="Removed.",
        responses={
            404: _NO_CONNECTION,
            409: error("It is the active connection: activate another first."),
        },
        path_types=_NAME,
    )
    async def remove_s3_connection(
        self, request: IRequest, caller: TokenClaims, name: str
    ) -> bytes:
        await self._s3.delete(name)
        request.setResponseCode(204)
        return b""

    @operation(
        method="POST",
        path="/api/s3-connections/{name}/validate",
        operation_id="s3_validate",
        tag="s3",
        summary="Try the connection now: HeadBucket, then write and delete a small object",
        access="staff",
        answer=t.S3Connection,
        answer_description="The connection with the outcome in `validation_ok` and "
        "`validation_detail`.",
        responses={404: _NO_CONNECTION},
        path_types=_NAME,
    )
    async def validate_s3_connection(
        self, request: IRequest, caller: TokenClaims, name: str
    ) -> bytes:
        """Try the connection against its bucket now; answered 200 whether it works or not."""
        await self._s3_fields(request, set())
        return respond(request, 200, await self._s3.validate(name))

    @operation(
        method="POST",
        path="/api/s3-connections/{name}/activate",
        operation_id="s3_activate",
        tag="s3",
        summary="Make this the one active connection (files are mirrored to it)",
        access="staff",
        answer=t.S3Connection,
        answer_description="Active.",
        responses={
            404: _NO_CONNECTION,
            409: error("Its secret key cannot be opened here: PATCH it first."),
        },
        path_types=_NAME,
    )
    async def activate_s3_connection(
        self, request: IRequest, caller: TokenClaims, name: str
    ) -> bytes:
        await self._s3_fields(request, set())
        return respond(request, 200, await self._s3.activate(name))
