"""One way errors become HTTP, for the proxy's and the nodes' Klein apps alike.

``answer_errors_as_json(app)`` registers three handlers, tried in order: a domain error
(``ApiError``) is answered with its status and ``{"detail": ..., **extra}``; a routing error
from werkzeug (404 no such path, 405 wrong method with ``Allow``, a redirect to the path with
its trailing slash) is answered in JSON too; anything else is logged with its traceback and
answered 500 with a body that says nothing about the server's insides.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from common.errors import ApiError
from common.web import respond

_REDIRECTS = {301, 302, 307, 308}


def answer_errors_as_json(app: Klein, log: Logger, *, auth_realm: str | None = None) -> None:
    """Register the JSON error handlers on ``app`` (a class-level ``Klein()``).

    With ``auth_realm``, a 401 says how to authenticate (``WWW-Authenticate: JWT realm=...``).
    """

    @app.handle_errors(ApiError)
    def api_error(self: Any, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, ApiError)
        if error.status == 401 and auth_realm is not None:
            request.setHeader("WWW-Authenticate", f'JWT realm="{auth_realm}"')
        if "retry_after" in error.extra:
            request.setHeader("Retry-After", str(error.extra["retry_after"]))
        return respond(request, error.status, error.body())

    @app.handle_errors(HTTPException)
    def routing_error(self: Any, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        status = error.code or 500
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            request.setHeader("Allow", ", ".join(sorted(error.valid_methods)))
        new_url = getattr(error, "new_url", None)
        if status in _REDIRECTS and isinstance(new_url, str):
            # Say where the route is, in JSON like any other answer. The Location is relative
            # so it never echoes the Host header; the query is the request's own (Klein binds
            # the URL map without it).
            query = request.uri.decode("latin-1").partition("?")[2]
            location = urlunsplit(("", "", urlsplit(new_url).path, query, ""))
            request.setHeader("Location", location)
            body = {"detail": "This path ends with a slash", "location": location}
            return respond(request, status, body)
        return respond(request, status, {"detail": error.name})

    @app.handle_errors(Exception)
    def unexpected(self: Any, request: IRequest, failure: Failure) -> bytes:
        log.failure(
            "unhandled error in {method} {uri}", failure, method=request.method, uri=request.uri
        )
        return respond(request, 500, {"detail": "Internal server error"})
