"""Who is calling, for pages and for the API: a token (``Authorization``) or a browser
session (a cookie), and the CSRF check every state-changing request with a cookie passes.

A cookie is sent by the browser on its own, so a request authenticated by one must also
prove it came from one of our pages: its CSRF token (the session's, in a hidden form field
``csrf_token`` or the header ``X-CSRF-Token``). A token in ``Authorization`` is never sent
on its own, so it needs no CSRF token. Forms shown before a session exists (log in,
register) use a double-submit cookie instead.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from twisted.web.http import Request
from twisted.web.iweb import IRequest

from common.errors import Forbidden, Unauthorized
from common.tokens import TokenClaims
from common.web import header
from proxy.catalog.accounts import Accounts
from proxy.catalog.sessions import Session, Sessions
from proxy.catalog.store import User

SESSION_COOKIE = b"pyarchive_session"
ANON_CSRF_COOKIE = b"pyarchive_csrf"  # for the forms of visitors without a session
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {b"GET", b"HEAD", b"OPTIONS"}
_FOUND = "_pyarchive_session"  # where a request keeps the session it was found to have


def cookie(request: IRequest, name: bytes) -> str | None:
    value = request.getCookie(name)
    if not isinstance(value, bytes):
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def csrf_matches(given: str | None, expected: str) -> bool:
    """Constant-time equality of a CSRF token with the expected one (never empty)."""
    return bool(given) and bool(expected) and hmac.compare_digest(given or "", expected)


class WebAuth:
    def __init__(self, accounts: Accounts, sessions: Sessions, *, secure: bool = False) -> None:
        self.accounts = accounts
        self.sessions = sessions
        self._always_secure = secure  # the public URL is https: cookies are Secure

    async def session(self, request: IRequest) -> Session | None:
        """The live session of the request's cookie (looked up once per request)."""
        if hasattr(request, _FOUND):
            found: Session | None = getattr(request, _FOUND)
            return found
        found = await self.sessions.find(cookie(request, SESSION_COOKIE))
        setattr(request, _FOUND, found)
        return found

    async def caller(self, request: IRequest) -> TokenClaims:
        """The API's caller: a token, else a session whose unsafe requests carry
        ``X-CSRF-Token``; 401 without either, 403 for a session request without CSRF."""
        authorization = header(request, "authorization")
        if authorization is not None:
            return await self.accounts.authenticate(authorization)
        session = await self.session(request)
        if session is None:
            raise Unauthorized("Authentication credentials were not provided")
        if request.method not in SAFE_METHODS:
            self.check_csrf(session, header(request, CSRF_HEADER))
        return claims_of(session)

    @staticmethod
    def check_csrf(session: Session, given: str | None) -> None:
        if not csrf_matches(given, session.csrf_token):
            raise Forbidden("CSRF token missing or wrong; reload the page and try again")

    def is_secure(self, request: IRequest) -> bool:
        return self._always_secure or request.isSecure()

    async def start_session(self, request: IRequest, user: User) -> Session:
        value, session = await self.sessions.open(user)
        _set_cookie(
            request, SESSION_COOKIE, value.encode("ascii"), path=b"/", httpOnly=True,
            secure=self.is_secure(request), sameSite=b"lax",
            max_age=str(int(self.sessions.lifetime)).encode("ascii"),
        )  # fmt: skip
        setattr(request, _FOUND, session)
        return session

    async def end_session(self, request: IRequest) -> None:
        session = await self.session(request)
        if session is not None:
            await self.sessions.close(session)
        _set_cookie(
            request, SESSION_COOKIE, b"", path=b"/", httpOnly=True, secure=self.is_secure(request),
            sameSite=b"lax", max_age=b"0",
        )  # fmt: skip
        setattr(request, _FOUND, None)

    def anonymous_csrf(self, request: IRequest) -> str:
        """The double-submit token of a visitor's forms: the cookie's, else a new one."""
        token = cookie(request, ANON_CSRF_COOKIE)
        if not token or len(token) > 100:
            token = secrets.token_urlsafe(24)
            _set_cookie(
                request, ANON_CSRF_COOKIE, token.encode("ascii"), path=b"/", httpOnly=True,
                secure=self.is_secure(request), sameSite=b"strict",
            )  # fmt: skip
        return token


def _set_cookie(request: IRequest, name: bytes, value: bytes, **attributes: Any) -> None:
    """``addCookie`` with the attributes Twisted's Request takes (IRequest does not say them)."""
    assert isinstance(request, Request)
    request.addCookie(name, value, **attributes)


def claims_of(session: Session) -> TokenClaims:
    return TokenClaims(session.user_id, session.username, session.is_staff, session.token_version)
