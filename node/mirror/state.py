"""What the S3 mirror remembers about each blob, and how it keeps it across restarts.

One JSON file per blob under ``DATA_DIR/mirror/``::

    upload/<key>.json     a blob this node mirrors: the want-list entry, the multipart upload
                          (its id, the bucket and object it belongs to), every part's offset,
                          size, hashes and remote state, the attempts and the next try
    restore/<key>.json    a blob this node restores from S3: the proxy's part list and which
                          parts are already written into ``incoming/<key>``

Each file is replaced atomically (temporary file, fsync, rename, fsync of the directory), so a
node killed at any moment finds either the old record or the new one. No record holds an S3
secret: the connection only lives in memory and comes with every sync from the proxy.

The pure helpers here (part layout, multipart ETag, composite checksum, back-off) carry
worked examples and are tested without S3.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.durable import fsync_dir
from common.s3 import MAX_PARTS
from common.signing import valid_replica_key

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


# ---------------------------------------------------------------- on disk


class StateDir:
    """The records under ``DATA_DIR/mirror/``. Blocking: call from a worker thread (or before
    the reactor runs)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "upload"
        self.restores = root / "restore"

    def create(self) -> None:
        for directory in (self.root, self.uploads, self.restores):
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)

    def load(self) -> tuple[list[MirrorRecord], list[RestoreRecord]]:
        """Every record; leftover temporary files are removed, unreadable records skipped
        (the proxy's next sync asks for that blob again)."""
        mirrors = [r for r in self._load(self.uploads) if isinstance(r, MirrorRecord)]
        restores = [r for r in self._load(self.restores) if isinstance(r, RestoreRecord)]
        return mirrors, restores

    def _load(self, directory: Path) -> list[Record]:
        records: list[Record] = []
        for path in sorted(directory.iterdir()):
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            if not path.name.endswith(".json") or not valid_replica_key(path.name[:-5]):
                continue
            try:
                data = json.loads(path.read_bytes())
                kind = data["kind"]
                record: Record = (
                    MirrorRecord.from_json(data)
                    if kind == MIRROR
                    else RestoreRecord.from_json(data)
                )
            except (ValueError, KeyError, TypeError):
                continue
            if record.blob.key == path.name[:-5]:
                records.append(record)
        return records

    def path(self, kind: str, key: str) -> Path:
        """Where the ``kind`` (``mirror`` or ``restore``) record of ``key`` is kept."""
        if not valid_replica_key(key):
            raise ValueError(f"not a replica key: {key!r}")
        return (self.uploads if kind == MIRROR else self.restores) / f"{key}.json"

    def write(self, kind: str, key: str, content: bytes) -> None:
        """Replace a record's file with ``content`` (its JSON, made on the reactor thread)."""
        target = self.path(kind, key)
        temporary = target.with_name(target.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
        fsync_dir(target.parent)

    def remove(self, kind: str, key: str) -> None:
        target = self.path(kind, key)
        try:
            target.unlink()
        except FileNotFoundError:
            return
        fsync_dir(target.parent)


def kind_of(record: Record) -> str:
    return MIRROR if isinstance(record, MirrorRecord) else RESTORE


def encode(record: Record) -> bytes:
    return json.dumps(record.to_json(), separators=(",", ":")).encode()
