"""Reading a request's inputs: query arguments, small bodies, and upload chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.iweb import IRequest

from common.errors import ApiError, BadRequest, PayloadTooLarge
from common.web import header
from proxy.api.forms import Form, check_fields, content_type, parse_multipart, parse_small_body
from proxy.uploads.bodies import BodyTooLarge, ChunkBody, PlacedChunk, SpoolBody, SpooledChunk

SMALL_BODY_LIMIT = 64 * 1024


def query(request: IRequest, allowed: set[str]) -> dict[str, str]:
    """Query arguments as text, each given at most once and all of them known."""
    found: dict[str, str] = {}
    for raw_key, values in (request.args or {}).items():
        try:
            key = raw_key.decode("utf-8")
            decoded = [value.decode("utf-8") for value in values]
        except UnicodeDecodeError:
            raise BadRequest("query arguments must be UTF-8") from None
        if len(decoded) > 1:
            raise BadRequest(f"query argument {key!r} given more than once")
        found[key] = decoded[0]
    check_fields(found, allowed)
    return found


def query_names(target: bytes) -> list[str]:
    """The names of the query arguments in a request target, sorted: those in the URL itself,
    not the body's fields that Twisted folds into ``request.args`` as well.

    >>> query_names(b"/api-token-auth/?password=x&username=ann&password=y")
    ['password', 'username']
    >>> query_names(b"/api-token-auth/"), query_names(b"/a?"), query_names(b"/a?%70assword")
    ([], [], ['password'])
    """
    query = urlsplit(target.decode("utf-8", "replace")).query
    return sorted({name for name, _ in parse_qsl(query, keep_blank_values=True)})


def refuse_query(request: IRequest, what: str) -> None:
    """400 for a request whose URL has a query: ``what`` (credentials, say) travels in the
    body only, since a URL ends up in access logs, proxies' logs and browser histories."""
    names = query_names(request.uri)
    if names:
        raise BadRequest(f"Send {what} in the body, not the URL", fields=names)


def _spool(request: IRequest) -> SpoolBody:
    body = request.content
    if not isinstance(body, SpoolBody):
        raise BadRequest("this request does not take a raw chunk")
    return body


async def small_fields(
    request: IRequest,
    allowed: set[str],
    threads: IReactorThreads,
    pool: ThreadPool,
    make_spool: Callable[[], IO[bytes]],
) -> dict[str, Any]:
    """Fields from the query and a JSON, urlencoded or multipart body (without files)."""
    fields: dict[str, Any] = dict(query(request, allowed))
    body = _spool(request)
    if body.size > SMALL_BODY_LIMIT:
        raise PayloadTooLarge(f"request body is larger than {SMALL_BODY_LIMIT} bytes")
    ctype = header(request, "content-type")
    if content_type(ctype) == "multipart/form-data":
        form = await deferToThreadPool(
            threads, pool, parse_multipart, body.file(), ctype or "", make_spool
        )
        if form.file is not None:
            form.file.spool.close()
            raise BadRequest("Unknown fields: file", fields=["file"])
        from_body: dict[str, Any] = dict(form.fields)
    else:
        body.seek(0)
        from_body = parse_small_body(body.read(), ctype)
    check_fields(from_body, allowed)
    for key, value in from_body.items():
        if key in fields and fields[key] != value:
            raise BadRequest(f"{key!r} given twice with different values")
        fields[key] = value
    return fields


async def chunk_input(
    request: IRequest,
    allowed: set[str],
    threads: IReactorThreads,
    pool: ThreadPool,
    make_spool: Callable[[], IO[bytes]],
) -> tuple[dict[str, str], ChunkBody]:
    """The chunk's bytes and the fields beside them (query or multipart fields).

    A spooled chunk belongs to the upload engine, which closes it when it is done.
    """
    fields = query(request, allowed)
    body = request.content
    if isinstance(body, PlacedChunk):
        return fields, body
    assert isinstance(body, SpoolBody)
    ctype = header(request, "content-type")
    kind = content_type(ctype)
    try:
        spool = body.file()
    except BodyTooLarge:
        raise PayloadTooLarge("Chunk is larger than the maximum chunk size") from None
    if kind != "multipart/form-data":
        if kind not in {"application/octet-stream", ""}:
            raise ApiError(
                f"Unsupported Content-Type {kind!r}: send multipart/form-data or "
                "application/octet-stream",
                status=415,
            )
        # From here the engine closes the spool, not the request's end (see SpooledChunk).
        return fields, SpooledChunk(body.hand_over(), body.size)
    form: Form = await deferToThreadPool(
        threads, pool, parse_multipart, spool, ctype or "", make_spool
    )
    try:
        check_fields(form.fields, allowed)
        if form.file is None:
            raise BadRequest("multipart body has no 'file' part", field="file")
        for key, value in form.fields.items():
            if key in fields and fields[key] != value:
                raise BadRequest(f"{key!r} given twice with different values")
            fields[key] = value
        # The file part's own name is the default name; with a path, the path's last
        # segment is the name instead.
        if "filename" not in fields and "path" not in fields and form.file.filename:
            fields["filename"] = form.file.filename
    except BaseException:
        if form.file is not None:
            form.file.spool.close()
        raise
    return fields, SpooledChunk(form.file.spool, form.file.size)
