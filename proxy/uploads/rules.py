"""The upload engine's rules as pure functions: names, ids, and what a chunk or a completion
deserves against an upload's state. No I/O; tested without a reactor."""

from __future__ import annotations

import re

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
