"""Accounts: registration, login tokens, and who is calling."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from common.db import Database
from common.errors import BadRequest, Conflict
from common.passwords import check_password_strength, hash_password, verify_password
from common.tokens import TokenClaims, issue_token, token_from_header, verify_token
from proxy.catalog import store

if TYPE_CHECKING:
    from proxy.ops.systemlog import SystemLog

_USERNAME = re.compile(r"[A-Za-z0-9_.@+-]{1,150}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
_BAD_LOGIN = "Unable to log in with provided credentials."


def validate_username(username: object) -> str:
    if not isinstance(username, str) or not username:
        raise BadRequest("username is required", field="username")
    if not _USERNAME.fullmatch(username):
        raise BadRequest(
            "username may hold 1 to 150 letters, digits and the characters _ . @ + -",
            field="username",
        )
    return username


class Accounts:
    def __init__(
        self,
        *,
        db: Database,
        clock: IReactorTime,
        secret: str,
        token_lifetime: float,
        syslog: SystemLog | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._secret = secret
        self._lifetime = token_lifetime
        self._syslog = syslog

    async def register(self, username: str, password: str, email: str | None) -> store.User:
        """A new account. The request's types are checked by the contract; these are the
        rules a type cannot say (a password's strength, an address's form)."""
        validate_username(username)
        check_password_strength(password, username)
        email = email or ""
        if email and not _EMAIL.fullmatch(email):
            raise BadRequest("email is not a valid address", field="email")
        password_hash = await deferToThread(hash_password, password)
        user = await self._db.run(
            store.create_user, username, email, password_hash, False, self._clock.seconds()
        )
        if user is None:
            raise Conflict("A user with that username already exists", field="username")
        return user

    async def login(self, username: str, password: str) -> str:
        user = await self._db.run(store.user_by_name, username) if username else None
        # An unknown user costs one argon2 verification too, and gets the same answer.
        stored = user.password_hash if user is not None else None
        if not await deferToThread(verify_password, stored, password) or user is None:
            if self._syslog is not None:  # the name tried, never the password
                await self._syslog.record(
                    "warn", "auth.login_failed", f"failed login as {username[:150]!r}",
                    username=username[:150], known_user=user is not None,
                )  # fmt: skip
            raise BadRequest(_BAD_LOGIN)
        claims = TokenClaims(user.id, user.username, user.is_staff)
        return issue_token(self._secret, claims, now=self._clock.seconds(), lifetime=self._lifetime)

    def authenticate(self, authorization: str | None) -> TokenClaims:
        token = token_from_header(authorization)
        return verify_token(self._secret, token, now=self._clock.seconds())

    async def set_staff(self, username: str, password: str) -> tuple[store.User, bool]:
        validate_username(username)
        check_password_strength(password, username)
        password_hash = await deferToThread(hash_password, password)
        return await self._db.run(
            store.set_staff_user, username, password_hash, self._clock.seconds()
        )
