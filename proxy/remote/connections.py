"""S3 connections: the buckets staff configure, one of them active, secrets sealed at rest.

A connection is an endpoint, region, bucket, key prefix and an access key pair. The secret
key is stored only sealed with a ``SecretBox`` made from the proxy's encryption key (by
default its token secret), shown only as its last 4 characters, and opened only in memory:
``active()`` gives the active connection in the clear to the parts that talk to S3 or hand it
to nodes. A row sealed under another key (a database restored elsewhere) stays listed, marked
``secret_unreadable``, until staff send its secret again.

``validate`` proves a connection works with real requests from a worker thread (boto3 blocks):
HeadBucket, then a small object written and deleted under the prefix to prove write access.
Exactly one connection is active; activating one clears the others in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from common.db import Database
from common.errors import BadRequest, Conflict
from common.s3 import S3Settings, SecretBox, SecretError, make_client
from proxy.ops.systemlog import SystemLog
from proxy.remote import connectionstore
from proxy.remote.connection_fields import (
    CHANGEABLE,
    FIELDS,
    check_fields_of,
    connection_json,
    last4,
)
from proxy.remote.connectionstore import Connection

__all__ = ["CHANGEABLE", "FIELDS", "Connection", "S3Connections", "connection_box", "probe"]

PROBE_BODY = b"pyarchive write probe: safe to delete\n"
BOX_PURPOSE = "s3 connection secrets"


def connection_box(key: str, fallbacks: Sequence[str] = ()) -> SecretBox:
    """The box stored S3 secrets are sealed with, made from the proxy's encryption key (and
    opening with ``fallbacks`` too: older keys)."""
    return SecretBox(key, BOX_PURPOSE, fallbacks)


# ---------------------------------------------------------------- the probe (worker thread)


def _client_error(step: str, exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "") or "")
        message = str(error.get("Message", "") or "")
        hints = {
            "404": "no such bucket at this endpoint",
            "NoSuchBucket": "no such bucket at this endpoint",
            "403": "access denied: check the keys and the bucket's policy",
        }
        said = " ".join(part for part in (code, message) if part)
        hint = f" ({hints[code]})" if code in hints else ""
        return f"{step} failed: {type(exc).__name__} {said}".strip() + hint
    return f"{step} failed: {type(exc).__name__}: {exc}"


def probe(settings: S3Settings) -> tuple[bool, str]:
    """HeadBucket, then put and delete a small object under the prefix. Blocking.

    Returns whether it all worked and what happened, in words that never hold the secret.
    """
    try:
        client = make_client(
            settings, max_pool_connections=1, connect_timeout=5, read_timeout=15,
            retries={"max_attempts": 2, "mode": "standard"},
        )  # fmt: skip
    except Exception as exc:  # botocore refuses e.g. a region it cannot put in a host name
        return False, _without_secret(settings, _client_error("Making the S3 client", exc))
    key = f"{settings.prefix}/pyarchive-probe-{uuid.uuid4().hex}"
    step = "HeadBucket"
    try:
        client.head_bucket(Bucket=settings.bucket)
        step = "PutObject"
        client.put_object(Bucket=settings.bucket, Key=key, Body=PROBE_BODY)
        step = "DeleteObject"
        client.delete_object(Bucket=settings.bucket, Key=key)
    except Exception as exc:
        detail = _client_error(step, exc)
        ok = False
    else:
        detail = f"bucket {settings.bucket} answered; wrote and deleted {key}"
        ok = True
    finally:
        client.close()
    return ok, _without_secret(settings, detail)


def _without_secret(settings: S3Settings, detail: str) -> str:
    if settings.secret_key:
        detail = detail.replace(settings.secret_key, "…")
    return detail[:1000]


# ---------------------------------------------------------------- the store


class S3Connections:
    """Staff's S3 connections (API and command line), and the active one for everyone."""

    def __init__(
        self,
        db: Database,
        clock: IReactorTime,
        box: SecretBox,
        threads: IReactorThreads,
        pool: ThreadPool,
        syslog: SystemLog,
    ) -> None:
        self._db = db
        self._clock = clock
        self._box = box
        self._threads = threads
        self._pool = pool
        self._syslog = syslog
        self._unreadable_reported: set[tuple[str, str]] = set()

    def _json(self, row: Connection) -> dict[str, Any]:
        return connection_json(row, self._box)

    async def create(self, data: dict[str, Any]) -> dict[str, Any]:
        fields = check_fields_of(data, creating=True)
        secret = fields.pop("secret_key")
        now = self._clock.seconds()
        row = Connection(
            active=False, validated_at=None, validation_ok=None, validation_detail="",
            created_at=now, updated_at=now, secret_encrypted=self._box.seal(secret),
            secret_last4=last4(secret), **fields,
        )  # fmt: skip
        if not await self._db.run(connectionstore.insert, row):
            raise Conflict(f"An S3 connection named {row.name!r} exists", field="name")
        await self._syslog.record(
            "info", "s3.created", f"S3 connection {row.name} added (bucket {row.bucket})",
            connection=row.name, bucket=row.bucket, endpoint_url=row.endpoint_url,
        )  # fmt: skip
        return self._json(row)

    async def list(self) -> list[dict[str, Any]]:
        return [self._json(row) for row in await self._db.run(connectionstore.all_connections)]

    async def get(self, name: str) -> dict[str, Any]:
        return self._json(await self._db.run(connectionstore.get, name))

    async def update(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        """Change any field but the name; a change forgets the last validation."""
        fields = check_fields_of(data, creating=False)
        if not fields:
            raise BadRequest(f"nothing to change: send any of {', '.join(sorted(CHANGEABLE))}")
        changes: dict[str, Any] = dict(fields)
        if "secret_key" in changes:
            secret = changes.pop("secret_key")
            changes["secret_encrypted"] = self._box.seal(secret)
            changes["secret_last4"] = last4(secret)
        row = await self._db.run(connectionstore.update, name, changes, self._clock.seconds())
        changed = sorted(fields)
        await self._syslog.record(
            "info", "s3.updated", f"S3 connection {name} changed: {', '.join(changed)}",
            connection=name, fields=changed,
        )  # fmt: skip
        return self._json(row)

    async def delete(self, name: str) -> None:
        await self._db.run(connectionstore.delete, name)
        await self._syslog.record(
            "info", "s3.deleted", f"S3 connection {name} removed", connection=name
        )

    async def reseal(self) -> tuple[int, int]:
        """Seal every stored secret with this proxy's current key where an older key sealed
        it, in one transaction; (resealed, unreadable)."""
        return await self._db.run(connectionstore.reseal_all, self._box)

    async def activate(self, name: str) -> dict[str, Any]:
        row = await self._db.run(connectionstore.activate, name, self._box)
        await self._syslog.record(
            "info", "s3.activated", f"S3 connection {name} is now the active one",
            connection=name, bucket=row.bucket,
        )  # fmt: skip
        return self._json(row)

    async def validate(self, name: str) -> dict[str, Any]:
        """Try the connection for real and record the outcome (answered either way)."""
        row = await self._db.run(connectionstore.get, name)
        try:
            settings = row.settings(self._box.open(row.secret_encrypted))
        except SecretError:
            ok = False
            detail = "the secret key cannot be opened with this proxy's key: send it again"
        else:
            ok, detail = await deferToThreadPool(self._threads, self._pool, probe, settings)
        recorded = await self._db.run(
            connectionstore.record_validation,
            name,
            row.updated_at,
            ok,
            detail,
            self._clock.seconds(),
        )
        await self._syslog.record(
            "info" if ok else "warn", "s3.validated",
            f"S3 connection {name} {'works' if ok else 'failed validation'}: {detail}",
            connection=name, ok=ok,
        )  # fmt: skip
        return self._json(recorded)

    async def settings(self, name: str) -> S3Settings:
        """A connection in the clear (in memory only); 409 if its secret cannot be opened."""
        row = await self._db.run(connectionstore.get, name)
        try:
            return row.settings(self._box.open(row.secret_encrypted))
        except SecretError:
            raise Conflict(
                f"S3 connection {name}'s secret key cannot be opened with this proxy's key",
                field="secret_key",
            ) from None

    async def active(self) -> S3Settings | None:
        """The active connection in the clear, or None if there is none or its secret cannot
        be opened here (said once in the log and the system log, until it is fixed)."""
        row = await self._db.run(connectionstore.active)
        if row is None:
            return None
        try:
            secret = self._box.open(row.secret_encrypted)
        except SecretError:
            mark = (row.name, row.secret_encrypted)
            if mark not in self._unreadable_reported:
                self._unreadable_reported.add(mark)
                await self._syslog.record(
                    "error", "s3.secret_unreadable",
                    f"the active S3 connection {row.name}'s secret key cannot be opened with "
                    "this proxy's encryption key (restored elsewhere, or the key changed): "
                    f"nothing is mirrored until staff PATCH /api/s3-connections/{row.name}/ "
                    "with its secret_key",
                    connection=row.name,
                )  # fmt: skip
            return None
        self._unreadable_reported.clear()
        return row.settings(secret)
