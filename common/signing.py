"""What the proxy and the nodes trust each other with, all derived from one cluster secret.

- **Signed requests** (proxy -> node internal API): headers ``X-PyArchive-Timestamp``,
  ``X-PyArchive-Nonce`` and ``X-PyArchive-Signature``, the last an HMAC-SHA256 over method,
  path (with query), timestamp, nonce and the body's sha256. A node refuses a request whose
  timestamp is outside a short window or whose nonce it has seen within it (a replay).
- **Download tokens** (proxy -> client -> node): a JWT naming the replica, the node, the
  filename to present and an expiry, signed with a key derived from the cluster secret.
- **The rsync password** nodes' rsync daemons accept from the proxy.

Each use has its own key derived from the secret, so a value made for one use can never be
passed off as another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from common.errors import Forbidden

TIMESTAMP = "X-PyArchive-Timestamp"
NONCE = "X-PyArchive-Nonce"
SIGNATURE = "X-PyArchive-Signature"
DEFAULT_WINDOW = 30.0
REPLICA_KEY = re.compile(r"[0-9]{1,19}-[0-9a-f]{64}")


def derive_key(cluster_secret: str, purpose: str) -> bytes:
    """A key for one purpose (``request``, ``download``, ``rsync``) from the cluster secret."""
    return hmac.new(cluster_secret.encode(), purpose.encode(), hashlib.sha256).digest()


def rsync_password(cluster_secret: str) -> str:
    return derive_key(cluster_secret, "rsync").hex()[:32]


def replica_key(blob_id: int, sha256: str) -> str:
    """A replica's name on a node: the blob row's id and its content's sha256.

    >>> replica_key(7, "ab" * 32)[:6]
    '7-abab'
    """
    return f"{blob_id}-{sha256}"


def valid_replica_key(key: str) -> bool:
    return REPLICA_KEY.fullmatch(key) is not None


# ---------------------------------------------------------------- signed requests


def _request_mac(
    key: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes
) -> str:
    message = "\n".join([method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()])
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign_request(
    cluster_secret: str, method: str, path: str, body: bytes, *, now: float
) -> dict[str, str]:
    """The headers that make a request to a node's internal API trusted."""
    timestamp, nonce = str(int(now)), secrets.token_hex(16)
    key = derive_key(cluster_secret, "request")
    return {
        TIMESTAMP: timestamp,
        NONCE: nonce,
        SIGNATURE: _request_mac(key, method, path, timestamp, nonce, body),
    }


class RequestVerifier:
    """Checks signed requests on a node, remembering recent nonces to refuse replays."""

    def __init__(self, cluster_secret: str, *, window: float = DEFAULT_WINDOW) -> None:
        self._key = derive_key(cluster_secret, "request")
        self._window = window
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str | None],
        *,
        now: float,
    ) -> None:
        """Raise Forbidden unless the request is signed, fresh and not seen before."""
        timestamp, nonce, signature = (headers.get(h) for h in (TIMESTAMP, NONCE, SIGNATURE))
        if not timestamp or not nonce or not signature:
            raise Forbidden("Request is not signed")
        if not timestamp.isdigit() or len(nonce) > 64 or len(timestamp) > 12:
            raise Forbidden("Request signature is malformed")
        if abs(now - int(timestamp)) > self._window:
            raise Forbidden("Request signature has expired")
        expected = _request_mac(self._key, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected, signature):
            raise Forbidden("Request signature does not match")
        self._forget_before(now - self._window)
        if nonce in self._seen:
            raise Forbidden("Request was already used")
        self._seen[nonce] = now

    def _forget_before(self, cutoff: float) -> None:
        while self._seen:
            nonce, seen_at = next(iter(self._seen.items()))
            if seen_at >= cutoff:
                break
            del self._seen[nonce]


# ---------------------------------------------------------------- download tokens


@dataclass(frozen=True)
class DownloadGrant:
    replica: str  # the replica key on the node
    node: str  # the node's name
    filename: str  # presented in Content-Disposition
    expires: int  # unix time
    content_type: str = ""  # the version's, if its uploader said one (else octet-stream)


def issue_download_token(cluster_secret: str, grant: DownloadGrant) -> str:
    payload: dict[str, object] = {
        "r": grant.replica, "n": grant.node, "f": grant.filename, "exp": grant.expires,
    }  # fmt: skip
    if grant.content_type:
        payload["t"] = grant.content_type
    return jwt.encode(payload, derive_key(cluster_secret, "download"), algorithm="HS256")


def verify_download_token(
    cluster_secret: str, token: str, *, node: str, now: float
) -> DownloadGrant:
    """The grant in a token, if it is genuine, unexpired and for this node; Forbidden otherwise."""
    try:
        payload = jwt.decode(
            token,
            derive_key(cluster_secret, "download"),
            algorithms=["HS256"],
            options={"verify_exp": False, "require": ["r", "n", "f", "exp"]},
        )
    except jwt.PyJWTError:
        raise Forbidden("Invalid download token") from None
    grant = DownloadGrant(
        str(payload["r"]), str(payload["n"]), str(payload["f"]), int(payload["exp"]),
        str(payload.get("t", "")),
    )  # fmt: skip
    if grant.expires <= now:
        raise Forbidden("Download token has expired")
    if grant.node != node:
        raise Forbidden("Download token is for another node")
    if not valid_replica_key(grant.replica):
        raise Forbidden("Invalid download token")
    return grant
