"""What the proxy reads and says at the edge of the web: CORS, and the public address behind a
TLS-terminating reverse proxy.

- **CORS** (``cors_origins``): a browser page on another origin (a web app built elsewhere, a
  tus-js-client or Uppy page) may call the API. Preflights are answered at once; answers to
  an allowed origin name it and expose the headers tus clients read (``Location``,
  ``Upload-Offset``...). Tokens travel in ``Authorization``, never in cookies, so credentials
  are not allowed. Off by default: no origin but the proxy's own.
- **Forwarded addresses** (``trusted_proxies``): the scheme and host of the URLs the proxy
  writes (an upload's ``url``, a tus ``Location``) come from ``Forwarded`` or
  ``X-Forwarded-Proto``/``-Host`` only when the connection comes from a configured proxy;
  anyone else could name any host. ``public_url``, when set, wins over both.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from twisted.web.iweb import IRequest

from common.web import header

EXPOSED = (
    "Location, Upload-Offset, Upload-Length, Upload-Expires, Upload-Metadata, Upload-Concat, "
    "Upload-Defer-Length, Tus-Version, Tus-Resumable, Tus-Extension, Tus-Max-Size, "
    "Tus-Checksum-Algorithm, Retry-After"
)
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Offset, "
    "Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Checksum, "
    "X-HTTP-Method-Override, X-Requested-With, Content-Range"
)
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
PREFLIGHT_MAX_AGE = "86400"

HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_FORWARDED_PAIR = re.compile(r'\s*(\w+)\s*=\s*("[^"]*"|[^;,\s]*)\s*')


@dataclass(frozen=True)
class Cors:
    """Which origins may call the API from a browser: ``*`` or exact origins."""

    origins: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str) -> Cors:
        """``"https://a.example, https://b.example"``, ``"*"``, or ``""`` (none).

        >>> sorted(Cors.parse(" https://a.example/ ,http://b:8080").origins)
        ['http://b:8080', 'https://a.example']
        """
        return cls(frozenset(o.strip().rstrip("/") for o in text.split(",") if o.strip()))

    def allows(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    def apply(self, request: IRequest) -> bool:
        """Set the CORS headers an answer to ``request`` needs; True if it is a preflight
        this policy answers itself (the caller then ends it with 204)."""
        origin = header(request, "origin")
        if not origin or not self.allows(origin):
            return False
        request.setHeader("Access-Control-Allow-Origin", origin)
        request.setHeader("Vary", "Origin")
        request.setHeader("Access-Control-Expose-Headers", EXPOSED)
        preflight = request.method == b"OPTIONS" and (
            header(request, "access-control-request-method") is not None
        )
        if preflight:
            request.setHeader("Access-Control-Allow-Methods", ALLOWED_METHODS)
            request.setHeader("Access-Control-Allow-Headers", ALLOWED_HEADERS)
            request.setHeader("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
        return preflight


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8, ::1"``: the reverse proxies whose forwarded headers count.

    >>> [str(n) for n in parse_networks("127.0.0.1, 10.0.0.0/8")]
    ['127.0.0.1/32', '10.0.0.0/8']
    """
    return tuple(
        ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()
    )


def client_address(request: IRequest) -> str:
    """The address of the connection's peer ('' for a peer without one, e.g. a UNIX socket)."""
    return str(getattr(request.getClientAddress(), "host", ""))


def _from_trusted(request: IRequest, trusted: tuple[Network, ...]) -> bool:
    if not trusted:
        return False
    try:
        peer = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return any(peer in network for network in trusted)


def forwarded(request: IRequest, trusted: tuple[Network, ...]) -> tuple[str | None, str | None]:
    """The scheme and host a trusted reverse proxy says the client used (None: not said).

    ``Forwarded`` (RFC 7239, its first element: the proxy nearest the client) is read before
    ``X-Forwarded-Proto``/``X-Forwarded-Host``; a value of the wrong form is ignored.
    """
    if not _from_trusted(request, trusted):
        return None, None
    proto = host = None
    if (value := header(request, "forwarded")) is not None:
        first = value.split(",", 1)[0]
        pairs = {m[1].lower(): m[2].strip('"') for m in _FORWARDED_PAIR.finditer(first)}
        proto, host = pairs.get("proto"), pairs.get("host")
    proto = proto or (header(request, "x-forwarded-proto") or "").split(",")[0].strip() or None
    host = host or (header(request, "x-forwarded-host") or "").split(",")[0].strip() or None
    if proto is not None and proto.lower() not in {"http", "https"}:
        proto = None
    if host is not None and not HOST.fullmatch(host):
        host = None
    return (proto.lower() if proto else None), host
