"""Quotas: how many bytes an account may hold, and how many uploads it may keep open.

What counts against the quota ("used"): every version of the owner's files (a blob shared by
two versions counts twice) and every open upload (unfinished and not expired) with what it
may still become: its declared total, or the bytes it has received while its total is not
known yet (tus deferred length, a seed ``Content-Range: .../*``). A final tus upload counts
nothing of its own: its partial uploads are what is counted.

Bytes are refused before they are acknowledged, never after:

- at creation, an upload's declared total (seed: the first chunk's ``Content-Range`` total or
  the single request's size; tus: ``Upload-Length``, or the first body of a deferred
  creation-with-upload);
- for an upload whose total is not known, each chunk, and the tus PATCH that says the length;
  a chunk at an upload whose total was declared needs no check (it was counted at creation);
- not at completion: bytes already accepted become the version even if the quota was lowered
  meanwhile; the account is then over its quota and can add nothing until it frees space.

Each check runs in the transaction that inserts the upload row or moves its offset, after
locking the owner's ``users`` row (PostgreSQL ``FOR NO KEY UPDATE``, which does not hold up
the inserts that reference the row; SQLite's ``BEGIN IMMEDIATE`` holds the whole database), so
two concurrent requests cannot both take the last free bytes or the last open upload. The
quota is read in that transaction: a change by staff applies to the next request. The cost:
a chunk of unknown total, and a seed upload's first chunk (the transaction that creates the
upload writes it), hold the owner's row until they commit, after their copy and fsync; so on
PostgreSQL those of one account commit one at a time. Other chunks take no such lock.
"""

from __future__ import annotations

from common.db import Txn
from common.errors import PayloadTooLarge, TooManyRequests
from proxy.catalog import store
from proxy.uploads import uploadstore
from proxy.uploads.uploadstore import Upload

DEFAULT_MAX_OPEN_UPLOADS = 20


class QuotaExceeded(PayloadTooLarge):
    """413 ``{"detail": "quota exceeded", "quota": ..., "used": ...}``."""

    def __init__(self, quota: int, used: int) -> None:
        super().__init__("quota exceeded", quota=quota, used=used)


def reserved(total: int | None, received: int) -> int:
    """What an open upload holds against its owner's quota: its total, once known.

    >>> reserved(1000, 10), reserved(None, 10)
    (1000, 10)
    """
    return received if total is None else total


def check_quota(quota: int | None, used: int, growth: int) -> None:
    """Refuse ``growth`` more bytes if they would take ``used`` past ``quota`` (None: none).

    >>> check_quota(None, 10**15, 10**15)  # no quota, no limit
    >>> check_quota(100, 60, 40)  # up to the quota exactly
    >>> check_quota(100, 60, 41)
    Traceback (most recent call last):
    ...
    proxy.uploads.quota.QuotaExceeded: quota exceeded
    >>> check_quota(100, 150, 0)  # nothing more: fine even over a lowered quota
    """
    if quota is not None and growth > 0 and used + growth > quota:
        raise QuotaExceeded(quota, used)


def check_open(open_uploads: int, limit: int) -> None:
    """Refuse one more open upload when ``limit`` are open already.

    >>> check_open(19, 20)
    >>> check_open(20, 20)
    Traceback (most recent call last):
    ...
    common.errors.TooManyRequests: too many open uploads: finish or cancel one first
    """
    if open_uploads >= limit:
        raise TooManyRequests(
            "too many open uploads: finish or cancel one first", open=open_uploads, limit=limit
        )


def admit_upload_txn(txn: Txn, upload: Upload, initial: int, now: float, max_open: int) -> None:
    """Before ``upload``'s row is inserted: refuse it over the open-uploads cap, or if its
    total (or, while that is unknown, its ``initial`` bytes) would pass the quota.

    A final tus upload is admitted as it is: its partials were counted and capped.
    """
    if upload.concat == "final":
        return
    quota = store.user_quota(txn, upload.owner_id, lock=True)
    if quota is None:  # only the cap: no sum over every version (it grows with the files)
        check_open(uploadstore.open_uploads(txn, upload.owner_id, now), max_open)
        return
    usage = uploadstore.usage(txn, upload.owner_id, now)
    check_open(usage.open_uploads, max_open)
    check_quota(quota, usage.used, reserved(upload.total, initial))


def admit_growth_txn(
    txn: Txn, upload: Upload, total: int | None, received: int, now: float
) -> None:
    """Before ``upload`` (as locked in this transaction) moves to ``total``/``received``:
    refuse what it would add past the quota. Its own reservation is already in "used", so
    only the difference counts. No query when nothing grows (a declared total)."""
    growth = reserved(total, received) - reserved(upload.total, upload.received)
    if growth <= 0:
        return
    quota = store.user_quota(txn, upload.owner_id, lock=True)
    if quota is None:
        return
    check_quota(quota, uploadstore.usage(txn, upload.owner_id, now).used, growth)
