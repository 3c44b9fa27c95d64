"""The upload engine's rules as pure functions: names, ids, and what a chunk or a completion
deserves against an upload's state. No I/O; tested without a reactor."""

from __future__ import annotations

import re
import unicodedata

from common.contentrange import ContentRange
from common.errors import (
    BadRequest,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from common.hex32 import is_hex32
from proxy.uploads.bodies import ChunkBody, PlacedChunk
from proxy.uploads.uploadstore import COMPLETE, Upload

MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")
MAX_FILENAME_BYTES = 255
MAX_PATH_BYTES = 1024


def validate_filename(name: object) -> str:
    """A display name, never a path: no separators, dot names or control characters.

    >>> validate_filename("report 2024.pdf")
    'report 2024.pdf'
    >>> validate_filename("../etc/passwd")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: filename may not contain '/' or '\\\\'
    """
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("filename is required", field="filename")
    if "/" in name or "\\" in name:
        raise BadRequest("filename may not contain '/' or '\\\\'", field="filename")
    if name in {".", ".."}:
        raise BadRequest("filename may not be '.' or '..'", field="filename")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        raise BadRequest("filename may not contain control characters", field="filename")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        raise BadRequest(f"filename is longer than {MAX_FILENAME_BYTES} bytes", field="filename")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("filename is not valid Unicode", field="filename") from None
    return name


def _control(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def validate_path(path: object) -> str:
    """A file's place among its owner's files: ``folder/.../name``, NFC-normalised.

    Relative and ``/``-separated: no empty, ``.`` or ``..`` segment (so no leading, trailing
    or doubled ``/``), no backslash, NUL or other control character; at most 1024 bytes in
    UTF-8, 255 per segment. Its last segment is the file's name.

    >>> validate_path("photos/2024/cat.jpg")
    'photos/2024/cat.jpg'
    >>> validate_path("cafe\u0301.txt") == "caf\u00e9.txt"  # one way to write an é
    True
    >>> validate_path("/etc/passwd")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: path must be relative: it may not start with '/'
    >>> validate_path("a//b")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: path may not have an empty segment
    >>> validate_path("a/../b")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: path may not have a '.' or '..' segment
    """
    if not isinstance(path, str) or not path:
        raise BadRequest("path is required", field="path")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("path is not valid Unicode", field="path") from None
    path = unicodedata.normalize("NFC", path)
    if path.startswith("/"):
        raise BadRequest("path must be relative: it may not start with '/'", field="path")
    if "\\" in path:
        raise BadRequest("path may not contain '\\'; folders are separated by '/'", field="path")
    if _control(path):
        raise BadRequest("path may not contain control characters", field="path")
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise BadRequest(f"path is longer than {MAX_PATH_BYTES} bytes", field="path")
    for segment in path.split("/"):
        if not segment:
            raise BadRequest("path may not have an empty segment", field="path")
        if segment in {".", ".."}:
            raise BadRequest("path may not have a '.' or '..' segment", field="path")
        if not segment.strip():
            raise BadRequest("path may not have a segment of only spaces", field="path")
        if len(segment.encode("utf-8")) > MAX_FILENAME_BYTES:
            raise BadRequest(
                f"a path segment is longer than {MAX_FILENAME_BYTES} bytes", field="path"
            )
    return path


def name_and_path(filename: object, path: object) -> tuple[str, str]:
    """The (display filename, path) an upload names: a given ``path`` (checked) and its last
    segment, which ``filename`` must then be if given too; without a path, the path is the
    filename (as before paths existed).

    >>> name_and_path("", "docs/2024/report.pdf")
    ('report.pdf', 'docs/2024/report.pdf')
    >>> name_and_path("report.pdf", None)
    ('report.pdf', 'report.pdf')
    >>> name_and_path("other.pdf", "docs/report.pdf")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: filename must be the path's last segment, 'report.pdf'
    """
    if path is None or path == "":
        name = validate_filename(filename)
        return name, validate_path(name)
    checked = validate_path(path)
    last = checked.rsplit("/", 1)[-1]
    if filename is None or filename == "":
        return last, checked
    if not isinstance(filename, str) or unicodedata.normalize("NFC", filename) != last:
        raise BadRequest(f"filename must be the path's last segment, {last!r}", field="filename")
    return validate_filename(filename), checked


def validate_listing_text(value: str, field: str) -> str:
    """A ``?prefix=`` or ``?path=`` of a listing: any text without control characters,
    compared NFC-normalised (as paths are stored).

    >>> validate_listing_text("photos/20", "prefix")
    'photos/20'
    >>> validate_listing_text("a\\x00b", "prefix")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: prefix may not contain control characters
    """
    if _control(value):
        raise BadRequest(f"{field} may not contain control characters", field=field)
    return unicodedata.normalize("NFC", value)


class OffsetMismatch(BadRequest):
    """A chunk that does not start at the upload's offset (400 in the seed API, 409 in tus)."""


def validate_upload_id(upload_id: str) -> str:
    if not is_hex32(upload_id):
        raise NotFound("Upload not found")
    return upload_id


def check_chunk(upload: Upload, chunk: ContentRange, now: float) -> None:
    """Raise the error a chunk deserves against the upload's state, or nothing."""
    check_writable(upload)
    if upload.status == COMPLETE:
        raise BadRequest("Upload has already been completed")
    if upload.expires_at <= now:
        raise Gone("Upload has expired")
    if upload.total is not None and chunk.total is not None and chunk.total != upload.total:
        raise BadRequest(
            "Total size does not match earlier chunks", total=upload.total, offset=upload.received
        )
    check_offset(upload, chunk.start)
    if upload.total is not None and chunk.end >= upload.total:
        raise BadRequest("Content-Range goes beyond the total size", total=upload.total)


def check_writable(upload: Upload) -> None:
    """A final tus upload takes no bytes of its own: its partials' are concatenated."""
    if upload.concat == "final":
        raise Forbidden("A final upload cannot be written to; its partial uploads can")


def check_offset(upload: Upload, start: int) -> None:
    """Bytes must start at the upload's offset (what it holds durably)."""
    if start != upload.received:
        raise OffsetMismatch("Offsets do not match", offset=upload.received)


def check_completable(upload: Upload, now: float) -> None:
    if upload.status == COMPLETE:
        raise BadRequest("Upload has already been completed")
    if upload.expires_at <= now:
        raise Gone("Upload has expired")
    if upload.total is not None and upload.received != upload.total:
        raise BadRequest("Upload is incomplete", offset=upload.received, total=upload.total)


def check_body(chunk: ContentRange, body: ChunkBody, max_chunk_size: int) -> None:
    """Raise the error a chunk's body deserves against its Content-Range, or nothing."""
    too_large = body.size > max_chunk_size or chunk.length > max_chunk_size
    if too_large or (isinstance(body, PlacedChunk) and body.too_large):
        raise PayloadTooLarge(
            f"Chunk is larger than the maximum of {max_chunk_size} bytes",
            max_chunk_size=max_chunk_size,
        )
    if body.size != chunk.length:
        raise BadRequest(
            f"Chunk is {body.size} bytes but Content-Range says {chunk.length}",
            offset=chunk.start,
        )
    if isinstance(body, PlacedChunk) and body.error is not None:
        raise ServiceUnavailable("Could not write the chunk to disk; retry it")
