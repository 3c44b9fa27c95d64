"""What the S3 mirror remembers about each blob, and how a record is encoded.

Each blob's record is kept as JSON in the mirror's journal (``node.mirror.journal``, one
SQLite file under ``DATA_DIR/mirror/``)::

    mirror    a blob this node mirrors: the want-list entry, the multipart upload (its id,
              the bucket and object it belongs to), every part's offset, size, hashes and
              remote state, the attempts and the next try
    restore   a blob this node restores from S3: the proxy's part list and which parts are
              already written into ``incoming/<key>``

No record holds an S3 secret: the connection only lives in memory and comes with every sync
from the proxy.

The pure helpers here (part layout, multipart ETag, composite checksum, back-off) carry
worked examples and are tested without S3.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from common.s3 import MAX_PARTS

# A blob's mirror state, as reported to the proxy.
PENDING, UPLOADING, MIRRORED, FAILED = "pending", "uploading", "mirrored", "failed"
# A part's remote state.
UPLOADED = "uploaded"
# A restore's state.
RESTORING, RESTORED = "restoring", "restored"

# The two kinds of record.
MIRROR, RESTORE = "mirror", "restore"

_FORMAT = 1


@dataclass(frozen=True)
class Blob:
    """One entry of the proxy's want-list: a replica key and the content it must have."""

    key: str
    size: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class Target:
    """Where a multipart upload lives (without credentials): an upload id means nothing in
    another bucket, so a record whose target is not the active connection's starts over."""

    endpoint_url: str
    bucket: str
    object_key: str


@dataclass
class Part:
    """One part of a blob. ``md5``/``sha256`` are known once the local bytes were hashed;
    ``remote_state`` is ``uploaded`` only once S3 answered with the part's md5 as its ETag."""

    index: int  # S3 part number, from 1
    offset: int
    size: int
    sha256: str | None = None
    md5: str | None = None
    remote_state: str = PENDING


@dataclass
class MirrorRecord:
    blob: Blob
    state: str = PENDING
    verified: bool = False
    target: Target | None = None
    upload_id: str | None = None
    part_size: int = 0
    parts: list[Part] = field(default_factory=list)
    attempts: int = 0
    next_attempt_at: float = 0.0
    detail: str = ""
    dropped: bool = False  # no longer wanted: abort its upload, then forget it

    def to_json(self) -> dict[str, Any]:
        return {"format": _FORMAT, "kind": MIRROR, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MirrorRecord:
        target = data.get("target")
        state = data["state"]
        return cls(
            blob=Blob(**data["blob"]),
            # A record saved mid-upload resumes as pending (nothing is in flight after a start).
            state=PENDING if state == UPLOADING else state,
            verified=bool(data["verified"]),
            target=Target(**target) if target else None,
            upload_id=data.get("upload_id"),
            part_size=int(data["part_size"]),
            parts=[_part(p) for p in data["parts"]],
            attempts=int(data["attempts"]),
            next_attempt_at=float(data["next_attempt_at"]),
            detail=str(data["detail"]),
            dropped=bool(data.get("dropped", False)),
        )


def _part(data: dict[str, Any]) -> Part:
    part = Part(**data)
    if part.remote_state == UPLOADING:
        part.remote_state = PENDING
    return part


@dataclass
class RestorePart:
    index: int
    offset: int
    size: int
    sha256: str  # what the proxy recorded when the blob was mirrored
    done: bool = False  # written into incoming/<key> and fsynced


@dataclass
class RestoreRecord:
    blob: Blob
    parts: list[RestorePart]
    state: str = RESTORING
    attempts: int = 0
    next_attempt_at: float = 0.0
    detail: str = ""
    dropped: bool = False  # no longer wanted: remove the partial file, then forget it

    @property
    def parts_restored(self) -> int:
        return sum(1 for part in self.parts if part.done)

    def to_json(self) -> dict[str, Any]:
        return {"format": _FORMAT, "kind": RESTORE, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestoreRecord:
        return cls(
            blob=Blob(**data["blob"]),
            parts=[RestorePart(**p) for p in data["parts"]],
            state=str(data["state"]),
            attempts=int(data["attempts"]),
            next_attempt_at=float(data["next_attempt_at"]),
            detail=str(data["detail"]),
            dropped=bool(data.get("dropped", False)),
        )


Record = MirrorRecord | RestoreRecord


# ---------------------------------------------------------------- pure helpers


def plan_parts(size: int, part_size: int) -> list[Part]:
    """A blob's parts: ``part_size`` each (raised so there are at most 10,000), the last one
    smaller; an empty blob is one empty part (S3 accepts that as the only part).

    >>> [(p.index, p.offset, p.size) for p in plan_parts(12, 5)]
    [(1, 0, 5), (2, 5, 5), (3, 10, 2)]
    >>> [(p.index, p.size) for p in plan_parts(0, 5)]
    [(1, 0)]
    >>> len(plan_parts(50_005, 5)), plan_parts(50_005, 5)[0].size
    (8335, 6)
    """
    part_size = max(part_size, math.ceil(size / MAX_PARTS), 1)
    count = max(1, math.ceil(size / part_size))
    return [
        Part(index, offset, min(part_size, size - offset))
        for index, offset in enumerate(range(0, count * part_size, part_size), start=1)
    ]


def layout_of(size: int, first_part_size: int, count: int) -> list[Part] | None:
    """The parts of an existing object of ``size`` bytes in ``count`` parts whose first part
    has ``first_part_size`` bytes, if equal parts with a smaller last one make it; else None.

    >>> [(p.offset, p.size) for p in layout_of(12, 5, 3)]
    [(0, 5), (5, 5), (10, 2)]
    >>> layout_of(12, 4, 2) is None
    True
    """
    if count < 1 or first_part_size < 0:
        return None
    parts = plan_parts(size, first_part_size) if first_part_size else plan_parts(size, 1)
    if len(parts) != count or (count > 1 and parts[0].size != first_part_size):
        return None
    return parts


def multipart_etag(md5_hexes: list[str]) -> str:
    """The ETag S3 gives a completed multipart upload: the md5 of the parts' md5 digests,
    then ``-`` and the part count.

    >>> multipart_etag([hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()])
    '96e024ba2074fe77e8e965ba43a704be-2'
    """
    joined = b"".join(bytes.fromhex(digest) for digest in md5_hexes)
    return f"{hashlib.md5(joined).hexdigest()}-{len(md5_hexes)}"


def composite_sha256(sha256_hexes: list[str]) -> str:
    """S3's composite SHA256 checksum of a multipart object (base64, without the ``-N``):
    the sha256 of the parts' sha256 digests."""
    joined = b"".join(bytes.fromhex(digest) for digest in sha256_hexes)
    return b64(hashlib.sha256(joined).hexdigest())


def b64(hex_digest: str) -> str:
    """A hex digest as S3's checksum headers carry it (base64 of the raw digest).

    >>> b64(hashlib.sha256(b"").hexdigest())
    '47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='
    """
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


# ---------------------------------------------------------------- encoding


def kind_of(record: Record) -> str:
    return MIRROR if isinstance(record, MirrorRecord) else RESTORE


def encode(record: Record) -> bytes:
    return json.dumps(record.to_json(), separators=(",", ":")).encode()
