"""The remote tier's shared vocabulary: where a bucket is, how its secrets travel and rest.

- ``S3Settings`` is one S3 connection in the clear (endpoint, region, bucket, prefix, keys).
  It only ever lives in memory; ``repr`` hides the secret.
- ``SecretBox`` encrypts a secret with a key derived from a configured secret (Fernet:
  AES-128-CBC + HMAC-SHA256 from ``cryptography``, so tampering is detected, not decrypted).
  The proxy stores S3 secret keys sealed with a box made from its ``secret_key``; it sends the
  active connection to each node sealed with a box made from that node's transport key
  (``common.signing.NodeKeys``), inside a signed request, so the secret is neither in plain
  text on the wire nor on any disk, and no node can open what was sent to another.
- Object keys are content-addressed: ``<prefix>/<sha256>``; metadata snapshots live under
  ``<prefix>/metadata/``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part, except the last one
MAX_PARTS = 10_000  # S3's largest part count
_PREFIX = re.compile(r"[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class SecretError(ValueError):
    """A sealed secret that this key cannot open (wrong key, or tampered with)."""


@dataclass(frozen=True)
class S3Settings:
    """One S3-compatible bucket and the credentials to reach it."""

    bucket: str
    region: str
    access_key: str
    secret_key: str = field(repr=False)
    endpoint_url: str = ""  # empty: AWS's own endpoint for the region
    prefix: str = "pyarchive"
    name: str = ""

    def object_key(self, sha256: str) -> str:
        return object_key(self.prefix, sha256)

    @property
    def metadata_prefix(self) -> str:
        return f"{self.prefix}/metadata/"

    def public(self) -> dict[str, Any]:
        """Everything but the secret, for logs and answers."""
        return {
            "name": self.name,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "access_key": self.access_key,
            "secret_key_hint": secret_hint(self.secret_key),
        }


def object_key(prefix: str, sha256: str) -> str:
    return f"{prefix}/{sha256}"


def valid_prefix(prefix: str) -> bool:
    """A key prefix of plain segments: no empty, ``.`` or ``..`` segment, at most 200 chars."""
    return (
        bool(_PREFIX.fullmatch(prefix))
        and len(prefix) <= 200
        and not any(part in {".", ".."} for part in prefix.split("/"))
    )


def valid_bucket(bucket: str) -> bool:
    return bool(_BUCKET.fullmatch(bucket)) and ".." not in bucket


def secret_hint(secret: str) -> str:
    """What may be shown of a secret: its last 4 characters, nothing for a short one."""
    return "…" + secret[-4:] if len(secret) >= 12 else "…"


def make_client(settings: S3Settings, *, max_pool_connections: int = 10, **config: Any) -> Any:
    """A boto3 S3 client for ``settings``. Blocking: use it from a thread pool only.

    Path-style addressing works with every S3-compatible server (MinIO, Ceph, moto) and with
    AWS; retries use botocore's standard mode (a few tries with backoff on throttling).
    """
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        "retries": {"max_attempts": 3, "mode": "standard"},
        "max_pool_connections": max_pool_connections,
        "connect_timeout": 10,
        "read_timeout": 60,
        # Checksums only when an operation asks for one (we ask for SHA256 on every part);
        # keeps S3-compatible servers that predate flexible checksums working.
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    options.update(config)
    global _session
    # One session for the process: its loader reads S3's service model (about 13 MiB of
    # Python objects) once. A session per client read it again for every job run and every
    # mirror pass, and the memory did not all come back. A session is not thread-safe, so
    # clients are made under a lock; the clients themselves are.
    with _SESSION_LOCK:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            config=Config(**options),
        )


_SESSION_LOCK = threading.Lock()
_session: Any = None


def _fernet(secret: str, purpose: str) -> Fernet:
    key = hmac.new(secret.encode(), f"pyarchive {purpose}".encode(), hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


class SecretBox:
    """Seals and opens short secrets with a key derived from ``secret`` for ``purpose``.

    ``fallbacks`` are older secrets that still open what they sealed (a key being rotated,
    or the one an older release used); only ``secret`` seals, and ``reseal`` moves a value
    sealed under a fallback to it.

    >>> old, new = SecretBox("k1", "p"), SecretBox("k2", "p", fallbacks=["k1"])
    >>> sealed = old.seal("v")
    >>> new.open(sealed), new.is_current(sealed), new.is_current(new.reseal(sealed))
    ('v', False, True)
    """

    def __init__(self, secret: str, purpose: str, fallbacks: Sequence[str] = ()) -> None:
        self._fernet = _fernet(secret, purpose)
        self._any = MultiFernet([self._fernet, *(_fernet(s, purpose) for s in fallbacks)])

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._any.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, ValueError, UnicodeError):
            raise SecretError("sealed secret cannot be opened with this key") from None

    def is_current(self, sealed: str) -> bool:
        """Whether ``sealed`` opens with the sealing key itself (no fallback needed)."""
        try:
            self._fernet.decrypt(sealed.encode("ascii"))
        except (InvalidToken, ValueError, UnicodeError):
            return False
        return True

    def reseal(self, sealed: str) -> str:
        """``sealed`` sealed again with the sealing key; SecretError if no key opens it."""
        try:
            return self._any.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError, UnicodeError):
            raise SecretError("sealed secret cannot be opened with this key") from None


def transport_box(transport_key: str) -> SecretBox:
    """The box for S3 secrets travelling from the proxy to one node, whose transport key
    (``common.signing.NodeKeys.transport``) it is."""
    return SecretBox(transport_key, "s3 transport")


def settings_to_wire(settings: S3Settings, transport_key: str) -> dict[str, Any]:
    """The active connection as the proxy sends it to a node: the secret sealed for it."""
    return {
        "name": settings.name,
        "endpoint_url": settings.endpoint_url,
        "region": settings.region,
        "bucket": settings.bucket,
        "prefix": settings.prefix,
        "access_key": settings.access_key,
        "secret_key_sealed": transport_box(transport_key).seal(settings.secret_key),
    }


def settings_from_wire(body: dict[str, Any], transport_key: str) -> S3Settings:
    """The inverse of ``settings_to_wire``; ValueError on anything malformed."""
    try:
        text = {
            k: body[k] for k in ("name", "endpoint_url", "region", "bucket", "prefix", "access_key")
        }
        sealed = body["secret_key_sealed"]
    except (KeyError, TypeError):
        raise ValueError("connection needs name, endpoint_url, region, bucket, prefix, "
                         "access_key and secret_key_sealed") from None  # fmt: skip
    if not all(isinstance(v, str) for v in (*text.values(), sealed)):
        raise ValueError("connection fields must be strings")
    if not valid_prefix(text["prefix"]):
        raise ValueError("connection prefix is not a valid key prefix")
    secret = transport_box(transport_key).open(sealed)
    return S3Settings(secret_key=secret, **text)
