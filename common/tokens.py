"""Login tokens: JWTs signed with HS256 (PyJWT), checked against an injected clock."""

from __future__ import annotations

from dataclasses import dataclass

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


def verify_token(secret: str, token: str, *, now: float) -> TokenClaims:
    """Decode a token, raising Unauthorized if it is forged, malformed or expired at ``now``."""
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
    # Time is checked here against the injected clock, not by PyJWT against the wall clock,
    # so that tests can drive it with a task.Clock.
    if not isinstance(payload["exp"], int) or payload["exp"] <= now:
        raise Unauthorized("Token has expired")
    try:
        return TokenClaims(
            int(payload["sub"]),
            str(payload["username"]),
            bool(payload["staff"]),
            int(payload.get("ver", 0)),
        )
    except (KeyError, ValueError, TypeError):
        raise Unauthorized("Invalid token") from None


def token_from_header(value: str | None) -> str:
    """The token in ``Authorization: JWT <t>`` (or ``Bearer <t>``); Unauthorized otherwise."""
    if not value:
        raise Unauthorized("Authentication credentials were not provided")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in {"jwt", "bearer"} or not token.strip():
        raise Unauthorized("Authorization header must be 'JWT <token>' or 'Bearer <token>'")
    return token.strip()
