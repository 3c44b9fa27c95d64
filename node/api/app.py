"""The node's HTTP routes: health, the signed internal API, and downloads by token.

Each route checks who may ask (a request the proxy signed with this node's key, or a download
token the proxy issued for this node), parses the request into values, calls ``Replicas`` and
shapes the answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from common.errors import ApiError, BadRequest, Forbidden, NotFound, PayloadTooLarge
from common.fileserve import serve_file
from common.signing import (
    SIGNATURE_HEADERS,
    NodeKeys,
    RequestVerifier,
    valid_replica_key,
    verify_download_token,
)
from common.web import header, respond
from common.weberrors import answer_errors_as_json
from node.api.inputs import expected_batch, expected_content
from node.api.receiving import CappedBody, body_limit
from node.mirror.loop import MirrorEngine
from node.mirror.wire import parse_sync
from node.replicas.store import Replicas, check_key, key_sha256

log = Logger()


def replica_page_args(args: dict[bytes, list[bytes]]) -> tuple[str | None, int]:
    """``after`` (a replica key) and ``limit`` of a replica listing; BadRequest otherwise.

    >>> replica_page_args({b"limit": [b"5"]})
    (None, 5)
    >>> replica_page_args({b"after": [b"x"]})
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: after must be a replica key
    """
    unknown = set(args) - {b"after", b"limit"}
    if unknown or any(len(values) != 1 for values in args.values()):
        raise BadRequest("only after and limit, each at most once")
    after = args.get(b"after", [b""])[0].decode("latin-1") or None
    if after is not None and not valid_replica_key(after):
        raise BadRequest("after must be a replica key", field="after")
    raw = args.get(b"limit", [b"1000"])[0]
    if not (raw.isdigit() and len(raw) <= 5 and 1 <= int(raw) <= MAX_REPLICA_PAGE):
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_REPLICA_PAGE}")
    return after, int(raw)


MAX_REPLICA_PAGE = 10_000


class NodeApp:
    app = Klein()

    def __init__(
        self,
        *,
        name: str,
        zone: str,
        version: str,
        replicas: Replicas,
        keys: NodeKeys,
        clock: IReactorTime,
        rsync_ready: Callable[[], bool],
        mirror: MirrorEngine | None = None,
    ) -> None:
        self._name = name
        self._zone = zone
        self._version = version
        self._replicas = replicas
        self._keys = keys
        self._verifier = RequestVerifier(keys)
        self._clock = clock
        self._rsync_ready = rsync_ready
        self._mirror = mirror

    def refusal(
        self, method: bytes, path: bytes, headers: Headers, length: int | None
    ) -> ApiError | None:
        """What to answer a request with as soon as its headers are in, before its body is
        read (``node.api.receiving``): None for a public path or a request that may go on."""
        if not path.startswith(b"/internal/"):
            return None
        signature = {}
        for name in SIGNATURE_HEADERS:
            values = headers.getRawHeaders(name)
            signature[name] = values[0] if values else None
        try:
            self._verifier.check_headers(signature, now=self._clock.seconds())
        except Forbidden as refused:
            return refused
        limit = body_limit(path)
        if length is not None and length > limit:
            return PayloadTooLarge(f"request body is larger than {limit} bytes")
        return None

    def _signed_body(self, request: IRequest) -> bytes:
        """The request's body, if the proxy signed the request for this node; Forbidden
        otherwise. The MAC is checked against the body's sha256 before the body is read."""
        content = request.content
        if not isinstance(content, CappedBody):  # a site other than NodeSite (tests' StubTreq)
            content = CappedBody(body_limit(request.path))
            content.write(request.content.read() if request.content is not None else b"")
            content.seek(0)
        if content.overflowed:
            raise PayloadTooLarge(f"request body is larger than {content.limit} bytes")
        signature = {name: header(request, name) for name in SIGNATURE_HEADERS}
        self._verifier.verify(
            request.method.decode("ascii"),
            request.uri.decode("latin-1"),
            content.sha256(),
            signature,
            now=self._clock.seconds(),
        )
        return content.read()

    # -- errors

    # -- health

    @app.route("/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        usage = await self._replicas.usage()
        body = {
            "name": self._name,
            "zone": self._zone,
            "status": "ok" if self._rsync_ready() else "degraded",
            "free_bytes": usage.free_bytes,
            "total_bytes": usage.total_bytes,
            "files": usage.files,
            "version": self._version,
        }
        return respond(request, 200, body)

    # -- the internal API (signed by the proxy)

    @app.route("/internal/replicas", methods=["GET"])
    async def list_replicas(self, request: IRequest) -> bytes:
        """A page of the confirmed replicas (``?after=KEY``, ``?limit=`` 1 to 10,000, default
        1,000), with ``next``: the ``after`` of the next page, null after the last."""
        self._signed_body(request)
        after, limit = replica_page_args(request.args or {})
        held, following = await self._replicas.page(after, limit)
        body = {"replicas": [{"key": r.key, "size": r.size} for r in held], "next": following}
        return respond(request, 200, body)

    @app.route("/internal/replicas/<key>/confirm", methods=["POST"])
    async def confirm(self, request: IRequest, key: str) -> bytes:
        body = self._signed_body(request)
        check_key(key)
        expected = expected_content(body, with_md5=True)
        replica = await self._replicas.confirm(key, expected)
        return respond(request, 200, {"key": replica.key, "size": replica.size})

    @app.route("/internal/replicas/confirm-batch", methods=["POST"])
    async def confirm_batch(self, request: IRequest) -> bytes:
        """Many ``confirm``s in one call; each key is answered on its own (confirmed, or the
        status and detail its own ``confirm`` would have answered)."""
        wanted = expected_batch(self._signed_body(request))
        outcomes = await self._replicas.confirm_batch(wanted)
        results = [
            {"key": key, "confirmed": False, "status": outcome.status, "detail": outcome.detail}
            if isinstance(outcome, ApiError)
            else {"key": key, "confirmed": True, "size": outcome.size}
            for (key, _), outcome in zip(wanted, outcomes, strict=True)
        ]
        return respond(request, 200, {"results": results})

    @app.route("/internal/replicas/<key>/verify", methods=["POST"])
    async def verify(self, request: IRequest, key: str) -> bytes:
        body = self._signed_body(request)
        check_key(key)
        expected = expected_content(body, with_md5=False)
        await self._replicas.verify(key, expected)
        return respond(request, 200, {"ok": True})

    @app.route("/internal/replicas/<key>", methods=["DELETE"])
    async def delete(self, request: IRequest, key: str) -> bytes:
        self._signed_body(request)
        await self._replicas.delete(key)
        request.setResponseCode(204)
        return b""

    @app.route("/internal/mirror/sync", methods=["POST"])
    async def mirror_sync(self, request: IRequest) -> bytes:
        """The proxy's want-list for the S3 mirror in, this node's progress on it out."""
        body = self._signed_body(request)
        if self._mirror is None:
            raise NotFound("This node does not mirror to S3")
        want = parse_sync(body, self._keys.transport)
        return respond(request, 200, await self._mirror.sync(want))

    # -- downloads (by a token the proxy issued)

    @app.route("/download/<token>", methods=["GET", "HEAD"])
    async def download(self, request: IRequest, token: str) -> Any:
        grant = verify_download_token(self._keys, token, now=self._clock.seconds())
        path = self._replicas.store.path(grant.replica)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise NotFound("This node does not hold that file (any more)") from None
        assert isinstance(request, Request)
        try:
            sent = serve_file(
                request,
                str(path),
                size=info.st_size,
                etag=f'"{key_sha256(grant.replica)}"',
                last_modified=info.st_mtime,
                filename=grant.filename,
                content_type=grant.content_type or "application/octet-stream",
            )
        except FileNotFoundError:  # deleted since the stat; nothing is written yet
            raise NotFound("This node does not hold that file (any more)") from None
        return await sent


answer_errors_as_json(NodeApp.app, log)
