"""Request bodies as fields: JSON, urlencoded forms and streamed multipart/form-data.

Multipart bodies are parsed from their spool on a worker thread (``parse_multipart`` blocks),
the ``file`` part's bytes going to a second spool so no part is held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from common.errors import BadRequest

_MAX_FIELD = 64 * 1024
_READ = 1 << 20


@dataclass
class FilePart:
    spool: IO[bytes]
    size: int
    filename: str | None


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: FilePart | None = None


def content_type(header: str | None) -> str:
    media, _ = parse_options_header(header or "")
    return media.decode("latin-1").lower()


def check_fields(found: Iterable[str], allowed: set[str]) -> None:
    unknown = sorted(set(found) - allowed)
    if unknown:
        raise BadRequest(f"Unknown fields: {', '.join(unknown)}", fields=unknown)


def parse_small_body(body: bytes, content_type_header: str | None) -> dict[str, Any]:
    """A JSON object or a urlencoded form (the small bodies of login, completion...)."""
    kind = content_type(content_type_header)
    if not body or (not body.strip() and kind != "application/json"):
        return {}  # no body: no fields (a blank body that says it is JSON is not valid JSON)
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("Form body is not UTF-8") from None
        try:
            return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=50))
        except ValueError:  # more than max_num_fields
            raise BadRequest("Form body has too many fields") from None
    if kind in {"application/json", ""}:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("Body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("Body must be a JSON object")
        return data
    raise BadRequest(f"Unsupported Content-Type {kind!r}", status=415)


def parse_multipart(
    source: IO[bytes], content_type_header: str, make_spool: Callable[[], IO[bytes]]
) -> Form:
    """Parse a multipart/form-data body; the part named ``file`` is copied to a new spool."""
    _, options = parse_options_header(content_type_header)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary")
    form = Form()
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state.update(headers={}, name=None, value=bytearray(), field=b"", header_value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["header_value"]
        state["field"], state["header_value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition"))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise BadRequest("multipart part without a name")
        state["name"] = name
        if name == "file":
            if form.file is not None:
                raise BadRequest("only one 'file' part is allowed")
            raw = disposition.get(b"filename")
            filename = raw.decode("utf-8", "replace") if raw is not None else None
            form.file = FilePart(make_spool(), 0, filename)
        elif name in form.fields:
            raise BadRequest(f"field {name!r} given twice")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] == "file":
            assert form.file is not None
            form.file.spool.write(data[start:end])
            form.file.size += end - start
        else:
            state["value"] += data[start:end]
            if len(state["value"]) > _MAX_FIELD:
                raise BadRequest(f"field {state['name']!r} is too long")

    def on_part_end() -> None:
        if state["name"] != "file":
            try:
                form.fields[state["name"]] = state["value"].decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"field {state['name']!r} is not UTF-8") from None

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },  # type: ignore[arg-type]
    )
    source.seek(0)
    try:
        while piece := source.read(_READ):
            parser.write(piece)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"Malformed multipart body: {exc}") from None
    return form
