"""Browser sessions, kept server-side so that logging out, a password change or an account
being disabled ends them at once.

A session's cookie is ``<secret>.<mac>``: the secret is 256 random bits, and the MAC (HMAC
with a key of its own) lets a forged cookie be refused without touching the database. The
database holds only the secret's sha256, so a copy of the database opens no session. Each
session has its own CSRF token, which every state-changing request made with it must carry.
A session lasts ``lifetime`` seconds from its last use (extended at most once an hour).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from common.db import Database, Txn
from proxy.catalog.store import User

DEFAULT_LIFETIME = 14 * 86400.0
_EXTEND_EVERY = 3600.0


@dataclass(frozen=True)
class Session:
    id_hash: str
    user_id: int
    username: str
    is_staff: bool
    csrf_token: str
    token_version: int
    expires_at: float


def session_key(secret: str) -> bytes:
    """The MAC key of session cookies, derived from the proxy's secret for this use only."""
    return hmac.new(secret.encode(), b"pyarchive browser session", hashlib.sha256).digest()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _mac(key: bytes, secret: str) -> str:
    return hmac.new(key, secret.encode("ascii"), hashlib.sha256).hexdigest()[:32]


def cookie_secret(key: bytes, cookie: str | None) -> str | None:
    """The secret part of a well-formed, correctly signed cookie value, else None.

    >>> key = b"k" * 32
    >>> value = "abc." + _mac(key, "abc")
    >>> cookie_secret(key, value), cookie_secret(key, "abc.0000"), cookie_secret(key, None)
    ('abc', None, None)
    """
    if not cookie or cookie.count(".") != 1 or len(cookie) > 200:
        return None
    secret, mac = cookie.split(".")
    if not secret.isascii() or not hmac.compare_digest(mac, _mac(key, secret)):
        return None
    return secret


# ---------------------------------------------------------------- SQL


_COLUMNS = (
    "s.id_hash, s.user_id, u.username, u.is_staff, s.csrf_token, s.token_version, s.expires_at"
)


def _insert(txn: Txn, id_hash: str, user: User, csrf: str, now: float, expires: float) -> None:
    txn.execute(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, token_version, created_at,"
        " seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (id_hash, user.id, csrf, user.token_version, now, now, expires),
    )


def _find(txn: Txn, id_hash: str, now: float, lifetime: float) -> Session | None:
    """The live session of this hash whose token version is still the account's, of an
    account not disabled; staff rights as the account has them now."""
    row = txn.one(
        f"SELECT {_COLUMNS}, s.seen_at FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id_hash = ? AND s.expires_at > ? AND s.token_version = u.token_version"
        " AND u.is_active = 1",
        (id_hash, now),
    )
    if row is None:
        return None
    session = Session(row[0], int(row[1]), row[2], bool(row[3]), row[4], int(row[5]), row[6])
    if now - float(row[7]) > _EXTEND_EVERY:
        txn.execute(
            "UPDATE sessions SET seen_at = ?, expires_at = ? WHERE id_hash = ?",
            (now, now + lifetime, id_hash),
        )
    return session


def _delete(txn: Txn, id_hash: str) -> None:
    txn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))


def _keep_only(txn: Txn, user_id: int, id_hash: str, version: int) -> int:
    """End every other session of the user; the kept one moves to ``version``."""
    txn.execute(
        "UPDATE sessions SET token_version = ? WHERE id_hash = ? AND user_id = ?",
        (version, id_hash, user_id),
    )
    return txn.execute(
        "DELETE FROM sessions WHERE user_id = ? AND id_hash <> ?", (user_id, id_hash)
    )


def end_all(txn: Txn) -> int:
    """End every browser session (the token key they are signed with was replaced)."""
    return txn.execute("DELETE FROM sessions")


def _prune(txn: Txn, now: float) -> int:
    return txn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))


# ---------------------------------------------------------------- the service


class Sessions:
    def __init__(
        self, db: Database, clock: IReactorTime, key: bytes, lifetime: float = DEFAULT_LIFETIME
    ) -> None:
        self._db = db
        self._clock = clock
        self._key = key
        self.lifetime = lifetime

    async def open(self, user: User) -> tuple[str, Session]:
        """A new session for ``user``: its cookie value and the session."""
        secret = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._clock.seconds()
        expires = now + self.lifetime
        id_hash = _hash(secret)
        await self._db.run(_insert, id_hash, user, csrf, now, expires)
        session = Session(
            id_hash, user.id, user.username, user.is_staff, csrf, user.token_version, expires
        )
        return f"{secret}.{_mac(self._key, secret)}", session

    async def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None (forged, ended, expired or outdated)."""
        secret = cookie_secret(self._key, cookie)
        if secret is None:
            return None
        return await self._db.run(_find, _hash(secret), self._clock.seconds(), self.lifetime)

    async def close(self, session: Session) -> None:
        await self._db.run(_delete, session.id_hash)

    async def keep_only(self, session: Session, version: int) -> int:
        """End the user's other sessions (a password change); returns how many ended."""
        return await self._db.run(_keep_only, session.user_id, session.id_hash, version)

    async def prune(self) -> int:
        return await self._db.run(_prune, self._clock.seconds())
