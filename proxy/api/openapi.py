"""The OpenAPI 3.1 description of the proxy's HTTP API.

``openapi_spec`` builds the document the proxy serves at ``/openapi.json`` and ReDoc renders at
``/docs/redoc/``. ``ROUTES`` lists the same operations by hand rather than being read off the
document, so that a test can hold the spec, the list and the Klein app's routes against each
other: a route added in one place and forgotten in another fails a test instead of going
undocumented.
"""

from __future__ import annotations

import json
from typing import Any

Json = dict[str, Any]

API_VERSION = "1.0.0"

ROUTES: list[tuple[str, str]] = [
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs/redoc/"),
    ("GET", "/docs/redoc/redoc.standalone.js"),
    ("POST", "/api/auth/register"),
    ("POST", "/api-token-auth/"),
    ("PUT", "/storage/tmp-upload/"),
    ("POST", "/storage/tmp-upload/"),
    ("GET", "/storage/tmp-upload/{upload_id}/"),
    ("PUT", "/storage/tmp-upload/{upload_id}/"),
    ("POST", "/storage/tmp-upload/{upload_id}/"),
    ("DELETE", "/storage/tmp-upload/{upload_id}/"),
    ("GET", "/storage/files/"),
    ("GET", "/storage/files/{file_id}/"),
    ("DELETE", "/storage/files/{file_id}/"),
    ("POST", "/storage/files/{file_id}/rollback/"),
    ("POST", "/storage/files/{file_id}/cache"),
    ("POST", "/storage/files/{file_id}/uncache"),
    ("GET", "/storage/download/{file_id}/"),
    ("GET", "/api/nodes/"),
    ("POST", "/api/nodes/"),
    ("PATCH", "/api/nodes/{name}/"),
    ("DELETE", "/api/nodes/{name}/"),
    ("GET", "/api/jobs/"),
    ("PATCH", "/api/jobs/{name}/"),
    ("POST", "/api/jobs/{name}/run"),
    ("GET", "/api/system-log/"),
    ("GET", "/api/s3-connections/"),
    ("POST", "/api/s3-connections/"),
    ("GET", "/api/s3-connections/{name}/"),
    ("PATCH", "/api/s3-connections/{name}/"),
    ("DELETE", "/api/s3-connections/{name}/"),
    ("POST", "/api/s3-connections/{name}/validate"),
    ("POST", "/api/s3-connections/{name}/activate"),
]

_SECURITY_SCHEME = "jwt"

_DESCRIPTION = """\
PyArchive keeps large files in three places at once: storage nodes on the local network, an
S3-compatible bucket, and the client's own disk until the upload is confirmed.

Uploads are resumable. `PUT` the first chunk to `/storage/tmp-upload/` with a `Content-Range`
header, `PUT` each next chunk to the `url` the answer gives, then `POST` the whole file's `md5`
to that `url`. After a dropped connection, `GET` the `url`: its `offset` is where to resume.
A small file can go in one `POST /storage/tmp-upload/` with its `md5`.

Log in with `POST /api-token-auth/` and send the token as `Authorization: JWT <token>`
(`Bearer <token>` works too).

Every error is JSON: `{"detail": "what went wrong"}`, sometimes with more fields (`offset`,
`field`).
"""


def openapi_spec(server_url: str) -> Json:
    """The API description for a proxy reachable at ``server_url``.

    The result is a fresh tree of plain JSON values on every call (built, then copied through
    ``json``), so callers may change it and ``json.dumps`` it without surprises.
    """
    spec: Json = {
        "openapi": "3.1.0",
        "info": {
            "title": "PyArchive",
            "version": API_VERSION,
            "description": _DESCRIPTION,
        },
        "servers": [{"url": server_url}],
        "security": [{_SECURITY_SCHEME: []}],
        "tags": [
            {"name": "auth", "description": "Accounts and login tokens."},
            {"name": "uploads", "description": "Resumable, chunked uploads."},
            {"name": "files", "description": "Stored files, their versions and downloads."},
            {"name": "nodes", "description": "Storage nodes (staff only)."},
            {"name": "jobs", "description": "Periodic jobs and the system log (staff only)."},
            {"name": "s3", "description": "S3 connections (staff only)."},
            {"name": "service", "description": "Health and this documentation."},
        ],
        "paths": {
            **_service_paths(),
            **_auth_paths(),
            **_upload_paths(),
            **_file_paths(),
            **_job_paths(),
            **_s3_paths(),
        },
        "components": {
            "schemas": _schemas(),
            "parameters": _parameters(),
            "headers": _headers(),
            "responses": {"Unauthorized": _error("Missing, malformed or expired token.")},
            "securitySchemes": {
                _SECURITY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`JWT <token>` or `Bearer <token>`, with the token from "
                    "`POST /api-token-auth/`.",
                }
            },
        },
    }
    copied: Json = json.loads(json.dumps(spec))
    return copied


# ---------------------------------------------------------------- small builders


def _ref(name: str, kind: str = "schemas") -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: Json, **headers: Json) -> Json:
    response: Json = {"description": description, "content": _json(schema)}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, **examples: Json) -> Json:
    content: Json = {"schema": _ref("Error")}
    if examples:
        content["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"description": description, "content": {"application/json": content}}


def _op(
    op_id: str,
    tag: str,
    summary: str,
    responses: Json,
    *,
    description: str = "",
    parameters: list[Json] | None = None,
    body: Json | None = None,
    public: bool = False,
) -> Json:
    """One operation; unless ``public``, it needs a token and may answer 401."""
    op: Json = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
        responses = {**responses, "415": _error("The body's Content-Type is not one listed.")}
    if public:
        op["security"] = []
    else:
        responses = {**responses, "401": _ref("Unauthorized", "responses")}
    op["responses"] = responses
    return op


_ID: Json = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "32 hex digits."}
_NULLABLE_ID: Json = {**_ID, "type": ["string", "null"]}
_TIME: Json = {"type": "string", "format": "date-time"}
_BINARY: Json = {
    "type": "string",
    "format": "binary",
    "contentMediaType": "application/octet-stream",
}
_MD5: Json = {"type": "string", "pattern": "^[0-9a-fA-F]{32}$", "description": "Hex md5."}
_SHA256: Json = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "Hex sha256."}
_SIZE: Json = {"type": "integer", "minimum": 0, "description": "Bytes."}


def _obj(properties: Json, required: list[str] | None = None, **extra: Any) -> Json:
    schema: Json = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


# ---------------------------------------------------------------- components


def _schemas() -> Json:
    return {
        "Error": _obj(
            {"detail": {"type": "string", "description": "What went wrong, for people."}},
            additionalProperties=True,
            description="Every error answer. Some carry more fields: a refused chunk carries "
            "`offset` (the bytes the server holds), a refused form field names it in `field`.",
        ),
        "Health": _obj({"status": {"type": "string", "const": "ok"}}),
        "Registration": _obj(
            {
                "username": {"type": "string", "minLength": 1},
                "password": {
                    "type": "string",
                    "description": "Refused when too short, entirely numeric, made of too few "
                    "different characters, or containing the username.",
                },
                "email": {"type": "string", "format": "email"},
            },
            ["username", "password"],
        ),
        "User": _obj(
            {
                "id": {"type": "integer"},
                "username": {"type": "string"},
                "email": {"type": "string", "description": "Empty when none was given."},
                "is_staff": {"type": "boolean"},
            }
        ),
        "Credentials": _obj({"username": {"type": "string"}, "password": {"type": "string"}}),
        "Token": _obj({"token": {"type": "string", "description": "A signed JWT."}}),
        "Upload": _upload_schema(),
        "ChunkForm": _obj(
            {
                "file": {**_BINARY, "description": "This chunk's bytes."},
                "filename": {"type": "string", "description": "Required with the first chunk."},
                "parent": {**_ID, "description": "File this upload becomes a new version of."},
            },
            ["file"],
        ),
        "WholeFileForm": _obj(
            {
                "file": {**_BINARY, "description": "The whole file."},
                "filename": {"type": "string"},
                "md5": _MD5,
                "parent": {**_ID, "description": "File this upload becomes a new version of."},
            },
            ["file", "filename", "md5"],
        ),
        "Completion": _obj({"md5": {**_MD5, "description": "Hex md5 of the whole file."}}),
        "Version": _obj(
            {
                "number": {"type": "integer", "minimum": 1},
                "size": _SIZE,
                "md5": _MD5,
                "sha256": _SHA256,
                "created_at": _TIME,
                "filename": {"type": "string", "description": "The name it was uploaded as."},
                "download_url": {"type": "string", "format": "uri"},
            },
            ["number", "size", "md5", "sha256", "created_at"],
        ),
        "File": _file_schema(),
        "FileList": _obj(
            {
                "count": {"type": "integer", "minimum": 0, "description": "Files in all pages."},
                "next": {"type": ["string", "null"], "format": "uri"},
                "previous": {"type": ["string", "null"], "format": "uri"},
                "results": {
                    "type": "array",
                    "items": _ref("File"),
                    "description": "Newest first; 20 per page unless the proxy says otherwise.",
                },
            }
        ),
        "Rollback": _obj({"version": {"type": "integer", "minimum": 1}}),
        "RemoteAction": _obj(
            {
                "detail": {"type": "string"},
                "remote_state": {"type": "string"},
                "cache_url": {"type": "string", "format": "uri"},
                "status_url": {"type": "string", "format": "uri"},
            },
            ["detail", "remote_state"],
        ),
    }


def _upload_schema() -> Json:
    return _obj(
        {
            "id": _ID,
            "url": {
                "type": "string",
                "format": "uri",
                "description": "Where to send the next chunk and the completion. It names the "
                "proxy that holds the upload; use it as given.",
            },
            "file": {
                "type": ["string", "null"],
                "format": "uri",
                "description": "The stored file's download URL once complete; null before.",
            },
            "filename": {"type": "string"},
            "offset": {
                "type": "integer",
                "minimum": 0,
                "description": "Bytes stored durably so far: the next chunk starts here.",
            },
            "created_at": _TIME,
            "status": {
                "type": "integer",
                "enum": [1, 2],
                "description": "1: uploading, 2: complete.",
            },
            "completed_at": {"type": ["string", "null"], "format": "date-time"},
            "user": {"type": "integer", "description": "Id of the owner."},
            "parent": _NULLABLE_ID,
            "expires": {**_TIME, "description": "After this an unfinished upload is dropped."},
            "file_id": {**_NULLABLE_ID, "description": "The stored file, once complete."},
            "version": {
                "type": ["integer", "null"],
                "description": "The stored file's version this upload became, once complete.",
            },
            "total": {
                "type": ["integer", "null"],
                "description": "The file's size, once a Content-Range has said it.",
            },
        },
        # The fields the seed API's clients rely on; total, file_id and version came later.
        [
            *("id", "url", "file", "filename", "offset", "created_at", "status"),
            *("completed_at", "user", "parent", "expires"),
        ],
    )


def _file_schema() -> Json:
    return _obj(
        {
            "id": _ID,
            "filename": {"type": "string"},
            "size": _SIZE,
            "md5": _MD5,
            "sha256": _SHA256,
            "created_at": _TIME,
            "download_url": {"type": "string", "format": "uri"},
            "versions": {
                "type": "array",
                "items": _ref("Version"),
                "description": "Newest first.",
            },
            "version": {"type": "integer", "minimum": 1, "description": "The current version."},
            "updated_at": _TIME,
            "remote_state": {
                "type": "string",
                "enum": ["local", "mirroring", "mirrored", "remote", "restoring", "lost"],
                "description": "The current version in the S3 tier (file detail only): "
                "`mirrored` once verified in S3, `remote` once uncached (only in S3), "
                "`lost` after a disaster recovery that did not find it in the bucket.",
            },
            "remote_verified": {"type": "boolean"},
            "parts": {
                "type": "array",
                "description": "The parts mirrored to S3, as the mirroring node reported them.",
                "items": _obj(
                    {
                        "index": {"type": "integer", "minimum": 1},
                        "offset": _SIZE,
                        "size": _SIZE,
                        "sha256": {**_SHA256, "type": ["string", "null"]},
                        "remote_state": {
                            "type": "string",
                            "enum": ["pending", "uploading", "uploaded"],
                        },
                    }
                ),
            },
            "restore": _obj(
                {
                    "node": {"type": ["string", "null"]},
                    "parts_restored": {"type": "integer", "minimum": 0},
                    "parts_total": {"type": "integer", "minimum": 0},
                    "detail": {"type": "string", "description": "Why the last restore failed."},
                },
                description="Progress of a restore from S3.",
            ),
            "cache_url": {"type": "string", "format": "uri"},
            "uncache_url": {"type": "string", "format": "uri"},
        },
        ["id", "filename", "size", "md5", "sha256", "created_at", "download_url", "versions"],
        description="`size`, `md5`, `sha256` and `download_url` are the current version's.",
    )


def _parameters() -> Json:
    def param(where: str, name: str, schema: Json, description: str, **extra: Any) -> Json:
        return {"in": where, "name": name, "schema": schema, "description": description, **extra}

    return {
        "UploadId": param("path", "upload_id", _ID, "The upload's `id`.", required=True),
        "FileId": param("path", "file_id", _ID, "The file's `id`.", required=True),
        "ContentRange": param(
            "header",
            "Content-Range",
            {"type": "string", "pattern": r"^bytes [0-9]+-[0-9]+/([0-9]+|\*)$"},
            "`bytes START-END/TOTAL`: this chunk's first and last byte (inclusive, counted "
            "from 0) and the file's size, or `*` when not yet known. The seed API's "
            "`bytes 1-N/N` is accepted for a first chunk that is the whole file.",
            required=True,
            example="bytes 0-1048575/5242880",
        ),
        "FilenameQuery": param(
            "query", "filename", {"type": "string"}, "With a raw body: the file's name."
        ),
        "ParentQuery": param(
            "query", "parent", _ID, "With a raw body: file this becomes a new version of."
        ),
        "Md5Query": param("query", "md5", _MD5, "Hex md5 of the whole file, if not in the body."),
        "Page": param("query", "page", {"type": "integer", "minimum": 1, "default": 1}, "Page."),
        "VersionQuery": param(
            "query", "version", {"type": "integer", "minimum": 1}, "Version; default newest."
        ),
        "Range": param("header", "Range", {"type": "string"}, "Byte ranges: `bytes=0-29999`."),
        "IfRange": param(
            "header",
            "If-Range",
            {"type": "string"},
            "Honour Range only if this ETag or date matches.",
        ),
        "IfNoneMatch": param(
            "header", "If-None-Match", {"type": "string"}, "304 if an ETag matches."
        ),
        "IfModifiedSince": param(
            "header", "If-Modified-Since", {"type": "string"}, "304 if not changed since."
        ),
    }


def _headers() -> Json:
    def header(description: str) -> Json:
        return {"description": description, "schema": {"type": "string"}}

    return {
        "ETag": header("The version's sha256, quoted."),
        "Last-Modified": header("When the version was stored."),
        "Content-Disposition": header("`attachment` with the file's name."),
        "Accept-Ranges": header("`bytes`."),
        "Content-Range": header("`bytes START-END/SIZE`; `bytes */SIZE` with 416."),
    }


# ---------------------------------------------------------------- paths

_UPLOAD_ERRORS: Json = {
    "bad_range": {"detail": "Malformed Content-Range header; expected 'bytes START-END/TOTAL'"},
    "offsets": {"detail": "Offsets do not match", "offset": 1048576},
}


def _busy() -> Json:
    """409 for a request that waited ``claim_wait`` for another one writing to the upload."""
    busy = _error(
        "Another request was still writing to this upload (e.g. a chunk whose connection was "
        "lost is being stored) for longer than the proxy's `claim_wait`: the answer carries "
        "the upload's `offset`; retry after `Retry-After` seconds.",
        busy={
            "detail": "Another request is writing to this upload; retry shortly",
            "offset": 1048576,
            "retry_after": 1,
        },
    )
    busy["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return busy


def _binary(description: str, **headers: Json) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/octet-stream": {"schema": _BINARY}},
    }
    if headers:
        response["headers"] = headers
    return response


def _service_paths() -> Json:
    def html(description: str) -> Json:
        return {
            "description": description,
            "content": {"text/html": {"schema": {"type": "string"}}},
        }

    return {
        "/health": {
            "get": _op(
                "health",
                "service",
                "Is the proxy up?",
                {"200": _ok("Up.", _ref("Health"))},
                public=True,
            )
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "service",
                "This API description (OpenAPI 3.1)",
                {"200": _ok("The document.", {"type": "object"})},
                public=True,
            )
        },
        "/docs/redoc/": {
            "get": _op(
                "redoc",
                "service",
                "This documentation, rendered by ReDoc",
                {"200": html("The page.")},
                public=True,
            )
        },
        "/docs/redoc/redoc.standalone.js": {
            "get": _op(
                "redoc_asset",
                "service",
                "The ReDoc script the documentation page loads",
                {
                    "200": {
                        "description": "The script, served by the proxy itself (no CDN).",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    },
                    "404": _error("Not fetched on this machine: run `scripts/fetch-assets`."),
                },
                public=True,
            )
        },
    }


def _auth_paths() -> Json:
    credentials = _ref("Credentials")
    return {
        "/api/auth/register": {
            "post": _op(
                "register",
                "auth",
                "Create an account",
                {
                    "201": _ok("Created.", _ref("User")),
                    "400": _error(
                        "Missing or weak password, or a bad username.",
                        weak={"detail": "password cannot be entirely numeric", "field": "password"},
                    ),
                    "409": _error("The username is taken."),
                },
                body={"required": True, "content": _json(_ref("Registration"))},
                public=True,
            )
        },
        "/api-token-auth/": {
            "post": _op(
                "token",
                "auth",
                "Log in: trade a username and password for a token",
                {
                    "200": _ok("A token.", _ref("Token")),
                    "400": _error("Wrong or missing credentials."),
                },
                body={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": credentials},
                        "application/json": {"schema": credentials},
                    },
                },
                public=True,
            )
        },
    }


def _chunk_body(form: str) -> Json:
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _ref(form)},
            "application/octet-stream": {"schema": _BINARY},
        },
    }


def _upload_paths() -> Json:
    upload = _ok("The upload as it now stands.", _ref("Upload"))
    too_large = _error("The chunk is larger than this proxy accepts in one request.")
    not_found = _error("No such upload, or it is someone else's.")
    no_parent = _error("No such `parent` file, or it is someone else's.")
    gone = _error("The upload expired and its bytes were dropped.")
    disk = _error("The chunk could not be written durably; send it again.")
    raw = [_ref("FilenameQuery", "parameters"), _ref("ParentQuery", "parameters")]
    content_range = _ref("ContentRange", "parameters")
    return {
        "/storage/tmp-upload/": {
            "put": _op(
                "upload_start",
                "uploads",
                "Start an upload with its first chunk",
                {
                    "200": upload,
                    "400": _error(
                        "Bad Content-Range, bad or missing filename, unknown form fields, or "
                        "a first chunk that does not start at 0.",
                        **_UPLOAD_ERRORS,
                    ),
                    "404": no_parent,
                    "413": too_large,
                    "503": disk,
                },
                description="The body is either a multipart form with the chunk in `file`, or "
                "the raw chunk with `filename` (and `parent`) in the query string. Send the "
                "next chunks to the `url` in the answer.",
                parameters=[content_range, *raw],
                body=_chunk_body("ChunkForm"),
            ),
            "post": _op(
                "upload_whole",
                "uploads",
                "Upload a whole file in one request",
                {
                    "200": _ok("The completed upload (status 2, with `file_id`).", _ref("Upload")),
                    "400": _error(
                        "md5 mismatch, bad or missing filename or md5, or unknown fields."
                    ),
                    "404": no_parent,
                    "413": too_large,
                    "503": disk,
                },
                description="No Content-Range is needed. The body is a multipart form, or the raw "
                "file with `filename` and `md5` in the query string.",
                parameters=[*raw, _ref("Md5Query", "parameters")],
                body=_chunk_body("WholeFileForm"),
            ),
        },
        "/storage/tmp-upload/{upload_id}/": {
            "parameters": [_ref("UploadId", "parameters")],
            "get": _op(
                "upload_get",
                "uploads",
                "See an upload, e.g. to learn where to resume",
                {"200": upload, "404": not_found},
            ),
            "put": _op(
                "upload_chunk",
                "uploads",
                "Send the next chunk",
                {
                    "200": upload,
                    "400": _error(
                        "Bad Content-Range, the upload is already complete, or the chunk does "
                        "not start at the upload's `offset` (which the answer carries).",
                        **_UPLOAD_ERRORS,
                    ),
                    "404": not_found,
                    "409": _busy(),
                    "410": gone,
                    "413": too_large,
                    "503": disk,
                },
                description="Same body forms as the first chunk; `filename` and `parent` may be "
                "repeated, but the first chunk's values stand.",
                parameters=[content_range],
                body=_chunk_body("ChunkForm"),
            ),
            "post": _op(
                "upload_complete",
                "uploads",
                "Complete an upload by checking its md5",
                {
                    "200": _ok("Complete (status 2, with `file_id`).", _ref("Upload")),
                    "400": _error(
                        "md5 mismatch (the upload stays open and can be completed again), md5 "
                        "missing or malformed, not all bytes received yet (with `offset`), or "
                        "already complete."
                    ),
                    "404": _error("No such upload or `parent` file, or it is someone else's."),
                    "409": _busy(),
                    "410": gone,
                },
                description="`md5` may also be given in the query string.",
                parameters=[_ref("Md5Query", "parameters")],
                body={
                    "required": False,
                    "content": {
                        media: {"schema": _ref("Completion")}
                        for media in (
                            "application/x-www-form-urlencoded",
                            "multipart/form-data",
                            "application/json",
                        )
                    },
                },
            ),
            "delete": _op(
                "upload_abort",
                "uploads",
                "Abort an upload and drop its bytes",
                {"204": {"description": "Aborted."}, "404": not_found, "409": _busy()},
            ),
        },
    }


def _file_paths() -> Json:
    file = _ok("The file.", _ref("File"))
    not_found = _error("No such file, or it is someone else's.")
    file_id = [_ref("FileId", "parameters")]
    return {
        "/storage/files/": {
            "get": _op(
                "files_list",
                "files",
                "List your files, newest first",
                {
                    "200": _ok("One page of files.", _ref("FileList")),
                    "404": _error(
                        "`page` is not a positive whole number, or is past the last page "
                        "(page 1 always exists).",
                        invalid={"detail": "Invalid page."},
                    ),
                },
                parameters=[_ref("Page", "parameters")],
            )
        },
        "/storage/files/{file_id}/": {
            "parameters": file_id,
            "get": _op(
                "file_get", "files", "See a file and its versions", {"200": file, "404": not_found}
            ),
            "delete": _op(
                "file_delete",
                "files",
                "Delete a file with all its versions",
                {"204": {"description": "Deleted."}, "404": not_found},
            ),
        },
        "/storage/files/{file_id}/rollback/": {
            "parameters": file_id,
            "post": _op(
                "file_rollback",
                "files",
                "Make an earlier version current again",
                {
                    "200": file,
                    "400": _error("`version` is missing or not a positive integer."),
                    "404": _error("No such file or version, or the file is someone else's."),
                },
                body={
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("Rollback")},
                        "application/x-www-form-urlencoded": {"schema": _ref("Rollback")},
                    },
                },
            ),
        },
        "/storage/files/{file_id}/uncache": {
            "parameters": file_id,
            "post": _op(
                "file_uncache",
                "files",
                "Release a file's local copies; keep it only in S3",
                {
                    "200": _ok("Released (or already only in S3).", _ref("RemoteAction")),
                    "404": not_found,
                    "409": _error("The file is not mirrored to S3 and verified yet."),
                },
                description="Owner or staff. Allowed once the current version is `mirrored` "
                "and its S3 copy verified; its replicas on storage nodes are deleted and the "
                "file shows `remote_state: remote`.",
            ),
        },
        "/storage/files/{file_id}/cache": {
            "parameters": file_id,
            "post": _op(
                "file_cache",
                "files",
                "Bring a file back from S3 to storage nodes",
                {
                    "200": _ok("Already on storage nodes.", _ref("RemoteAction")),
                    "202": _ok(
                        "Restore queued (or joined); watch the file's `restore` progress.",
                        _ref("RemoteAction"),
                        **{"Retry-After": {"schema": {"type": "integer"}}},
                    ),
                    "404": not_found,
                    "409": _error("The content is in neither a node nor the bucket."),
                },
                description="Owner or staff. A storage node downloads the parts, checks each "
                "part's sha256 and the whole file's, then replication brings the copy count "
                "back. A second request joins the first.",
            ),
        },
        "/storage/download/{file_id}/": {"parameters": file_id, "get": _download_op()},
        **_node_paths(),
    }


def _node_paths() -> Json:
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    node = _obj(
        {
            "name": {"type": "string"},
            "url": {"type": "string", "description": "http://HOST:PORT of the node's API."},
            "rsync_url": {"type": "string", "description": "rsync://pyarchive@HOST:PORT/incoming"},
            "zone": {"type": "string"},
            "status": {"type": "string", "enum": ["up", "down", "draining"]},
            "state": {"type": "string", "enum": ["active", "draining"]},
            "free_bytes": {"type": ["integer", "null"]},
            "total_bytes": {"type": ["integer", "null"]},
            "last_seen": {"type": ["string", "null"], "format": "date-time"},
            "rtt_ms": {"type": ["number", "null"]},
            "replicas": {"type": "integer", "description": "Confirmed replicas it holds."},
        }
    )
    new = _obj(
        {
            "name": {"type": "string"},
            "url": {"type": "string"},
            "rsync_url": {"type": "string"},
            "zone": {"type": "string"},
        },
        required=["name", "url", "rsync_url"],
    )
    change = _obj(
        {
            "state": {"type": "string", "enum": ["active", "draining"]},
            "zone": {"type": "string"},
            "url": {"type": "string"},
            "rsync_url": {"type": "string"},
        },
        required=[],
    )
    staff = _error("The caller is not staff.")
    body = lambda schema: {  # noqa: E731
        "required": True,
        "content": {"application/json": {"schema": schema}},
    }
    return {
        "/api/nodes/": {
            "get": _op(
                "nodes_list",
                "nodes",
                "Storage nodes and what the monitor last saw of them",
                {"200": _ok("The nodes.", {"type": "array", "items": node}), "403": staff},
            ),
            "post": _op(
                "nodes_add",
                "nodes",
                "Register a storage node (used once its first ping succeeds)",
                {
                    "201": _ok("Registered.", node),
                    "400": _error("A field is missing or malformed."),
                    "403": staff,
                    "409": _error("A node with that name exists."),
                },
                body=body(new),
            ),
        },
        "/api/nodes/{name}/": {
            "parameters": name,
            "patch": _op(
                "nodes_update",
                "nodes",
                "Drain, reactivate or move a node",
                {
                    "200": _ok("Changed.", node),
                    "400": _error("A field is malformed."),
                    "403": staff,
                    "404": _error("No such node."),
                },
                body=body(change),
            ),
            "delete": _op(
                "nodes_remove",
                "nodes",
                "Forget a node",
                {
                    "204": {"description": "Forgotten."},
                    "403": staff,
                    "404": _error("No such node."),
                    "409": _error("It holds the only copy of some files; drain it first."),
                },
            ),
        },
    }


def _download_op() -> Json:
    headers = {
        name: _ref(name, "headers")
        for name in ("ETag", "Last-Modified", "Content-Disposition", "Accept-Ranges")
    }
    conditional = ("VersionQuery", "Range", "IfRange", "IfNoneMatch", "IfModifiedSince")
    partial = _binary(
        "The requested range.", **headers, **{"Content-Range": _ref("Content-Range", "headers")}
    )
    partial["content"]["multipart/byteranges"] = {"schema": {"type": "string"}}
    return _op(
        "file_download",
        "files",
        "Download a file, whole or by byte range",
        {
            "200": _binary("The whole version.", **headers),
            "206": partial,
            "304": {"description": "The client's copy is current.", "headers": headers},
            "400": _error("`version` is not a positive whole number."),
            "404": _error("No such file or version, or the file is someone else's."),
            "202": _ok(
                "With `restore=1` on a file kept only in S3: restore queued; try again later.",
                _ref("RemoteAction"),
                **{"Retry-After": {"schema": {"type": "integer"}}},
            ),
            "409": _error(
                "The file is kept only in S3 (uncached): `cache_url` brings it back.",
                remote={"detail": "file is in remote storage", "cache_url": "https://…/cache"},
            ),
            "410": _error("A disaster recovery found the content in no node and not in S3."),
            "416": {
                "description": "No requested range is within the file.",
                "headers": {"Content-Range": _ref("Content-Range", "headers")},
                "content": _json(_ref("Error")),
            },
        },
        description="Without `version`, the current version is sent. One satisfiable range "
        "gets a 206 with `Content-Range`, several get `multipart/byteranges`; a malformed "
        "`Range`, or an `If-Range` that does not match, gets the whole file. `HEAD` is "
        "answered too, with the headers a `GET` would get.",
        parameters=[
            *(_ref(name, "parameters") for name in conditional),
            {
                "in": "query",
                "name": "restore",
                "schema": {"type": "string", "enum": ["1"]},
                "description": "For a file kept only in S3: queue its restore (answers 202).",
            },
        ],
    )


# ---------------------------------------------------------------- jobs, system log, S3


def _staff_body(schema: Json) -> Json:
    return {
        "required": True,
        "content": {
            "application/json": {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
        },
    }


def _job_paths() -> Json:
    staff = _error("The caller is not staff.")
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    when = {"type": ["string", "null"], "format": "date-time"}
    job = _obj(
        {
            "name": {"type": "string", "description": "e.g. `scrub`, or `mirror@node1`."},
            "description": {"type": "string"},
            "interval": {"type": ["number", "null"], "description": "Seconds between runs."},
            "last_run": when,
            "last_duration": {"type": ["number", "null"], "description": "Seconds."},
            "last_ok": {"type": ["boolean", "null"]},
            "last_result": {"type": "string", "description": "Short JSON, or the error."},
            "next_run": when,
            "running": {"type": "boolean"},
            "where": {"type": "string", "description": "`proxy`, or the node it runs on."},
        }
    )
    entry = _obj(
        {
            "id": {"type": "integer"},
            "at": _TIME,
            "level": {"type": "string", "enum": ["debug", "info", "warn", "error"]},
            "event": {"type": "string", "description": "e.g. `node.down`, `job.failed`."},
            "job": {"type": "string", "description": "The job it concerns, or empty."},
            "message": {"type": "string"},
            "data": {"type": "object"},
        }
    )
    interval = _obj(
        {
            "interval": {
                "type": ["number", "string", "null"],
                "description": "Seconds (above 0, at most 30 days), a duration like `10m`, or "
                "null for the configured default.",
            }
        }
    )

    def query(param: str, schema: Json, description: str) -> Json:
        return {"name": param, "in": "query", "schema": schema, "description": description}

    return {
        "/api/jobs/": {
            "get": _op(
                "jobs_list",
                "jobs",
                "Periodic jobs: the proxy's own and the storage nodes' mirror loops",
                {"200": _ok("The jobs.", {"type": "array", "items": job}), "403": staff},
            )
        },
        "/api/jobs/{name}/": {
            "parameters": name,
            "patch": _op(
                "jobs_update",
                "jobs",
                "Change how often a job runs (kept across restarts)",
                {
                    "200": _ok("The job as it now stands.", job),
                    "400": _error("`interval` is missing or out of range."),
                    "403": staff,
                    "404": _error("No such job."),
                },
                description="A proxy job's loop restarts at once with the new interval; a "
                "node's job gets it with the next sync.",
                body=_staff_body(interval),
            ),
        },
        "/api/jobs/{name}/run": {
            "parameters": name,
            "post": _op(
                "jobs_run",
                "jobs",
                "Run a built-in job now (or wait for its run in progress)",
                {
                    "200": _ok(
                        "How the run went: `ok`, its `result`, and `error` if it failed.",
                        _obj(
                            {
                                "job": {"type": "string"},
                                "ok": {"type": "boolean"},
                                "result": {},
                                "error": {"type": "string"},
                            },
                            required=["job", "ok"],
                        ),
                    ),
                    "403": staff,
                    "404": _error("No such job."),
                    "409": _error("The job runs on a storage node, on its own schedule."),
                },
            ),
        },
        "/api/system-log/": {
            "get": _op(
                "system_log",
                "jobs",
                "What the proxy did and saw, newest first",
                {
                    "200": _ok("The entries.", {"type": "array", "items": entry}),
                    "400": _error("A malformed `level`, `since` or `limit`."),
                    "403": staff,
                },
                description="Job runs, node up/down transitions, replication, mirror and "
                "restore events, S3 connection changes and failed logins.",
                parameters=[
                    query(
                        "level",
                        {"type": "string", "enum": ["debug", "info", "warn", "error"]},
                        "This level and above.",
                    ),
                    query("since", {"type": "string"}, "ISO 8601 time or unix seconds."),
                    query("job", {"type": "string"}, "Only entries about this job."),
                    query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200},
                        "At most this many entries.",
                    ),
                ],
            )
        },
    }


def _s3_paths() -> Json:
    staff = _error("The caller is not staff.")
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    text = {"type": "string"}
    connection = _obj(
        {
            "name": text,
            "endpoint_url": {**text, "description": "Empty for AWS itself."},
            "region": text,
            "bucket": text,
            "prefix": {**text, "description": "Objects are stored as `<prefix>/<sha256>`."},
            "access_key": text,
            "secret_key_hint": {
                "type": ["string", "null"],
                "description": "`…` and the secret key's last 4 characters; null when this "
                "proxy cannot open the stored secret (see `secret_unreadable`).",
            },
            "secret_unreadable": {
                "type": "boolean",
                "description": "The secret was sealed with another encryption key: PATCH a "
                "new `secret_key`.",
            },
            "active": {"type": "boolean"},
            "validated_at": {"type": ["string", "null"], "format": "date-time"},
            "validation_ok": {"type": ["boolean", "null"]},
            "validation_detail": text,
            "created_at": _TIME,
            "updated_at": _TIME,
        }
    )
    fields = {
        "name": text,
        "endpoint_url": text,
        "region": text,
        "bucket": text,
        "prefix": text,
        "access_key": text,
        "secret_key": {**text, "writeOnly": True, "description": "Stored encrypted; never shown."},
    }
    new = _obj(fields, required=["name", "region", "bucket", "access_key", "secret_key"])
    change = _obj({k: v for k, v in fields.items() if k != "name"}, required=[])
    bad = _error("A field is missing or malformed (named in `field`), or sent in the URL.")
    missing = _error("No such connection.")
    return {
        "/api/s3-connections/": {
            "get": _op(
                "s3_list",
                "s3",
                "S3 connections",
                {
                    "200": _ok("The connections.", {"type": "array", "items": connection}),
                    "403": staff,
                },
            ),
            "post": _op(
                "s3_add",
                "s3",
                "Add an S3 connection",
                {
                    "201": _ok("Added (not active, not validated yet).", connection),
                    "400": bad,
                    "403": staff,
                    "409": _error("A connection with that name exists."),
                },
                body=_staff_body(new),
            ),
        },
        "/api/s3-connections/{name}/": {
            "parameters": name,
            "get": _op(
                "s3_get",
                "s3",
                "One S3 connection",
                {"200": _ok("The connection.", connection), "403": staff, "404": missing},
            ),
            "patch": _op(
                "s3_update",
                "s3",
                "Change an S3 connection (forgets its last validation)",
                {"200": _ok("Changed.", connection), "400": bad, "403": staff, "404": missing},
                body=_staff_body(change),
            ),
            "delete": _op(
                "s3_remove",
                "s3",
                "Remove an S3 connection",
                {
                    "204": {"description": "Removed."},
                    "403": staff,
                    "404": missing,
                    "409": _error("It is the active connection: activate another first."),
                },
            ),
        },
        "/api/s3-connections/{name}/validate": {
            "parameters": name,
            "post": _op(
                "s3_validate",
                "s3",
                "Try the connection now: HeadBucket, then write and delete a small object",
                {
                    "200": _ok(
                        "The connection with the outcome in `validation_ok` and "
                        "`validation_detail`.",
                        connection,
                    ),
                    "403": staff,
                    "404": missing,
                },
            ),
        },
        "/api/s3-connections/{name}/activate": {
            "parameters": name,
            "post": _op(
                "s3_activate",
                "s3",
                "Make this the one active connection (files are mirrored to it)",
                {
                    "200": _ok("Active.", connection),
                    "403": staff,
                    "404": missing,
                    "409": _error("Its secret key cannot be opened here: PATCH it first."),
                },
            ),
        },
    }
