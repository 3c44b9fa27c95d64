"""Login tokens: JWTs signed with HS256 (PyJWT), checked against an injected clock.

A token's signature and claims are checked once: what a good one says is kept (the last
``VERIFIED_KEPT`` tokens, by the secret and the token's exact text), and only its expiry is
checked again on each later request. PyJWT's decode was a seventh of the proxy's CPU per
small-file upload, and a request's token is checked twice (by the body intake, then by the
route). A forged, malformed or unsigned token is never kept, so it is checked in full every
time; revocation (the account's token version) and the account's state are looked up by
the caller on every request, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jwt

from common.errors import Unauthorized

_ALGORITHM = "HS256"


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    username: str
    is_staff: bool
    # The account's token version when the token was issued: a password change bumps the
    # account's, and every older token is refused (``proxy.catalog.accounts``).
    version: int = 0


def issue_token(secret: str, claims: TokenClaims, *, now: float, lifetime: float) -> str:
    payload = {
        "sub": str(claims.user_id),
        "username": claims.username,
        "staff": claims.is_staff,
        "ver": claims.version,
        "iat": int(now),
        "exp": int(now + lifetime),
    }
    return jwt.encode(payload, secret, algorithm=_ALGORITHM)


# About 1 kB each (the token's text, its claims): a bounded few hundred kB in all.
VERIFIED_KEPT = 512


def verify_token(secret: str, token: str, *, now: float) -> TokenClaims:
    """Decode a token, raising Unauthorized if it is forged, malformed or expired at ``now``."""
    claims, expires = _verified(secret, token)
    # Time is checked here against the injected clock, not by PyJWT against the wall clock,
    # so that tests can drive it with a task.Clock; and on every use, kept or not.
    if expires <= now:
        raise Unauthorized("Token has expired")
    return claims


@lru_cache(maxsize=VERIFIED_KEPT)
def _verified(secret: str, token: str) -> tuple[TokenClaims, int]:
    """A signed token's claims and expiry; Unauthorized (not kept) for any other."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["sub", "exp", "iat"],
            },
        )
    except jwt.PyJWTError:
        raise Unauthorized("Invalid token") from None
    expires = payload["exp"]
    if not isinstance(expires, int):
        raise Unauthorized("Token has expired")
    try:
        claims = TokenClaims(
            int(payload["sub"]),
            str(payload["username"]),
            bool(payload["staff"]),
            int(payload.get("ver", 0)),
        )
    except (KeyError, ValueError, TypeError):
        raise Unauthorized("Invalid token") from None
    return claims, expires


def token_from_header(value: str | None) -> str:
    """The token in ``Authorization: JWT <t>`` (or ``Bearer <t>``); Unauthorized otherwise."""
    if not value:
        raise Unauthorized("Authentication credentials were not provided")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in {"jwt", "bearer"} or not token.strip():
        raise Unauthorized("Authorization header must be 'JWT <token>' or 'Bearer <token>'")
    return token.strip()
