"""The OpenAPI 3.1 document, generated from the route declarations.

Nothing here lists routes: the paths and operations are read off ``@operation`` declarations
(``proxy.api.contract``) of ``ProxyApp``'s handlers, and the schemas off the msgspec types
they name (``proxy.api.types``). What stays hand-written is what no declaration owns: the
document's introduction, its tags, and the parameters and headers several routes share.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import msgspec

from proxy.api import types
from proxy.api.contract import Operation, declared
from proxy.api.docs_parts import error, json_answer, param, ref
from proxy.catalog.files import MAX_PAGE_SIZE

Json = dict[str, Any]

API_VERSION = "1.0.0"
_SECURITY_SCHEME = "jwt"
_ID: Json = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "32 hex digits."}
_MD5: Json = {"type": "string", "pattern": "^[0-9a-fA-F]{32}$", "description": "Hex md5."}
_PATH_PARAMETERS = {"upload_id": "UploadId", "file_id": "FileId"}
_NO_CONTROL = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
_JSON = "application/json"
_NULL: Json = {"type": "null"}

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


def operations() -> list[Operation]:
    """Every declared operation of the proxy, in declaration order."""
    from proxy.api.app import ProxyApp  # the app's routes import this module

    return [op for _, op in declared(ProxyApp)]


def openapi_spec(server_url: str) -> Json:
    """The API description for a proxy reachable at ``server_url``: a fresh JSON tree."""
    spec: Json = json.loads(_document())
    spec["servers"] = [{"url": server_url}]
    return spec


@functools.cache
def _document() -> str:
    ops = operations()
    schema_of, schemas = _schemas(ops)
    paths: Json = {}
    for op in ops:
        item = paths.setdefault(op.path, {})
        if op.path_parameters:
            shared = [_path_parameter(name, op.path_types.get(name)) for name in op.path_parameters]
            # The path's operations share its parameters, so they must declare them alike.
            assert item.setdefault("parameters", shared) == shared, op.path
        item[op.method.lower()] = _operation(op, schema_of, schemas)
    spec: Json = {
        "openapi": "3.1.0",
        "info": {"title": "PyArchive", "version": API_VERSION, "description": _DESCRIPTION},
        "security": [{_SECURITY_SCHEME: []}],
        "tags": [
            {"name": "auth", "description": "Accounts and login tokens."},
            {"name": "uploads", "description": "Resumable, chunked uploads."},
            {"name": "files", "description": "Stored files, their versions and downloads."},
            {"name": "events", "description": "Your live events: a stream and a long poll."},
            {"name": "users", "description": "Accounts and their quotas (staff only)."},
            {"name": "nodes", "description": "Storage nodes (staff only)."},
            {"name": "jobs", "description": "Periodic jobs and the system log (staff only)."},
            {"name": "s3", "description": "S3 connections (staff only)."},
            {"name": "service", "description": "Health and this documentation."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": _parameters(),
            "headers": _headers(),
            "responses": {"Unauthorized": error("Missing, malformed or expired token.")},
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
    return json.dumps(spec)


def _schemas(ops: list[Operation]) -> tuple[dict[Any, Json], Json]:
    """JSON Schema for every declared type, and the components they refer to."""
    declared_types = [t for op in ops for t in (op.answer, op.body) if t is not None]
    every = [*types.COMPONENTS, *declared_types]
    generated, components = msgspec.json.schema_components(
        every, ref_template="#/components/schemas/{name}"
    )
    # Error answers carry more fields than `detail` (offset, field, ...), by design.
    components["Error"]["additionalProperties"] = True
    # msgspec marks bytes as base64 text; a multipart file part is the raw bytes.
    for schema in components.values():
        for prop in schema.get("properties", {}).values():
            if prop.get("contentMediaType") == "application/octet-stream":
                prop.pop("contentEncoding", None)
    schema_of = {repr(t): schema for t, schema in zip(every, generated, strict=True)}
    return schema_of, dict(sorted(components.items()))


def _as_form(body: Json, components: Json) -> Json:
    """A body's schema as a form carries it: a form field is text and cannot be JSON null.

    Where the JSON body may say null (e.g. "the configured default"), the form's schema is
    the JSON one without its null branches, written out in place of the reference.
    """
    siblings = {key: value for key, value in body.items() if key != "$ref"}  # minProperties
    schema = {**components[body["$ref"].rsplit("/", 1)[-1]], **siblings} if "$ref" in body else body
    properties: Json = {}
    for name, prop in schema.get("properties", {}).items():
        branches = prop.get("anyOf", [])
        if _NULL in branches:
            rest = {key: value for key, value in prop.items() if key != "anyOf"}
            kept = [branch for branch in branches if branch != _NULL]
            prop = {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}
        properties[name] = prop
    if properties == schema.get("properties", {}):
        return body
    return {**{k: v for k, v in schema.items() if k != "title"}, "properties": properties}


def _path_parameter(name: str, type_: Any = None) -> Json:
    if name in _PATH_PARAMETERS:
        return param(_PATH_PARAMETERS[name])
    schema = {"type": "string"} if type_ is None else msgspec.json.schema(type_)
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _operation(op: Operation, schema_of: dict[Any, Json], components: Json) -> Json:
    doc: Json = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    if op.parameters:
        doc["parameters"] = list(op.parameters)
    responses: dict[int, Json] = {}
    if op.status not in op.responses:
        if op.answer is not None:
            answer = schema_of[repr(op.answer)]
            responses[op.status] = json_answer(op.answer_description, answer, op.answer_headers)
        else:
            responses[op.status] = {"description": op.answer_description}
    responses.update(op.responses)
    if op.request_body is not None:
        doc["requestBody"] = op.request_body
    elif op.body is not None:
        body = schema_of[repr(op.body)]
        content = {
            media: {"schema": body if media == _JSON else _as_form(body, components)}
            for media in op.body_media
        }
        doc["requestBody"] = {"required": op.body_required, "content": content}
    if op.has_body:
        responses[415] = error("The body's Content-Type is not one listed.")
    if op.access == "public":
        doc["security"] = []
    else:
        responses[401] = ref("Unauthorized", "responses")
    if op.access == "staff":
        responses[403] = error("The caller is not staff.")
    doc["responses"] = {str(status): responses[status] for status in sorted(responses)}
    return doc


def _parameters() -> Json:
    def param(where: str, name: str, schema: Json, description: str, **extra: Any) -> Json:
        return {"in": where, "name": name, "schema": schema, "description": description, **extra}

    def optional(name: str, schema: Json, description: str) -> Json:
        return param("query", name, schema, description, allowEmptyValue=True)

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
            "query",
            "filename",
            msgspec.json.schema(types.Filename),
            "With a raw body: the file's name.",
        ),
        "PathQuery": param(
            "query",
            "path",
            msgspec.json.schema(types.FilePath),
            "With a raw body: where the file goes among yours (`folder/name`); its last "
            "segment is the name. Default: the filename. An existing file there gets a new "
            "version.",
        ),
        "PrefixQuery": param(
            "query",
            "prefix",
            {"type": "string", "pattern": _NO_CONTROL},
            "Only files whose path starts with this text (`%` and `_` are plain characters).",
        ),
        "PathFilter": param(
            "query",
            "path",
            {"type": "string", "pattern": _NO_CONTROL},
            "Only the file at exactly this path (none or one).",
        ),
        "PageSize": optional(
            "page_size",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            "Files per page; default the proxy's page size.",
        ),
        "After": optional(
            "after",
            {"type": "string", "pattern": r"^([A-Za-z0-9_-]+\.[0-9a-f]{12})?$"},
            "Page by position: empty for the first page, then the token a `next` link carries.",
        ),
        "ParentQuery": optional(
            "parent", _ID, "With a raw body: file this becomes a new version of."
        ),
        "Md5Query": param("query", "md5", _MD5, "Hex md5 of the whole file, if not in the body."),
        "Page": optional("page", {"type": "integer", "minimum": 1, "default": 1}, "Page."),
        "VersionQuery": optional(
            "version",
            {"type": "integer", "minimum": 1, "maximum": 999_999_999},
            "Version; default newest.",
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
