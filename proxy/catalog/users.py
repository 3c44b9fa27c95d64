"""Staff administration of accounts: list, create, make staff or not, disable or enable, set a
quota, reset a password. What staff decide is in the database, which every request reads
(``Accounts.authenticate``, the session lookup), so it takes effect on the next request.

Rules: the last active staff account can be neither demoted nor disabled (someone must be able
to run the server); disabling an account, or resetting its password, signs it out everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from common.db import Database, Row, Txn
from common.errors import BadRequest, Conflict, NotFound
from common.passwords import check_password_strength, hash_password
from proxy.catalog import store
from proxy.catalog.accounts import validate_email, validate_username
from proxy.events import eventstore, kinds

_LAST_STAFF = "This is the last staff account: make someone else staff first"


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    email: str
    is_staff: bool
    is_active: bool
    quota: int | None
    used: int
    last_login: float | None
    created_at: float
    must_change_password: bool


_ACCOUNT = """
SELECT u.id, u.username, u.email, u.is_staff, u.is_active, u.quota,
  (SELECT COALESCE(SUM(b.size), 0) FROM versions v JOIN files f ON f.id = v.file_id
     JOIN blobs b ON b.id = v.blob_id WHERE f.owner_id = u.id),
  u.last_login, u.created_at, u.must_change_password
FROM users u
"""


def _account(row: Row) -> Account:
    return Account(
        int(row[0]), row[1], row[2], bool(row[3]), bool(row[4]),
        None if row[5] is None else int(row[5]), int(row[6]),
        None if row[7] is None else float(row[7]), float(row[8]), bool(row[9]),
    )  # fmt: skip


def accounts(txn: Txn) -> list[Account]:
    return [_account(row) for row in txn.all(f"{_ACCOUNT} ORDER BY u.username")]


def account(txn: Txn, username: str) -> Account | None:
    row = txn.one(f"{_ACCOUNT} WHERE u.username = ?", (username,))
    return None if row is None else _account(row)


def _other_active_staff(txn: Txn, user_id: int) -> int:
    return int(
        txn.scalar(
            "SELECT COUNT(*) FROM users WHERE is_staff = 1 AND is_active = 1 AND id <> ?",
            (user_id,),
        )
    )


def change_txn(txn: Txn, username: str, changes: dict[str, Any]) -> Account:
    """Apply ``changes`` (any of is_staff, is_active, quota) to one account, in one
    transaction; the last active staff account keeps its rights."""
    found = account(txn, username)
    if found is None:
        raise NotFound("No such user", field="username")
    if txn.dialect == "postgresql":  # two staff demoting each other at once: one waits
        txn.execute("SELECT id FROM users WHERE is_staff = 1 FOR UPDATE")
    losing = (changes.get("is_staff") is False and found.is_staff) or (
        changes.get("is_active") is False and found.is_active and found.is_staff
    )
    if losing and _other_active_staff(txn, found.id) == 0:
        raise Conflict(_LAST_STAFF, field="is_staff" if "is_staff" in changes else "is_active")
    if "is_staff" in changes:
        txn.execute(
            "UPDATE users SET is_staff = ? WHERE id = ?", (int(changes["is_staff"]), found.id)
        )
        if changes["is_staff"] is False:  # what staff were told is not for them any more
            eventstore.drop_kinds(txn, found.id, kinds.STAFF_ONLY)
    if "is_active" in changes:
        txn.execute(
            "UPDATE users SET is_active = ? WHERE id = ?", (int(changes["is_active"]), found.id)
        )
        if changes["is_active"] is False and found.is_active:
            store.bump_token_version(txn, found.id)
    if "quota" in changes:
        store.set_quota(txn, found.id, changes["quota"])
    changed = account(txn, username)
    assert changed is not None
    return changed


class UserAdmin:
    def __init__(self, db: Database, clock: IReactorTime) -> None:
        self._db = db
        self._clock = clock

    async def list(self) -> list[Account]:
        return await self._db.run(accounts)

    async def get(self, username: str) -> Account:
        found = await self._db.run(account, username)
        if found is None:
            raise NotFound("No such user", field="username")
        return found

    async def change(self, username: str, changes: dict[str, Any]) -> Account:
        quota = changes.get("quota")
        if quota is not None and (not isinstance(quota, int) or quota < 0):
            raise BadRequest("quota must be a number of bytes (0 or more), or null", field="quota")
        return await self._db.run(change_txn, username, changes)

    async def create(
        self,
        username: str,
        password: str,
        email: str | None,
        is_staff: bool = False,
        quota: int | None = None,
    ) -> Account:
        validate_username(username)
        check_password_strength(password, username)
        checked = validate_email(email)
        password_hash = await deferToThread(hash_password, password)
        user = await self._db.run(
            store.create_user, username, checked, password_hash, is_staff, self._clock.seconds()
        )
        if user is None:
            raise Conflict("A user with that username already exists", field="username")
        if quota is not None:
            await self._db.run(store.set_quota, user.id, quota)
        return await self.get(username)

    async def reset_password(self, username: str, password: str) -> Account:
        """A password staff chose: its owner must change it at the next login; the account
        is signed out everywhere."""
        found = await self.get(username)
        check_password_strength(password, username)
        password_hash = await deferToThread(hash_password, password)
        await self._db.run(store.set_password, found.id, password_hash, True)
        return await self.get(username)
