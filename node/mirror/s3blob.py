"""The S3 calls of the mirror and the restore, one blocking step each, for worker threads.

``RemoteBlobs`` wraps one boto3 client for one connection; each method is one step of
``node.mirror.loop``'s plan (look for an existing object, open an upload, list its parts, upload a
part, complete, check, abort, fetch a part). The engine runs every one of them with
``deferToThreadPool``; none may be called on the reactor thread. Local reads use ``pread`` so
parts of one file are read concurrently without sharing a file position.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from common.durable import pwrite_all
from common.s3 import S3Settings
from node.mirror.bandwidth import Closed, TokenBucket
from node.mirror.state import Blob, Part, RestorePart, Target, b64, composite_sha256, multipart_etag

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

READ_SIZE = 1024 * 1024
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class UploadGone(Exception):
    """S3 no longer knows the multipart upload (completed, aborted or expired)."""


class Mismatch(Exception):
    """What S3 holds or answered is not what was sent or expected."""


class LocalChanged(Exception):
    """The local replica is not (any more) the size the want-list says."""


@dataclass(frozen=True)
class ListedPart:
    index: int
    size: int
    etag: str  # without quotes: the part's md5 hex
    sha256_b64: str | None  # when the server lists part checksums


@dataclass(frozen=True)
class RemoteObject:
    size: int
    etag: str  # without quotes
    metadata: dict[str, str]
    sha256_b64: str | None  # the checksum as HeadObject gives it, without any "-N"


@dataclass(frozen=True)
class FileHashes:
    md5: str
    sha256: str
    parts: list[tuple[str, str]]  # (md5, sha256) of each part asked for


def metadata_of(blob: Blob) -> dict[str, str]:
    """The metadata every mirrored object carries (S3 lower-cases the names)."""
    return {"size": str(blob.size), "md5": blob.md5, "sha256": blob.sha256}


class RemoteBlobs:
    """Blocking S3 steps on one connection, throttled by the node's bandwidth cap."""

    def __init__(
        self,
        client: S3Client,
        settings: S3Settings,
        throttle: TokenBucket,
        *,
        page_size: int = 1000,
    ) -> None:
        self.client = client
        self.settings = settings
        self.throttle = throttle
        self.page_size = page_size

    def target(self, blob: Blob) -> Target:
        return Target(
            self.settings.endpoint_url, self.settings.bucket, self.settings.object_key(blob.sha256)
        )

    # -- the mirror

    def head(self, object_key: str) -> RemoteObject | None:
        """The object at ``object_key``, or None if there is none."""
        try:
            answer = self.client.head_object(
                Bucket=self.settings.bucket, Key=object_key, ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if _code(exc) in NOT_FOUND:
                return None
            raise
        checksum = answer.get("ChecksumSHA256")
        return RemoteObject(
            size=int(answer["ContentLength"]),
            etag=answer.get("ETag", "").strip('"'),
            metadata={k.lower(): v for k, v in answer.get("Metadata", {}).items()},
            sha256_b64=checksum.partition("-")[0] if checksum else None,
        )

    def first_part_size(self, object_key: str) -> int:
        answer = self.client.head_object(Bucket=self.settings.bucket, Key=object_key, PartNumber=1)
        return int(answer["ContentLength"])

    def create_upload(self, object_key: str, blob: Blob) -> str:
        answer = self.client.create_multipart_upload(
            Bucket=self.settings.bucket,
            Key=object_key,
            Metadata=metadata_of(blob),
            ChecksumAlgorithm="SHA256",
            ContentType="application/octet-stream",
        )
        return str(answer["UploadId"])

    def list_parts(self, object_key: str, upload_id: str) -> dict[int, ListedPart]:
        """Every part S3 holds for the upload, page after page; UploadGone if it is gone."""
        listed: dict[int, ListedPart] = {}
        marker = 0
        while True:
            try:
                answer = self.client.list_parts(
                    Bucket=self.settings.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    MaxParts=self.page_size,
                    PartNumberMarker=marker,
                )
            except ClientError as exc:
                if _code(exc) in {"NoSuchUpload", *NOT_FOUND}:
                    raise UploadGone(f"upload {upload_id} of {object_key} is gone") from None
                raise
            for item in answer.get("Parts", []):
                index = int(item["PartNumber"])
                listed[index] = ListedPart(
                    index, int(item["Size"]), item["ETag"].strip('"'), item.get("ChecksumSHA256")
                )
            if not answer.get("IsTruncated"):
                return listed
            following = int(answer.get("NextPartNumberMarker") or 0)
            if following <= marker:
                raise Mismatch(f"ListParts of {object_key} did not move past part {marker}")
            marker = following

    def upload_part(
        self, object_key: str, upload_id: str, part: Part, path: Path
    ) -> tuple[str, str]:
        """Read the part from the replica, send it with its sha256 and md5, check S3's answer;
        the part's (md5, sha256)."""
        data = read_range(path, part.offset, part.size)
        md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
        self.throttle.take(part.size)
        answer = self.client.upload_part(
            Bucket=self.settings.bucket,
            Key=object_key,
            UploadId=upload_id,
            PartNumber=part.index,
            Body=data,
            ContentLength=part.size,
            ContentMD5=b64(md5),
            ChecksumSHA256=b64(sha256),
        )
        etag = answer.get("ETag", "").strip('"')
        if etag != md5:
            raise Mismatch(f"S3 answered part {part.index} with ETag {etag!r}, not its md5 {md5}")
        checksum = answer.get("ChecksumSHA256")
        if checksum and checksum != b64(sha256):
            raise Mismatch(f"S3 answered part {part.index} with another sha256 than was sent")
        return md5, sha256

    def complete(self, object_key: str, upload_id: str, parts: list[Part]) -> None:
        listing = []
        for part in parts:
            assert part.md5 is not None and part.sha256 is not None
            listing.append(
                {
                    "PartNumber": part.index,
                    "ETag": f'"{part.md5}"',
                    "ChecksumSHA256": b64(part.sha256),
                }
            )
        self.client.complete_multipart_upload(
            Bucket=self.settings.bucket,
            Key=object_key,
            UploadId=upload_id,
            MultipartUpload={"Parts": listing},  # type: ignore[typeddict-item]
        )

    def abort(self, object_key: str, upload_id: str) -> None:
        """Abort the upload and check that S3 no longer knows it (ListParts: NoSuchUpload)."""
        try:
            self.client.abort_multipart_upload(
                Bucket=self.settings.bucket, Key=object_key, UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) not in {"NoSuchUpload", *NOT_FOUND}:
                raise
        try:
            self.list_parts(object_key, upload_id)
        except UploadGone:
            return
        raise Mismatch(f"upload {upload_id} of {object_key} is still listed after its abort")

    # -- the restore

    def download_part(self, object_key: str, part: RestorePart, fd: int) -> str:
        """Fetch one part with a ranged GET into ``fd`` at its offset (fsynced); its sha256."""
        sha256 = hashlib.sha256()
        if part.size == 0:
            return sha256.hexdigest()
        answer = self.client.get_object(
            Bucket=self.settings.bucket,
            Key=object_key,
            Range=f"bytes={part.offset}-{part.offset + part.size - 1}",
        )
        body = answer["Body"]
        written = 0
        try:
            while written < part.size:
                chunk = body.read(min(READ_SIZE, part.size - written))
                if not chunk:
                    break
                self.throttle.take(len(chunk))
                sha256.update(chunk)
                pwrite_all(fd, chunk, part.offset + written)
                written += len(chunk)
            if written != part.size or body.read(1):
                raise Mismatch(
                    f"part {part.index}: S3 sent {written} bytes or more, not {part.size}"
                )
        finally:
            body.close()
        os.fdatasync(fd)
        return sha256.hexdigest()


def check_object(remote: RemoteObject | None, blob: Blob, parts: list[Part]) -> str | None:
    """Why the object in S3 is not ``blob`` uploaded as ``parts``, or None when it is: its
    size, its metadata, its multipart ETag and (if the server gives one) its SHA256."""
    if remote is None:
        return "the object is not in the bucket"
    if not claims_blob(remote, blob):
        return (
            f"the object's size ({remote.size}) or metadata (size, md5, sha256) is not the blob's"
        )
    md5s = [p.md5 for p in parts]
    sha256s = [p.sha256 for p in parts]
    if not parts or None in md5s or None in sha256s:
        return "the parts' checksums are not all known"
    if "-" in remote.etag:
        expected = multipart_etag([m for m in md5s if m is not None])
    else:  # uploaded in one PUT (by another tool): its ETag is the content's md5
        expected = blob.md5 if len(parts) == 1 else "(one part)"
    if remote.etag != expected:
        return f"the object's ETag is {remote.etag!r}, not {expected!r}"
    if remote.sha256_b64 is not None and remote.sha256_b64 not in (
        composite_sha256([s for s in sha256s if s is not None]),
        b64(blob.sha256),
    ):
        return "the object's SHA256 checksum is not the parts' one"
    return None


def claims_blob(remote: RemoteObject, blob: Blob) -> bool:
    """Whether an object says it holds ``blob``: its size and the metadata the mirror sets."""
    return remote.size == blob.size and {
        k: remote.metadata.get(k) for k in ("size", "md5", "sha256")
    } == metadata_of(blob)


def listed_matches(listed: ListedPart, part: Part) -> bool:
    """Whether a part S3 lists is the local part: same size, ETag = md5, same checksum."""
    if listed.size != part.size or part.md5 is None or listed.etag != part.md5:
        return False
    return listed.sha256_b64 is None or (
        part.sha256 is not None and listed.sha256_b64 == b64(part.sha256)
    )


def read_range(path: Path, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, size, offset)
        while len(data) < size:
            more = os.pread(fd, size - len(data), offset + len(data))
            if not more:
                raise LocalChanged(
                    f"{path.name} ends before byte {offset + size}: it is not the replica "
                    "the want-list names"
                )
            data += more
        return data
    finally:
        os.close(fd)


def hash_file(path: Path, parts: Iterable[Part] = ()) -> FileHashes:
    """The whole file's md5 and sha256, and each of ``parts``' (md5, sha256), in one read."""
    wanted = sorted(parts, key=lambda p: p.offset)
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    found: list[tuple[str, str]] = []
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        position = 0
        current = 0
        part_md5, part_sha = hashlib.md5(), hashlib.sha256()
        while count := file.readinto(buffer):
            md5.update(view[:count])
            sha256.update(view[:count])
            done = 0
            while current < len(wanted) and done < count:
                part = wanted[current]
                end = part.offset + part.size
                take = min(count - done, end - (position + done))
                part_md5.update(view[done : done + take])
                part_sha.update(view[done : done + take])
                done += take
                if position + done == end:
                    found.append((part_md5.hexdigest(), part_sha.hexdigest()))
                    part_md5, part_sha = hashlib.md5(), hashlib.sha256()
                    current += 1
            position += count
        while current < len(wanted) and wanted[current].size == 0:
            found.append((part_md5.hexdigest(), part_sha.hexdigest()))
            current += 1
    return FileHashes(md5.hexdigest(), sha256.hexdigest(), found)


def describe(exc: BaseException) -> str:
    """A short reason for a failed step, for the report and the log (never a credential)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = exc.operation_name or "S3"
        return f"{operation}: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, BotoCoreError):
        return f"S3 unreachable: {exc}"
    if isinstance(exc, Closed):
        return "stopped: the node is shutting down"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {Path(exc.filename or '?').name}"
    if isinstance(exc, (Mismatch, UploadGone, LocalChanged)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
