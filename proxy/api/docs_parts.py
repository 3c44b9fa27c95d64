"""Small OpenAPI fragments the route declarations use where a type cannot say it all:
error answers with their examples, references to shared parameters, chunk bodies, binary
downloads. Plain JSON values; ``proxy.api.openapi`` assembles them into the document."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

BINARY: Json = {
    "type": "string",
    "format": "binary",
    "contentMediaType": "application/octet-stream",
}
RETRY_AFTER: Json = {"Retry-After": {"schema": {"type": "integer"}}}


def ref(name: str, kind: str = "schemas") -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def param(name: str) -> Json:
    """A parameter shared through ``components/parameters``."""
    return ref(name, "parameters")


def error(description: str, **examples: Json) -> Json:
    """An error answer: the ``Error`` schema, with named examples of its body."""
    content: Json = {"schema": ref("Error")}
    if examples:
        content["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"description": description, "content": {"application/json": content}}


def json_answer(description: str, schema: Json, headers: Json | None = None) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def binary(description: str, **headers: Json) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/octet-stream": {"schema": BINARY}},
    }
    if headers:
        response["headers"] = headers
    return response


def text(media: str, description: str) -> Json:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def chunk_body(form: str) -> Json:
    """A chunk: a multipart form (schema ``form``) or the raw bytes."""
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": ref(form)},
            "application/octet-stream": {"schema": BINARY},
        },
    }


UPLOAD_ERRORS: Json = {
    "bad_range": {"detail": "Malformed Content-Range header; expected 'bytes START-END/TOTAL'"},
    "offsets": {"detail": "Offsets do not match", "offset": 1048576},
}


QUOTA_EXCEEDED: Json = {"detail": "quota exceeded", "quota": 10737418240, "used": 10700000000}


def too_many_uploads() -> Json:
    """429 for an upload created while the account has ``max_open_uploads`` open already."""
    return error(
        "You have as many unfinished uploads open as this proxy allows (`max_open_uploads`): "
        "finish or abort one first. Expired uploads do not count.",
        too_many={
            "detail": "too many open uploads: finish or cancel one first",
            "open": 20,
            "limit": 20,
        },
    )


def busy() -> Json:
    """409 for a request that waited ``claim_wait`` for another one writing to the upload."""
    answer = error(
        "Another request was still writing to this upload (e.g. a chunk whose connection was "
        "lost is being stored) for longer than the proxy's `claim_wait`: the answer carries "
        "the upload's `offset`; retry after `Retry-After` seconds.",
        busy={
            "detail": "Another request is writing to this upload; retry shortly",
            "offset": 1048576,
            "retry_after": 1,
        },
    )
    answer["headers"] = dict(RETRY_AFTER)
    return answer


def throttled() -> Json:
    """429 for a login while its account's (or address's) wait after failed logins runs."""
    answer = error(
        "Too many failed logins for this account (or from this address): wait `Retry-After` "
        "seconds. The wait grows with each failure and always ends.",
        throttled={"detail": "Too many failed logins; try again in 4 s", "retry_after": 4},
    )
    answer["headers"] = dict(RETRY_AFTER)
    return answer


def download_headers() -> Json:
    return {
        name: ref(name, "headers")
        for name in ("ETag", "Last-Modified", "Content-Disposition", "Accept-Ranges")
    }


def download_responses() -> dict[int, Json]:
    """Every answer of a download but the JSON ones, which the declaration names."""
    headers = download_headers()
    partial = binary(
        "The requested range.", **headers, **{"Content-Range": ref("Content-Range", "headers")}
    )
    partial["content"]["multipart/byteranges"] = {"schema": {"type": "string"}}
    return {
        200: binary("The whole version.", **headers),
        206: partial,
        304: {"description": "The client's copy is current.", "headers": headers},
        416: {
            "description": "No requested range is within the file.",
            "headers": {"Content-Range": ref("Content-Range", "headers")},
            "content": {"application/json": {"schema": ref("Error")}},
        },
    }


def download_parameters() -> tuple[Json, ...]:
    conditional = ("VersionQuery", "Range", "IfRange", "IfNoneMatch", "IfModifiedSince")
    return (
        *(param(name) for name in conditional),
        {
            "in": "query",
            "name": "restore",
            "schema": {"type": "string", "enum": ["1"]},
            "description": "For a file kept only in S3: queue its restore (answers 202).",
            "allowEmptyValue": True,
        },
    )


# ---------------------------------------------------------------- tus (proxy.api.routes.tus)


def tus_headers(*names: str) -> Json:
    """The named tus answer headers, described."""
    described = {
        "Tus-Resumable": "`1.0.0`.",
        "Upload-Offset": "Bytes the server holds durably: the next PATCH starts here.",
        "Upload-Length": "The upload's size, once known.",
        "Upload-Defer-Length": "`1` while the size is not known yet.",
        "Upload-Metadata": "The metadata as given at creation.",
        "Upload-Expires": "When an unfinished upload is dropped (HTTP date).",
        "Location": "The new upload's URL.",
        "Cache-Control": "`no-store`.",
        "Tus-Version": "`1.0.0`.",
        "Tus-Extension": "The extensions this server supports.",
        "Tus-Max-Size": "The largest upload, in bytes.",
        "Tus-Checksum-Algorithm": "`sha1,md5,sha256`.",
        "Upload-Concat": "`partial`, or `final;` and the partial uploads' URLs.",
    }
    return {name: {"description": described[name], "schema": {"type": "string"}} for name in names}


def header_param(name: str, description: str, required: bool = False) -> Json:
    """A request header the operation reads."""
    return {
        "in": "header",
        "name": name,
        "required": required,
        "schema": {"type": "string"},
        "description": description,
    }


TUS_VERSION_PARAM = header_param("Tus-Resumable", "`1.0.0` (412 otherwise).", required=True)


TUS_OLD_CLIENT = {
    "description": "`Tus-Resumable` is missing or names a version this server does not speak.",
    "headers": tus_headers("Tus-Version"),
    "content": {"application/json": {"schema": ref("Error")}},
}
TUS_STREAM_BODY: Json = {
    "required": False,
    "content": {
        "application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}
    },
}
TUS_CAPABILITIES = {
    "description": "What this server supports.",
    "headers": tus_headers(
        "Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm"
    ),
}


# ---------------------------------------------------------------- events (proxy.api.routes.events)

_EVENT_ID: Json = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}

SINCE_PARAM: Json = {
    "in": "query",
    "name": "since",
    "schema": _EVENT_ID,
    "description": "The newest event id you have (`0`: all that are kept). Left out: start "
    "from now.",
    "allowEmptyValue": True,
}
LAST_EVENT_ID_PARAM = {
    **header_param(
        "Last-Event-ID",
        "The newest event id you have, as a reconnecting `EventSource` sends it; wins over "
        "`since`.",
    ),
    "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
}
TIMEOUT_PARAM: Json = {
    "in": "query",
    "name": "timeout",
    "schema": {"type": "integer", "minimum": 0, "maximum": 60, "default": 30},
    "description": "Seconds to wait for an event when there is none yet; `0` answers at once.",
    "allowEmptyValue": True,
}

_STREAM_EXAMPLE = (
    ": connected\n\n"
    "id: 41\nevent: upload.progress\n"
    'data: {"filename": "a.iso", "offset": 1048576, "total": 5242880, "upload_id": "…"}\n\n'
    "id: 42\nevent: file.created\n"
    'data: {"file_id": "…", "filename": "a.iso", "size": 5242880, "version": 1}\n\n'
    ": keep-alive\n\n"
)


def event_stream() -> Json:
    """The answer of ``GET /api/events``: a stream that stays open."""
    return {
        "description": "Server-sent events, for as long as you stay: each event's `id` is its "
        "number among your events, `event` its type and `data` its JSON payload (as in the "
        "`Event` schema's `data`). A message with only an `id` moves your `Last-Event-ID` (at "
        "the start without a cursor, and after a reset). `event: reset` (no id, `data: {}`) "
        "says your cursor is older than the events kept or is not one of yours: reload what "
        "you show. A `: keep-alive` comment comes every 15 s.",
        "headers": {
            "Cache-Control": {"description": "`no-store`.", "schema": {"type": "string"}},
            "X-Accel-Buffering": {"description": "`no`.", "schema": {"type": "string"}},
        },
        "content": {
            "text/event-stream": {"schema": {"type": "string"}, "example": _STREAM_EXAMPLE}
        },
    }
