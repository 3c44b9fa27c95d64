"""The web application: every page module's routes on one Klein app, the static files, and
how errors become pages (a login redirect, or a page that says what went wrong)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.static import File
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound

from common.errors import ApiError
from proxy.web.pages.accounts import AccountPages
from proxy.web.pages.admin import AdminPages
from proxy.web.pages.archives import ArchivePages
from proxy.web.pages.base import LoginRequired, Redirect, local_path, pages_of
from proxy.web.pages.console_jobs import JobPages
from proxy.web.pages.console_log import LogPages
from proxy.web.pages.console_nodes import NodePages
from proxy.web.pages.console_overview import OverviewPages
from proxy.web.pages.console_s3 import S3Pages
from proxy.web.render import page_headers

log = Logger()
STATIC = Path(__file__).parent / "static"
PAGE_ROOTS = {b"", b"register", b"login", b"logout", b"profile", b"archives", b"admin", b"static"}


_TYPES = {
    **File.contentTypes,
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".map": "application/json",
    ".wasm": "application/wasm",
}


class StaticFiles(File):
    """Our own scripts, stylesheet and images: typed by extension, never sniffed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contentTypes = _TYPES

    def render_GET(self, request: Any) -> Any:
        request.setHeader("X-Content-Type-Options", "nosniff")
        request.setHeader("Cache-Control", "no-cache")
        return super().render_GET(request)

    def directoryListing(self) -> IResource:
        return self.childNotFound


class WebApp(
    AccountPages,
    ArchivePages,
    AdminPages,
    OverviewPages,
    NodePages,
    S3Pages,
    JobPages,
    LogPages,
):
    app = Klein()

    @app.route("/static/", branch=True, methods=["GET", "HEAD"])
    def static(self, request: IRequest) -> IResource:
        return StaticFiles(str(STATIC))


for _name, _path, _methods in pages_of(WebApp):
    WebApp.app.route(_path, methods=_methods, endpoint=_name)(getattr(WebApp, _name))


@WebApp.app.handle_errors(LoginRequired)
def _login_first(self: Any, request: IRequest, failure: Failure) -> bytes:
    assert isinstance(failure.value, LoginRequired)
    target = "/login/?next=" + quote(local_path(failure.value.next_path), safe="/")
    return _redirect(request, target)


@WebApp.app.handle_errors(Redirect)
def _redirected(self: Any, request: IRequest, failure: Failure) -> bytes:
    assert isinstance(failure.value, Redirect)
    return _redirect(request, failure.value.location)


@WebApp.app.handle_errors(ApiError)
def _refused(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, ApiError)
    return _error_page(self, request, error.status, error.detail)


@WebApp.app.handle_errors(HTTPException)
def _routing(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, HTTPException)
    if isinstance(error, MethodNotAllowed):
        request.setHeader("Allow", ", ".join(error.valid_methods or ()))
    if error.code in (301, 302, 307, 308) and error.response is not None:  # a missing slash
        location = error.response.headers.get("Location", "/")
        request.setResponseCode(error.code)
        request.setHeader("Location", location)
        return b""
    status = error.code or 404
    message = "There is no such page." if isinstance(error, RouteNotFound) else error.name
    return _error_page(self, request, status, message)


@WebApp.app.handle_errors(Exception)
def _broken(self: Any, request: IRequest, failure: Failure) -> bytes:
    log.failure("page {uri} failed", failure, uri=request.uri)
    return _error_page(self, request, 500, "Something went wrong on the server; it was logged.")


def _redirect(request: IRequest, location: str) -> bytes:
    page_headers(request)
    request.setResponseCode(303)
    request.setHeader("Location", location)
    return b""


def _error_page(app: Any, request: IRequest, status: int, message: str) -> bytes:
    return app._render.page(  # type: ignore[no-any-return]
        request,
        "error.html",
        status,
        user=None,
        csrf_token="",
        code=status,
        message=message,
        events_since=None,
    )
