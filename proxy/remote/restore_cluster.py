"""Making a restored catalogue a new cluster's, inside the restoring transaction: each blob
``remote`` or ``lost`` by what the bucket holds, incomplete part lists rebuilt from the objects,
the restore's S3 connection adopted as the active one, and the old cluster's run history
cleared. The S3 requests run on a small thread pool."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.db import Txn
from common.s3 import S3Settings, SecretBox, SecretError
from proxy.remote.restore_snapshot import s3_failure
from proxy.remote.states import LOST, REMOTE

HEAD_THREADS = 8  # S3 requests at once while blobs are checked
_PAGE = 500  # blobs checked per page


def settle_blobs(
    txn: Txn, client: Any, settings: S3Settings, say: Callable[[str], None]
) -> dict[str, int]:
    """Mark each blob remote or lost by what the bucket holds; rebuild missing part lists."""
    txn.execute(
        "UPDATE blobs SET local = 0, mirror_node = NULL, mirror_detail = '', restore_node = NULL,"
        " restore_requested_at = NULL, parts_restored = 0, restore_detail = ''"
    )
    total = int(txn.scalar("SELECT COUNT(*) FROM blobs"))
    say(f"checking {total} blob(s) in s3://{settings.bucket}/{settings.prefix}/")
    remote = lost = 0
    last = 0
    with ThreadPoolExecutor(HEAD_THREADS) as pool:
        while page := txn.all(
            "SELECT id, sha256, size FROM blobs WHERE id > ? ORDER BY id LIMIT ?", (last, _PAGE)
        ):
            last = int(page[-1][0])
            verdicts = list(
                pool.map(lambda r: _object_problem(client, settings, r[1], int(r[2])), page)
            )
            present = [row for row, problem in zip(page, verdicts, strict=True) if problem is None]
            for (blob_id, _, _), problem in zip(page, verdicts, strict=True):
                if problem is None:
                    txn.execute(
                        "UPDATE blobs SET remote_state = ?, remote_verified = 1 WHERE id = ?",
                        (REMOTE, blob_id),
                    )
                    txn.execute(
                        "UPDATE blob_parts SET remote_state = 'uploaded' WHERE blob_id = ?",
                        (blob_id,),
                    )
                else:
                    txn.execute(
                        "UPDATE blobs SET remote_state = ?, remote_verified = 0, mirror_detail = ?"
                        " WHERE id = ?",
                        (LOST, problem, blob_id),
                    )
                    txn.execute("DELETE FROM blob_parts WHERE blob_id = ?", (blob_id,))
            corrupt = _complete_parts(txn, client, settings, present, pool)
            remote += len(present) - corrupt
            lost += len(page) - len(present) + corrupt
    files_lost = int(txn.scalar(
        "SELECT COUNT(*) FROM files f JOIN versions v ON v.file_id = f.id"
        " AND v.number = f.current_version JOIN blobs b ON b.id = v.blob_id"
        " WHERE b.remote_state = ?", (LOST,),
    ))  # fmt: skip
    say(f"blobs: {remote} remote, {lost} lost")
    return {
        "blobs_remote": remote,
        "blobs_lost": lost,
        "files_lost": files_lost,
    }


def _object_problem(client: Any, settings: S3Settings, sha256: str, size: int) -> str | None:
    """None if the blob's object is in the bucket as expected, else why it is not."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        head = client.head_object(Bucket=settings.bucket, Key=settings.object_key(sha256))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return "lost: its object was not in the bucket at the metadata restore"
        raise s3_failure(exc, settings) from None
    except BotoCoreError as exc:
        raise s3_failure(exc, settings) from None
    if int(head["ContentLength"]) != size:
        return f"lost: its object in the bucket has {head['ContentLength']} bytes, not {size}"
    recorded = head.get("Metadata", {}).get("sha256")
    if recorded and recorded != sha256:
        return "lost: its object in the bucket has another sha256"
    return None


def _complete_parts(
    txn: Txn,
    client: Any,
    settings: S3Settings,
    blobs: list[tuple[Any, ...]],
    pool: ThreadPoolExecutor,
) -> int:
    """Rebuild the part list of each remote blob whose list is incomplete (mirrored after the
    snapshot); a blob whose object turns out not to hold its content becomes lost. Returns
    how many did."""
    if not blobs:
        return 0
    ids = [int(row[0]) for row in blobs]
    known = {
        int(blob_id): (int(total or 0), int(unhashed or 0))
        for blob_id, total, unhashed in txn.all(
            "SELECT blob_id, SUM(size), SUM(CASE WHEN sha256 IS NULL THEN 1 ELSE 0 END)"
            f" FROM blob_parts WHERE blob_id IN ({', '.join('?' for _ in ids)}) GROUP BY blob_id",
            ids,
        )
    }
    wanting = [
        (int(blob_id), sha256, int(size)) for blob_id, sha256, size in blobs
        if known.get(int(blob_id)) != (int(size), 0)
    ]  # fmt: skip
    rebuilt = pool.map(lambda b: _parts_from_object(client, settings, b[1], b[2]), wanting)
    corrupt = 0
    for (blob_id, _, _), parts in zip(wanting, rebuilt, strict=True):
        txn.execute("DELETE FROM blob_parts WHERE blob_id = ?", (blob_id,))
        if isinstance(parts, str):
            txn.execute(
                "UPDATE blobs SET remote_state = ?, remote_verified = 0, mirror_detail = ?"
                " WHERE id = ?",
                (LOST, parts, blob_id),
            )
            corrupt += 1
            continue
        for index, start, size, digest in parts:
            txn.execute(
                "INSERT INTO blob_parts (blob_id, idx, start, size, sha256, remote_state)"
                " VALUES (?, ?, ?, ?, ?, 'uploaded')",
                (blob_id, index, start, size, digest),
            )
    return corrupt


def _parts_from_object(
    client: Any, settings: S3Settings, sha256: str, size: int
) -> list[tuple[int, int, int, str]] | str:
    """(index, offset, size, sha256) of each part of the blob's object, or why the object
    cannot be trusted.

    A single-part object's one part is the whole blob. A multipart object's part sizes come
    from ``HeadObject`` with ``PartNumber`` (every S3-compatible server answers it); their
    sha256s are computed by reading the object once, which also proves that the object holds
    exactly the blob's content. (S3's own part checksums would save the read, but not every
    server reports them per part.)"""
    from botocore.exceptions import BotoCoreError, ClientError

    key = settings.object_key(sha256)
    try:
        if size == 0:
            return [(1, 0, 0, sha256)]
        first = client.head_object(Bucket=settings.bucket, Key=key, PartNumber=1)
        count = int(first.get("PartsCount") or 1)
        if count == 1:
            return [(1, 0, size, sha256)]
        sizes = [int(first["ContentLength"])] + [
            int(client.head_object(Bucket=settings.bucket, Key=key, PartNumber=n)["ContentLength"])
            for n in range(2, count + 1)
        ]
        if sum(sizes) != size:
            return f"lost: its object's parts add up to {sum(sizes)} bytes, not {size}"
        body = client.get_object(Bucket=settings.bucket, Key=key)["Body"]
        whole = hashlib.sha256()
        parts, offset = [], 0
        for index, part_size in enumerate(sizes, start=1):
            digest = hashlib.sha256()
            left = part_size
            while left:
                chunk = body.read(min(left, 1 << 20))
                if not chunk:
                    return "lost: its object in the bucket ended early"
                digest.update(chunk)
                whole.update(chunk)
                left -= len(chunk)
            parts.append((index, offset, part_size, digest.hexdigest()))
            offset += part_size
        body.close()
    except (BotoCoreError, ClientError) as exc:
        raise s3_failure(exc, settings) from None
    if whole.hexdigest() != sha256:
        return "lost: its object in the bucket does not hold its content (sha256 differs)"
    return parts


def adopt_connection(
    txn: Txn, settings: S3Settings, box: SecretBox, now: float, detail: str
) -> tuple[str, list[str]]:
    """Make the restore's S3 connection the active one, its secret sealed with this proxy's
    key; the names of the other connections whose secrets this key cannot open. (name,
    unreadable)."""
    rows = txn.all(
        "SELECT name, bucket, prefix, endpoint_url, secret_encrypted FROM s3_connections"
        " ORDER BY name"
    )
    same = (settings.bucket, settings.prefix, settings.endpoint_url)
    match = next((str(r[0]) for r in rows if (r[1], r[2], r[3]) == same), None)
    unreadable = []
    for name, *_, sealed in rows:
        try:
            box.open(sealed)
        except SecretError:
            if name != match:
                unreadable.append(str(name))
    txn.execute("UPDATE s3_connections SET active = 0 WHERE active = 1")
    sealed_secret = box.seal(settings.secret_key)
    last4 = settings.secret_key[-4:] if len(settings.secret_key) >= 12 else ""
    if match is None:
        taken = {str(r[0]) for r in rows}
        base = settings.name or "restored"
        match = base
        for n in range(2, len(taken) + 3):
            if match not in taken:
                break
            match = f"{base}-{n}"
        txn.execute(
            "INSERT INTO s3_connections (name, endpoint_url, region, bucket, prefix, access_key,"
            " secret_encrypted, secret_last4, active, validated_at, validation_ok,"
            " validation_detail, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, 1, ?, ?, ?)",
            (match, settings.endpoint_url, settings.region, settings.bucket, settings.prefix,
             settings.access_key, sealed_secret, last4, now, detail, now, now),
        )  # fmt: skip
    else:
        txn.execute(
            "UPDATE s3_connections SET region = ?, access_key = ?, secret_encrypted = ?,"
            " secret_last4 = ?, active = 1, validated_at = ?, validation_ok = 1,"
            " validation_detail = ?, updated_at = ? WHERE name = ?",
            (settings.region, settings.access_key, sealed_secret, last4, now, detail, now, match),
        )
    return match, unreadable


def reset_jobs(txn: Txn) -> None:
    """Keep the intervals staff chose; the old cluster's run history means nothing here."""
    txn.execute(
        "UPDATE jobs SET last_run = NULL, last_duration = NULL, last_ok = NULL,"
        " last_result = '', next_run = NULL"
    )
