"""The tus 1.0 request headers, read strictly: versions, lengths, offsets, metadata, checksums.

Pure functions (no I/O), so each rule is tested on its own; ``proxy.api.routes.tus`` answers
with them. See https://tus.io/protocols/resumable-upload (1.0.0).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit

from common.contentrange import MAX_SIZE
from common.errors import ApiError, BadRequest
from common.hex32 import HEX32

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
    "concatenation-unfinished",
)
CHECKSUMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
OFFSET_STREAM = "application/offset+octet-stream"
METADATA_LIMIT = 4096  # bytes of Upload-Metadata; far more than a name, path and type need

_NUMBER = re.compile(r"[0-9]{1,19}")
MAX_PARTS = 1000  # partial uploads in one final upload
# A key is ASCII without spaces or commas; the value is base64 (it may be absent or empty).
_KEY = re.compile(r"[!-+\--~]{1,64}")  # printable ASCII but ',' (0x2c) and space


class PreconditionFailed(ApiError):
    """412: the client speaks no tus version this server does."""

    status = 412


class ChecksumMismatch(ApiError):
    """460 (tus checksum extension): the bytes do not have the checksum the client sent."""

    status = 460


def check_version(value: str | None) -> None:
    """Every request but OPTIONS says ``Tus-Resumable: 1.0.0``; anything else is 412."""
    if value is None:
        raise PreconditionFailed("Tus-Resumable header is required", version=TUS_VERSION)
    if value.strip() != TUS_VERSION:
        raise PreconditionFailed(
            f"Tus-Resumable {value.strip()!r} is not supported; this server speaks {TUS_VERSION}",
            version=TUS_VERSION,
        )


def number(value: str | None, header: str) -> int | None:
    """A non-negative byte count from a header, or None if absent; 400 if malformed.

    >>> number("42", "Upload-Length"), number(None, "Upload-Length")
    (42, None)
    """
    if value is None:
        return None
    text = value.strip()
    if not _NUMBER.fullmatch(text) or int(text) > MAX_SIZE:
        raise BadRequest(f"{header} must be a whole number of bytes", field=header)
    return int(text)


def parse_metadata(value: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs, keys unique.

    Values are kept as text (UTF-8); a value that is not valid base64 or not UTF-8 is 400.

    >>> parse_metadata("filename d29ybGRfZG9taW5hdGlvbi5wZGY=,is_confidential")
    {'filename': 'world_domination.pdf', 'is_confidential': ''}
    """
    if value is None or not value.strip():
        return {}
    if len(value.encode("utf-8", "replace")) > METADATA_LIMIT:
        raise BadRequest(f"Upload-Metadata is longer than {METADATA_LIMIT} bytes")
    found: dict[str, str] = {}
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _KEY.fullmatch(parts[0]):
            raise BadRequest(f"Upload-Metadata pair {pair.strip()!r} is not 'key base64value'")
        key = parts[0]
        if key in found:
            raise BadRequest(f"Upload-Metadata key {key!r} is given twice")
        raw = parts[1] if len(parts) == 2 else ""
        try:
            found[key] = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise BadRequest(f"Upload-Metadata value of {key!r} is not base64 UTF-8") from None
    return found


def parse_concat(value: str | None, path: str = "/files/") -> tuple[str, list[str]]:
    """``Upload-Concat``: ``("", [])`` without it, ``("partial", [])``, or ``("final", ids)``
    for ``final;<url> <url> ...`` (absolute URLs or paths of this server's uploads, under the
    tus endpoint ``path`` or ``/files/``).

    >>> parse_concat("final;/files/" + "a" * 32 + " http://h/files/" + "b" * 32)[1][1][:4]
    'bbbb'
    """
    if value is None:
        return "", []
    text = value.strip()
    if text == "partial":
        return "partial", []
    kind, _, urls = text.partition(";")
    if kind != "final":
        raise BadRequest("Upload-Concat must be 'partial' or 'final;<url> <url> ...'")
    ids = []
    upload_path = re.compile(f"(?:{re.escape(path)}|/files/)({HEX32})")
    for url in urls.split():
        match = upload_path.fullmatch(urlsplit(url).path)
        if match is None:
            raise BadRequest(f"Upload-Concat names {url[:200]!r}, which is not an upload's URL")
        ids.append(match[1])
    if not 1 <= len(ids) <= MAX_PARTS:
        raise BadRequest(f"Upload-Concat final names 1 to {MAX_PARTS} partial uploads")
    return "final", ids


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> hashlib._Hash:
        return CHECKSUMS[self.algorithm]()


def parse_checksum(value: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; an unknown algorithm is 400.

    >>> parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").algorithm
    'sha1'
    """
    if value is None:
        return None
    parts = value.strip().split(" ")
    if len(parts) != 2:
        raise BadRequest("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm, encoded = parts[0].lower(), parts[1]
    if algorithm not in CHECKSUMS:
        raise BadRequest(
            f"Upload-Checksum algorithm {parts[0]!r} is not supported; "
            f"use one of {', '.join(CHECKSUMS)}"
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise BadRequest("Upload-Checksum digest is not base64") from None
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise BadRequest(f"Upload-Checksum digest has the wrong length for {algorithm}")
    return Checksum(algorithm, digest)


def http_date(seconds: float) -> str:
    """``Upload-Expires``'s form (RFC 9110 IMF-fixdate).

    >>> http_date(0)
    'Thu, 01 Jan 1970 00:00:00 GMT'
    """
    return formatdate(seconds, usegmt=True)
