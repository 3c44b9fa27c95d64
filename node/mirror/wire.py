"""The body of ``POST /internal/mirror/sync`` parsed into values (BadRequest otherwise).

The proxy sends the node's whole want-list each time::

    {"connection": <common.s3.settings_to_wire(...)> | null,
     "mirror_interval": float | null,
     "mirror":  [{"key", "size", "md5", "sha256"}],
     "restore": [{"key", "size", "md5", "sha256",
                  "parts": [{"index", "offset", "size", "sha256"}]}]}

Every key must be a replica key whose sha256 is the entry's; restore parts must be numbered
from 1 and cover the file exactly, in order. The sealed secret is opened with this node's
transport key here and kept in the returned ``S3Settings`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from common.errors import BadRequest
from common.hex32 import is_hex32
from common.s3 import MAX_PARTS, S3Settings, SecretError, settings_from_wire
from common.signing import valid_replica_key
from node.api.inputs import json_object
from node.mirror.state import Blob, RestorePart
from node.replicas.store import key_sha256

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RestoreWant:
    blob: Blob
    parts: tuple[RestorePart, ...]


@dataclass(frozen=True)
class Cursor:
    """Where a want-list stands in the proxy's changes for this node: the delta from
    ``since`` (None: the whole list) to ``to``, against the journal ``state``."""

    state: str | None
    since: int | None
    to: int


@dataclass(frozen=True)
class WantList:
    connection: S3Settings | None
    interval: float | None
    mirror: tuple[Blob, ...]
    restore: tuple[RestoreWant, ...]
    cursor: Cursor | None = None
    withdraw_mirror: tuple[str, ...] = ()
    withdraw_restore: tuple[str, ...] = ()
    reported: tuple[str, int] | None = None  # the node's run and change the proxy recorded

    @property
    def complete(self) -> bool:
        """Whether this is the whole want-list (not a delta)."""
        return self.cursor is None or self.cursor.since is None


def parse_sync(body: bytes, transport_key: str) -> WantList:
    """The want-list in a sync body (its S3 secret sealed with this node's ``transport_key``);
    BadRequest naming the field that is wrong."""
    data = json_object(body)
    unknown = set(data) - {
        "connection",
        "mirror_interval",
        "mirror",
        "restore",
        "cursor",
        "withdraw",
        "reported",
    }
    if unknown:
        raise BadRequest(f"Unknown fields: {', '.join(sorted(unknown))}")
    connection = None
    if data.get("connection") is not None:
        if not isinstance(data["connection"], dict):
            raise BadRequest("connection must be an object or null", field="connection")
        try:
            connection = settings_from_wire(data["connection"], transport_key)
        except SecretError:
            raise BadRequest(
                "connection's secret cannot be opened with this node's key",
                field="connection",
            ) from None
        except ValueError as exc:
            raise BadRequest(f"connection: {exc}", field="connection") from None
    interval = data.get("mirror_interval")
    if interval is not None and (
        not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0
    ):
        raise BadRequest(
            "mirror_interval must be a number of seconds above 0 or null", field="mirror_interval"
        )
    mirror = tuple(_blob(item, "mirror") for item in _list(data, "mirror"))
    restore = tuple(_restore(item) for item in _list(data, "restore"))
    named = {"mirror": [b.key for b in mirror], "restore": [r.blob.key for r in restore]}
    for name, keys in named.items():
        if len(set(keys)) != len(keys):
            raise BadRequest(f"{name} names a key twice", field=name)
    cursor = _cursor(data.get("cursor"))
    withdraw = _withdraw(data.get("withdraw"), cursor)
    return WantList(
        connection,
        None if interval is None else float(interval),
        mirror,
        restore,
        cursor,
        withdraw.get("mirror", ()),
        withdraw.get("restore", ()),
        _reported(data.get("reported")),
    )


def _reported(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    boot = value.get("boot") if isinstance(value, dict) else None
    at = value.get("at") if isinstance(value, dict) else None
    if not (isinstance(boot, str) and 0 < len(boot) <= 64 and _count(at)) or len(value) != 2:
        raise BadRequest("reported must be an object of boot and at, or null", field="reported")
    return boot, at


def _cursor(value: Any) -> Cursor | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"state", "since", "to"}:
        raise BadRequest("cursor must be an object of state, since and to", field="cursor")
    state, since, to = value.get("state"), value.get("since"), value.get("to")
    if state is not None and not (isinstance(state, str) and 0 < len(state) <= 64):
        raise BadRequest("cursor.state must be a journal id or null", field="cursor")
    if not _count(to) or (since is not None and not (_count(since) and since <= to)):
        raise BadRequest(
            "cursor.to must be a whole number, and cursor.since null or one up to it",
            field="cursor",
        )
    if since is not None and state is None:
        raise BadRequest("a delta (cursor.since) needs the journal's state", field="cursor")
    return Cursor(state, since, to)


def _withdraw(value: Any, cursor: Cursor | None) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if cursor is None or cursor.since is None:
        raise BadRequest("withdraw comes only with a delta (cursor.since)", field="withdraw")
    if not isinstance(value, dict) or set(value) - {"mirror", "restore"}:
        raise BadRequest("withdraw must be an object of mirror and restore", field="withdraw")
    found: dict[str, tuple[str, ...]] = {}
    for name, keys in value.items():
        if not isinstance(keys, list) or not all(
            isinstance(k, str) and valid_replica_key(k) for k in keys
        ):
            raise BadRequest(f"withdraw.{name} must be a list of replica keys", field="withdraw")
        found[name] = tuple(keys)
    return found


def _list(data: dict[str, Any], name: str) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be a list", field=name)
    return value


def _blob(item: Any, where: str) -> Blob:
    if not isinstance(item, dict):
        raise BadRequest(f"each entry of {where} must be an object", field=where)
    key, size, md5, sha256 = (item.get(k) for k in ("key", "size", "md5", "sha256"))
    if not isinstance(key, str) or not valid_replica_key(key):
        raise BadRequest(f"{where}: {key!r} is not a replica key", field=where)
    if not _count(size):
        raise BadRequest(f"{where}: {key}: size must be a whole number of bytes", field=where)
    if not is_hex32(md5):
        raise BadRequest(f"{where}: {key}: md5 must be 32 lowercase hex digits", field=where)
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise BadRequest(f"{where}: {key}: sha256 must be 64 lowercase hex digits", field=where)
    if key_sha256(key) != sha256:
        raise BadRequest(f"{where}: {key}: sha256 is not the one in the key", field=where)
    return Blob(key, size, md5, sha256)


def _restore(item: Any) -> RestoreWant:
    blob = _blob(item, "restore")
    parts = item.get("parts")
    if not isinstance(parts, list) or not 1 <= len(parts) <= MAX_PARTS:
        raise BadRequest(
            f"restore: {blob.key}: parts must be a list of 1 to {MAX_PARTS}", field="restore"
        )
    parsed: list[RestorePart] = []
    offset = 0
    for number, part in enumerate(parts, start=1):
        if not isinstance(part, dict):
            raise BadRequest(f"restore: {blob.key}: each part must be an object", field="restore")
        index, start, size, sha256 = (part.get(k) for k in ("index", "offset", "size", "sha256"))
        if index != number or start != offset or not _count(size):
            raise BadRequest(
                f"restore: {blob.key}: part {number} must have index {number}, offset {offset} "
                "and a size, so that the parts cover the file in order",
                field="restore",
            )
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise BadRequest(
                f"restore: {blob.key}: part {number}'s sha256 must be 64 lowercase hex digits",
                field="restore",
            )
        parsed.append(RestorePart(number, offset, size, sha256))
        offset += size
    if offset != blob.size:
        raise BadRequest(
            f"restore: {blob.key}: the parts add up to {offset} bytes, not {blob.size}",
            field="restore",
        )
    return RestoreWant(blob, tuple(parsed))


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
