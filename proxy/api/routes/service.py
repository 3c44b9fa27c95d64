"""Health, the OpenAPI document and its ReDoc page."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from common.errors import NotFound
from common.web import respond
from proxy.api import docs_page, openapi
from proxy.api import types as t
from proxy.api.contract import operation
from proxy.api.docs_parts import error, json_answer, text
from proxy.api.routes.base import RouteBase


class ServiceRoutes(RouteBase):
    @operation(
        method="GET",
        path="/health",
        operation_id="health",
        tag="service",
        summary="Is the proxy up?",
        access="public",
        answer=t.Health,
        answer_description="Up.",
    )
    def health(self, request: IRequest) -> bytes:
        return respond(request, 200, {"status": "ok"})

    @operation(
        method="GET",
        path="/openapi.json",
        operation_id="openapi",
        tag="service",
        summary="This API description (OpenAPI 3.1)",
        access="public",
        responses={200: json_answer("The document.", {"type": "object"})},
    )
    def openapi_json(self, request: IRequest) -> bytes:
        return respond(request, 200, openapi.openapi_spec(self._base_url(request)))

    @operation(
        method="GET",
        path="/docs/redoc/",
        operation_id="redoc",
        tag="service",
        summary="This documentation, rendered by ReDoc",
        access="public",
        responses={200: text("text/html", "The page.")},
    )
    def redoc(self, request: IRequest) -> bytes:
        request.setHeader("Content-Type", "text/html; charset=utf-8")
        return docs_page.redoc_html()

    @operation(
        method="GET",
        path="/docs/redoc/redoc.standalone.js",
        operation_id="redoc_asset",
        tag="service",
        summary="The ReDoc script the documentation page loads",
        access="public",
        responses={
            200: text("text/javascript", "The script, served by the proxy itself (no CDN)."),
            404: error("Not fetched on this machine: run `scripts/fetch-assets`."),
        },
    )
    def redoc_asset(self, request: IRequest) -> bytes:
        path = docs_page.redoc_asset_path()
        if path is None:
            raise NotFound("ReDoc is not installed here; run scripts/fetch-assets")
        request.setHeader("Content-Type", "text/javascript")
        request.setHeader("Cache-Control", "public, max-age=86400")
        return path.read_bytes()
