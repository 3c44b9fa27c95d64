"""What the proxy and each node trust each other with, all derived from the cluster secret.

Only the proxy holds the cluster secret. Each node holds its own **node key**,
``HMAC(cluster_secret, "node:" + name)`` (``node_key``; ``pyarchive-proxy nodes key NAME``
prints it), and derives from it the keys for each use with its name in the derivation
(``NodeKeys``). A node therefore can neither sign a request another node would accept, nor
mint a download token for another node, nor log in to another node's rsync daemon, nor open
the S3 settings sealed for another node.

- **Signed requests** (proxy -> node internal API): headers ``X-PyArchive-Node`` (the node the
  request is for), ``X-PyArchive-Timestamp``, ``X-PyArchive-Nonce`` and
  ``X-PyArchive-Signature``, the last an HMAC-SHA256 with the receiving node's request key over
  method, path (with query), node, timestamp, nonce and the body's sha256. A node refuses a
  request for another node, one whose timestamp is outside a short window, and one whose
  nonce it has seen (a replay); it remembers a nonce until its request's timestamp leaves the
  window, after which the request is refused as stale anyway.
- **Download tokens** (proxy -> client -> node): a JWT naming the replica, the node, the
  filename to present and an expiry, signed with that node's download key.
- **The rsync password** each node's rsync daemon accepts from the proxy.
- **The transport key** that seals the S3 secret key the proxy sends a node.

Each use has its own key, so a value made for one use can never be passed off as another.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
from dataclasses import dataclass, field

import jwt

from common.errors import Forbidden

NODE = "X-PyArchive-Node"
TIMESTAMP = "X-PyArchive-Timestamp"
NONCE = "X-PyArchive-Nonce"
SIGNATURE = "X-PyArchive-Signature"
SIGNATURE_HEADERS = (NODE, TIMESTAMP, NONCE, SIGNATURE)
DEFAULT_WINDOW = 30.0
REPLICA_KEY = re.compile(r"[0-9]{1,19}-[0-9a-f]{64}")
NODE_KEY = re.compile(r"[0-9a-f]{64}")


def node_key(cluster_secret: str, node: str) -> str:
    """The one secret node ``node`` is given: 64 hex digits derived from the cluster secret.

    >>> node_key("s", "n1") == node_key("s", "n1") != node_key("s", "n2")
    True
    """
    return hmac.new(cluster_secret.encode(), f"node:{node}".encode(), hashlib.sha256).hexdigest()


def valid_node_key(key: str) -> bool:
    return NODE_KEY.fullmatch(key) is not None


@dataclass(frozen=True)
class NodeKeys:
    """Every key one node uses, derived from its node key (the proxy derives the same ones
    from the cluster secret). The keys never show in a repr."""

    node: str
    request: bytes = field(repr=False)
    download: bytes = field(repr=False)
    transport: str = field(repr=False)  # seals the S3 settings sent to this node
    rsync_password: str = field(repr=False)

    @classmethod
    def from_node_key(cls, node: str, key: str) -> NodeKeys:
        def derived(purpose: str) -> bytes:
            return hmac.new(key.encode(), f"{purpose}:{node}".encode(), hashlib.sha256).digest()

        return cls(
            node=node,
            request=derived("request"),
            download=derived("download"),
            transport=derived("s3 transport").hex(),
            rsync_password=derived("rsync").hex()[:32],
        )

    @classmethod
    def for_node(cls, cluster_secret: str, node: str) -> NodeKeys:
        """The keys the proxy (which holds the cluster secret) uses with node ``node``."""
        return cls.from_node_key(node, node_key(cluster_secret, node))


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
    key: bytes, method: str, path: str, node: str, timestamp: str, nonce: str, body_sha256: str
) -> str:
    message = "\n".join([method.upper(), path, node, timestamp, nonce, body_sha256])
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign_request(
    keys: NodeKeys, method: str, path: str, body: bytes, *, now: float
) -> dict[str, str]:
    """The headers that make a request to node ``keys.node``'s internal API trusted."""
    timestamp, nonce = str(int(now)), secrets.token_hex(16)
    body_sha256 = hashlib.sha256(body).hexdigest()
    return {
        NODE: keys.node,
        TIMESTAMP: timestamp,
        NONCE: nonce,
        SIGNATURE: _request_mac(
            keys.request, method, path, keys.node, timestamp, nonce, body_sha256
        ),
    }


@dataclass(frozen=True)
class SignatureHeaders:
    """The signature headers of a request, checked for presence, form, node and freshness."""

    timestamp: str
    nonce: str
    signature: str


class RequestVerifier:
    """Checks signed requests on a node, remembering recent nonces to refuse replays.

    ``check_headers`` can run as soon as the headers have arrived (before the body is read);
    ``verify`` checks them again and then the MAC over the body.
    """

    def __init__(self, keys: NodeKeys, *, window: float = DEFAULT_WINDOW) -> None:
        self._keys = keys
        self._window = window
        self._seen: set[str] = set()
        self._expiry: list[tuple[int, str]] = []  # (timestamp, nonce), a heap

    def check_headers(self, headers: dict[str, str | None], *, now: float) -> SignatureHeaders:
        """Raise Forbidden unless the headers are present, well formed, for this node, fresh
        and not seen before. Nothing new is remembered: the MAC is not checked yet."""
        node, timestamp, nonce, signature = (headers.get(h) for h in SIGNATURE_HEADERS)
        if not node or not timestamp or not nonce or not signature:
            raise Forbidden("Request is not signed")
        if not timestamp.isdigit() or len(timestamp) > 12 or not 0 < len(nonce) <= 64:
            raise Forbidden("Request signature is malformed")
        if len(signature) != 64:
            raise Forbidden("Request signature is malformed")
        if node != self._keys.node:
            raise Forbidden("Request is for another node")
        if abs(now - int(timestamp)) > self._window:
            raise Forbidden("Request signature has expired")
        self._forget_stale(now)
        if nonce in self._seen:
            raise Forbidden("Request was already used")
        return SignatureHeaders(timestamp, nonce, signature)

    def verify(
        self,
        method: str,
        path: str,
        body_sha256: str,
        headers: dict[str, str | None],
        *,
        now: float,
    ) -> None:
        """Raise Forbidden unless the request is signed for this node, fresh and not seen
        before. ``body_sha256`` is the hex sha256 of the body as received."""
        signed = self.check_headers(headers, now=now)
        expected = _request_mac(
            self._keys.request, method, path, self._keys.node, signed.timestamp, signed.nonce,
            body_sha256,
        )  # fmt: skip
        if not hmac.compare_digest(expected, signed.signature):
            raise Forbidden("Request signature does not match")
        self._seen.add(signed.nonce)
        heapq.heappush(self._expiry, (int(signed.timestamp), signed.nonce))

    def remembered(self) -> int:
        """How many nonces are remembered now (for tests: they are forgotten in time)."""
        return len(self._seen)

    def _forget_stale(self, now: float) -> None:
        # A nonce whose request's timestamp has left the window can go: a replay of it would
        # be refused as stale before its nonce is looked at.
        while self._expiry and now - self._expiry[0][0] > self._window:
            _, nonce = heapq.heappop(self._expiry)
            self._seen.discard(nonce)


# ---------------------------------------------------------------- download tokens


@dataclass(frozen=True)
class DownloadGrant:
    replica: str  # the replica key on the node
    node: str  # the node's name
    filename: str  # presented in Content-Disposition
    expires: int  # unix time
    content_type: str = ""  # the version's, if its uploader said one (else octet-stream)


def issue_download_token(keys: NodeKeys, grant: DownloadGrant) -> str:
    """A token for ``grant``, signed with the download key of the node it names."""
    if grant.node != keys.node:
        raise ValueError(f"a grant for node {grant.node!r} signed with {keys.node!r}'s key")
    payload: dict[str, object] = {
        "r": grant.replica, "n": grant.node, "f": grant.filename, "exp": grant.expires,
    }  # fmt: skip
    if grant.content_type:
        payload["t"] = grant.content_type
    return jwt.encode(payload, keys.download, algorithm="HS256")


def verify_download_token(keys: NodeKeys, token: str, *, now: float) -> DownloadGrant:
    """The grant in a token, if it is genuine, unexpired and for this node; Forbidden otherwise."""
    try:
        payload = jwt.decode(
            token,
            keys.download,
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
    if grant.node != keys.node:
        raise Forbidden("Download token is for another node")
    if not valid_replica_key(grant.replica):
        raise Forbidden("Invalid download token")
    return grant
