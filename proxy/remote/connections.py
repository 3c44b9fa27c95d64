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

import re
import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from common.db import Database, Txn
from common.errors import BadRequest, Conflict, NotFound
from common.s3 import (
    S3Settings,
    SecretBox,
    SecretError,
    make_client,
    secret_hint,
    valid_bucket,
    valid_prefix,
)
from proxy.api.forms import check_fields
from proxy.api.views import isotime
from proxy.ops.systemlog import SystemLog

log = Logger()
FIELDS = {"name", "endpoint_url", "region", "bucket", "prefix", "access_key", "secret_key"}
CHANGEABLE = FIELDS - {"name"}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REGION = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEY = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces
_COLUMNS = (
    "name, endpoint_url, region, bucket, prefix, access_key, secret_encrypted, secret_last4,"
    " active, validated_at, validation_ok, validation_detail, created_at, updated_at"
)
PROBE_BODY = b"pyarchive write probe: safe to delete\n"
BOX_PURPOSE = "s3 connection secrets"


def connection_box(key: str) -> SecretBox:
    """The box stored S3 secrets are sealed with, made from the proxy's encryption key."""
    return SecretBox(key, BOX_PURPOSE)


@dataclass(frozen=True)
class Connection:
    """One row of ``s3_connections``; the secret still sealed."""

    name: str
    endpoint_url: str
    region: str
    bucket: str
    prefix: str
    access_key: str
    secret_encrypted: str
    secret_last4: str
    active: bool
    validated_at: float | None
    validation_ok: bool | None
    validation_detail: str
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Connection:
        (name, endpoint, region, bucket, prefix, access, sealed, last4, active, validated_at,
         validation_ok, detail, created, updated) = row  # fmt: skip
        return cls(
            name, endpoint, region, bucket, prefix, access, sealed, last4, bool(active),
            None if validated_at is None else float(validated_at),
            None if validation_ok is None else bool(validation_ok),
            detail, float(created), float(updated),
        )  # fmt: skip

    def settings(self, secret: str) -> S3Settings:
        return S3Settings(
            bucket=self.bucket, region=self.region, access_key=self.access_key,
            secret_key=secret, endpoint_url=self.endpoint_url, prefix=self.prefix,
            name=self.name,
        )  # fmt: skip


# ---------------------------------------------------------------- parsing input


def _text(value: object, field: str, pattern: re.Pattern[str], meaning: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadRequest(f"{field} must be {meaning}", field=field)
    return value


def check_name(value: object) -> str:
    return _text(value, "name", _NAME, "1 to 64 letters, digits, '_', '.' or '-'")


def check_endpoint(value: object) -> str:
    """An S3 endpoint: empty (AWS itself) or http(s)://HOST[:PORT], without credentials.

    >>> check_endpoint("http://127.0.0.1:9000/"), check_endpoint("")
    ('http://127.0.0.1:9000', '')
    """
    if value is None or value == "":
        return ""
    problem = not isinstance(value, str) or len(value) > 500
    if not problem:
        assert isinstance(value, str)
        parts = urlsplit(value)
        try:
            port_ok = parts.port != 0
        except ValueError:
            port_ok = False
        problem = (
            parts.scheme not in {"http", "https"}
            or not parts.hostname
            or not port_ok
            or "@" in parts.netloc
            or parts.path not in {"", "/"}
            or bool(parts.query or parts.fragment)
        )
    if problem:
        raise BadRequest(
            "endpoint_url must be empty (AWS) or http(s)://HOST[:PORT] without a path",
            field="endpoint_url",
        )
    assert isinstance(value, str)
    return value.rstrip("/")


def check_fields_of(data: dict[str, Any], *, creating: bool) -> dict[str, str]:
    """The connection fields in ``data``, each checked; all required ones when creating."""
    check_fields(data, FIELDS if creating else CHANGEABLE)
    if creating:
        for required in ("name", "region", "bucket", "access_key", "secret_key"):
            if data.get(required) in (None, ""):
                raise BadRequest(f"{required} is required", field=required)
    checked: dict[str, str] = {}
    for key, value in data.items():
        if key == "name":
            checked[key] = check_name(value)
        elif key == "endpoint_url":
            checked[key] = check_endpoint(value)
        elif key == "region":
            checked[key] = _text(value, key, _REGION, "a region name like us-east-1")
        elif key == "bucket":
            if not isinstance(value, str) or not valid_bucket(value):
                raise BadRequest("bucket is not a valid S3 bucket name", field=key)
            checked[key] = value
        elif key == "prefix":
            if not isinstance(value, str) or not valid_prefix(value):
                raise BadRequest(
                    "prefix must be path segments of letters, digits, '.', '_' or '-' "
                    "separated by '/', without a leading or trailing '/'",
                    field=key,
                )
            checked[key] = value
        else:  # access_key, secret_key: never echoed back in an error
            checked[key] = _text(value, key, _KEY, "1 to 256 printable characters, no spaces")
    if creating:
        checked.setdefault("endpoint_url", "")
        checked.setdefault("prefix", "pyarchive")
    return checked


def _last4(secret: str) -> str:
    hint = secret_hint(secret)
    return hint[1:]


def connection_json(row: Connection, box: SecretBox) -> dict[str, Any]:
    """What staff see of a connection: everything but the secret, whose last 4 characters
    are shown only if this proxy can open it."""
    try:
        secret = box.open(row.secret_encrypted)
    except SecretError:
        hint: str | None = None
    else:
        hint = secret_hint(secret)
    return {
        "name": row.name,
        "endpoint_url": row.endpoint_url,
        "region": row.region,
        "bucket": row.bucket,
        "prefix": row.prefix,
        "access_key": row.access_key,
        "secret_key_hint": hint,
        "secret_unreadable": hint is None,
        "active": row.active,
        "validated_at": isotime(row.validated_at),
        "validation_ok": row.validation_ok,
        "validation_detail": row.validation_detail,
        "created_at": isotime(row.created_at),
        "updated_at": isotime(row.updated_at),
    }


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
    client = make_client(
        settings, max_pool_connections=1, connect_timeout=5, read_timeout=15,
        retries={"max_attempts": 2, "mode": "standard"},
    )  # fmt: skip
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
    if settings.secret_key:
        detail = detail.replace(settings.secret_key, "…")
    return ok, detail[:1000]


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
            secret_last4=_last4(secret), **fields,
        )  # fmt: skip
        if not await self._db.run(_insert, row):
            raise Conflict(f"An S3 connection named {row.name!r} exists", field="name")
        await self._syslog.record(
            "info", "s3.created", f"S3 connection {row.name} added (bucket {row.bucket})",
            connection=row.name, bucket=row.bucket, endpoint_url=row.endpoint_url,
        )  # fmt: skip
        return self._json(row)

    async def list(self) -> list[dict[str, Any]]:
        return [self._json(row) for row in await self._db.run(_all)]

    async def get(self, name: str) -> dict[str, Any]:
        return self._json(await self._db.run(_get, name))

    async def update(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        """Change any field but the name; a change forgets the last validation."""
        fields = check_fields_of(data, creating=False)
        if not fields:
            raise BadRequest(f"nothing to change: send any of {', '.join(sorted(CHANGEABLE))}")
        changes: dict[str, Any] = dict(fields)
        if "secret_key" in changes:
            secret = changes.pop("secret_key")
            changes["secret_encrypted"] = self._box.seal(secret)
            changes["secret_last4"] = _last4(secret)
        row = await self._db.run(_update, name, changes, self._clock.seconds())
        changed = sorted(fields)
        await self._syslog.record(
            "info", "s3.updated", f"S3 connection {name} changed: {', '.join(changed)}",
            connection=name, fields=changed,
        )  # fmt: skip
        return self._json(row)

    async def delete(self, name: str) -> None:
        await self._db.run(_delete, name)
        await self._syslog.record(
            "info", "s3.deleted", f"S3 connection {name} removed", connection=name
        )

    async def activate(self, name: str) -> dict[str, Any]:
        row = await self._db.run(_activate, name, self._box)
        await self._syslog.record(
            "info", "s3.activated", f"S3 connection {name} is now the active one",
            connection=name, bucket=row.bucket,
        )  # fmt: skip
        return self._json(row)

    async def validate(self, name: str) -> dict[str, Any]:
        """Try the connection for real and record the outcome (answered either way)."""
        row = await self._db.run(_get, name)
        try:
            settings = row.settings(self._box.open(row.secret_encrypted))
        except SecretError:
            ok = False
            detail = "the secret key cannot be opened with this proxy's key: send it again"
        else:
            ok, detail = await deferToThreadPool(self._threads, self._pool, probe, settings)
        recorded = await self._db.run(
            _record_validation, name, row.updated_at, ok, detail, self._clock.seconds()
        )
        await self._syslog.record(
            "info" if ok else "warn", "s3.validated",
            f"S3 connection {name} {'works' if ok else 'failed validation'}: {detail}",
            connection=name, ok=ok,
        )  # fmt: skip
        return self._json(recorded)

    async def settings(self, name: str) -> S3Settings:
        """A connection in the clear (in memory only); 409 if its secret cannot be opened."""
        row = await self._db.run(_get, name)
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
        row = await self._db.run(_active)
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


# ---------------------------------------------------------------- SQL


def _insert(txn: Txn, row: Connection) -> bool:
    values = (
        row.name, row.endpoint_url, row.region, row.bucket, row.prefix, row.access_key,
        row.secret_encrypted, row.secret_last4, int(row.active), row.validated_at,
        row.validation_ok, row.validation_detail, row.created_at, row.updated_at,
    )  # fmt: skip
    inserted = txn.execute(
        f"INSERT INTO s3_connections ({_COLUMNS}) VALUES ({', '.join('?' for _ in values)})"
        " ON CONFLICT (name) DO NOTHING",
        values,
    )
    return inserted == 1


def _all(txn: Txn) -> list[Connection]:
    rows = txn.all(f"SELECT {_COLUMNS} FROM s3_connections ORDER BY name")
    return [Connection.from_row(row) for row in rows]


def _find(txn: Txn, name: str, lock: bool = False) -> Connection | None:
    row = txn.one(
        f"SELECT {_COLUMNS} FROM s3_connections WHERE name = ?" + (txn.for_update if lock else ""),
        (name,),
    )
    return None if row is None else Connection.from_row(row)


def _get(txn: Txn, name: str, lock: bool = False) -> Connection:
    row = _find(txn, name, lock)
    if row is None:
        raise NotFound(f"No S3 connection named {name!r}")
    return row


def _active(txn: Txn) -> Connection | None:
    row = txn.one(f"SELECT {_COLUMNS} FROM s3_connections WHERE active = 1")
    return None if row is None else Connection.from_row(row)


def _update(txn: Txn, name: str, changes: dict[str, Any], now: float) -> Connection:
    _get(txn, name, lock=True)
    assigned = ", ".join(f"{column} = ?" for column in changes)
    txn.execute(
        f"UPDATE s3_connections SET {assigned}, updated_at = ?, validated_at = NULL,"
        " validation_ok = NULL, validation_detail = '' WHERE name = ?",
        (*changes.values(), now, name),
    )
    return _get(txn, name)


def _delete(txn: Txn, name: str) -> None:
    row = _get(txn, name, lock=True)
    if row.active:
        raise Conflict(f"S3 connection {name} is the active one: activate another connection first")
    txn.execute("DELETE FROM s3_connections WHERE name = ?", (name,))


def _activate(txn: Txn, name: str, box: SecretBox) -> Connection:
    if txn.dialect == "postgresql":
        # Two activations at once would both clear, then collide on the unique index.
        txn.execute("SELECT pg_advisory_xact_lock(7260913)")
    row = _get(txn, name, lock=True)
    try:
        box.open(row.secret_encrypted)
    except SecretError:
        raise Conflict(
            f"S3 connection {name}'s secret key cannot be opened with this proxy's key: "
            "PATCH it with its secret_key first",
            field="secret_key",
        ) from None
    # Clear first: the unique index allows one active row at any moment.
    txn.execute("UPDATE s3_connections SET active = 0 WHERE active = 1 AND name <> ?", (name,))
    txn.execute("UPDATE s3_connections SET active = 1 WHERE name = ?", (name,))
    return replace(row, active=True)


def _record_validation(
    txn: Txn, name: str, seen_at: float, ok: bool, detail: str, now: float
) -> Connection:
    """Store a validation's outcome, unless the connection changed while it ran (then the
    outcome says nothing about what is stored, and the row is returned as it is)."""
    txn.execute(
        "UPDATE s3_connections SET validated_at = ?, validation_ok = ?, validation_detail = ?"
        " WHERE name = ? AND updated_at = ?",
        (now, int(ok), detail, name, seen_at),
    )
    return _get(txn, name)
