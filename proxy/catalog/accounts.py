"""Accounts: registration, login tokens, and who is calling."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from common.db import Database
from common.errors import BadRequest, Conflict, Forbidden, Unauthorized
from common.passwords import check_password_strength, hash_password, verify_password
from common.tokens import TokenClaims, issue_token, token_from_header, verify_token
from proxy.catalog import store
from proxy.catalog.settings import Registration
from proxy.catalog.throttle import LoginThrottle

if TYPE_CHECKING:
    from proxy.ops.systemlog import SystemLog

_USERNAME = re.compile(r"[A-Za-z0-9_.@+-]{1,150}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
_BAD_LOGIN = "Unable to log in with provided credentials."
_REVOKED = "This token was signed out (a new password, or signed out everywhere); log in again"
REGISTRATION_CLOSED = "Registration is closed here: ask the people who run this server"
_DISABLED = "This account is disabled; ask the people who run this server"


def validate_username(username: object) -> str:
    if not isinstance(username, str) or not username:
        raise BadRequest("username is required", field="username")
    if not _USERNAME.fullmatch(username):
        raise BadRequest(
            "username may hold 1 to 150 letters, digits and the characters _ . @ + -",
            field="username",
        )
    return username


def validate_email(email: str | None) -> str:
    """An optional address: '' for none, else something@somewhere."""
    email = (email or "").strip()
    if email and not _EMAIL.fullmatch(email):
        raise BadRequest("email is not a valid address", field="email")
    return email


class Accounts:
    def __init__(
        self,
        *,
        db: Database,
        clock: IReactorTime,
        secret: str,
        token_lifetime: float,
        syslog: SystemLog | None = None,
        allow_registration: bool = True,
    ) -> None:
        self._db = db
        self._clock = clock
        self._secret = secret
        self._lifetime = token_lifetime
        self._syslog = syslog
        self.throttle = LoginThrottle(db, clock, syslog)
        # The config's allow_registration until staff switch it (then the stored value).
        self.registration = Registration(db, syslog, default=allow_registration)

    async def register(self, username: str, password: str, email: str | None) -> store.User:
        """A new account. The request's types are checked by the contract; these are the
        rules a type cannot say (a password's strength, an address's form)."""
        if not await self.registration.is_open():
            raise Forbidden(REGISTRATION_CLOSED)
        validate_username(username)
        check_password_strength(password, username)
        email = validate_email(email)
        password_hash = await deferToThread(hash_password, password)
        user = await self._db.run(
            store.create_user, username, email, password_hash, False, self._clock.seconds()
        )
        if user is None:
            raise Conflict("A user with that username already exists", field="username")
        return user

    async def login(self, username: str, password: str, address: str = "") -> str:
        """A token for the account, or 400; refused with 429 while its throttle runs."""
        user = await self.check_login(username, password, address)
        return self.token_for(user)

    async def check_login(self, username: str, password: str, address: str = "") -> store.User:
        """The account these credentials open (400 if none, 429 while throttled)."""
        name = username[:150]
        await self.throttle.check(name, address)
        user = await self._db.run(store.user_by_name, username) if username else None
        # An unknown user costs one argon2 verification too, and gets the same answer.
        stored = user.password_hash if user is not None else None
        if not await deferToThread(verify_password, stored, password) or user is None:
            await self.throttle.failed(name, address)
            if self._syslog is not None:  # the name tried, never the password
                await self._syslog.record(
                    "warn", "auth.login_failed", f"failed login as {name!r}",
                    username=name, known_user=user is not None, address=address,
                )  # fmt: skip
            raise BadRequest(_BAD_LOGIN)
        await self.throttle.succeeded(name)
        state = await self._db.run(store.account_state, user.id)
        if state is None or not state.is_active:
            raise Forbidden(_DISABLED)
        await self._db.run(store.note_login, user.id, self._clock.seconds())
        return user

    def token_for(self, user: store.User) -> str:
        claims = TokenClaims(user.id, user.username, user.is_staff, user.token_version)
        return issue_token(self._secret, claims, now=self._clock.seconds(), lifetime=self._lifetime)

    async def authenticate(self, authorization: str | None) -> TokenClaims:
        """The caller of a token, which must be signed, unexpired and of the account's
        current token version (a password change signs every older token out)."""
        token = token_from_header(authorization)
        claims = verify_token(self._secret, token, now=self._clock.seconds())
        state = await self._db.run(store.account_state, claims.user_id)
        if state is None or state.token_version != claims.version:
            raise Unauthorized(_REVOKED)
        if not state.is_active:
            raise Unauthorized(_DISABLED)
        # Staff rights as the database has them now, not as they were when it was issued.
        return TokenClaims(claims.user_id, state.username, state.is_staff, state.token_version)

    async def user(self, user_id: int) -> store.User:
        found = await self._db.run(store.user_by_id, user_id)
        if found is None:
            raise Unauthorized("No such account")
        return found

    async def change_password(self, user_id: int, current: str, new: str) -> store.User:
        """A new password (the current one must be right); every token and session issued
        before it is signed out. Returns the account with its new token version."""
        user = await self.user(user_id)
        if not await deferToThread(verify_password, user.password_hash, current):
            raise BadRequest("The current password is not right", field="current_password")
        check_password_strength(new, user.username)
        password_hash = await deferToThread(hash_password, new)
        version = await self._db.run(store.set_password, user_id, password_hash)
        if self._syslog is not None:
            await self._syslog.record(
                "info", "auth.password_changed", f"{user.username} changed their password",
                username=user.username,
            )  # fmt: skip
        return store.User(user.id, user.username, user.email, password_hash, user.is_staff, version)

    def now(self) -> float:
        return self._clock.seconds()

    async def sign_out_everywhere(self, user_id: int) -> int:
        """End every session and token of the account; returns the new token version."""
        return await self._db.run(store.bump_token_version, user_id)

    async def set_email(self, user_id: int, email: str | None) -> str:
        checked = validate_email(email)
        await self._db.run(store.set_email, user_id, checked)
        return checked

    async def set_staff(self, username: str, password: str) -> tuple[store.User, bool]:
        validate_username(username)
        check_password_strength(password, username)
        password_hash = await deferToThread(hash_password, password)
        return await self._db.run(
            store.set_staff_user, username, password_hash, self._clock.seconds()
        )
