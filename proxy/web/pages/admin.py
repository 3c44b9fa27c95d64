"""The console's accounts page (``/admin/users/``): the list with storage used, quota and last
login; create; make staff or not; disable or enable; set a quota, over the same ``UserAdmin``
as the API. Also who is failing to log in (per account and per address, whether they wait
now, a button to clear either's throttle) and the self-registration switch, over the same
``LoginThrottle`` and ``Registration`` as the API. Staff only (``proxy.web.pages.console``).

The two extra forms post to ``/admin/users/access/...``: two segments, so they can never be
mistaken for an account's own ``/admin/users/<username>/``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.web.iweb import IRequest

from common.config import parse_size
from common.errors import ApiError, BadRequest
from proxy.catalog.sessions import Session
from proxy.catalog.throttle import Recent
from proxy.web.pages.base import Redirect, field_errors, page
from proxy.web.pages.console import ConsolePage


def parse_quota(text: str) -> int | None:
    """A quota typed by staff: empty for none, else bytes or a size like ``50GiB``.

    >>> parse_quota(""), parse_quota("1000"), parse_quota("2GiB")
    (None, 1000, 2147483648)
    """
    text = text.strip()
    if not text:
        return None
    try:
        return parse_size(text)
    except ValueError:
        raise BadRequest(
            "quota must be bytes or a size like 50GiB; empty for none", field="quota"
        ) from None


def seconds_text(timestamp: float) -> str:
    """A time to the second (throttles wait seconds), as ``2027-01-15 08:00:05 UTC``.

    >>> seconds_text(1800000005.7)
    '2027-01-15 08:00:05 UTC'
    """
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def failure_rows(found: list[Recent]) -> list[dict[str, Any]]:
    return [
        {
            "key": recent.key,
            "count": recent.count,
            "last": seconds_text(recent.last),
            "until": None if recent.until is None else seconds_text(recent.until),
        }
        for recent in found
    ]


class AdminPages(ConsolePage):
    @page("/admin/", methods=["GET"])
    async def console(self, request: IRequest) -> bytes:
        await self._staff(request)
        raise Redirect("/admin/overview/")

    @page("/admin/users/", methods=["GET"])
    async def users_page(self, request: IRequest) -> bytes:
        session = await self._staff(request)
        return await self._users_page(request, session, {}, {}, "")

    async def _users_page(
        self,
        request: IRequest,
        session: Session,
        errors: dict[str, str],
        values: dict[str, str],
        done: str,
        status: int = 200,
    ) -> bytes:
        accounts = await self._users.list()
        by_account, by_address = await self._accounts.throttle.recent()
        registration = await self._accounts.registration.state()
        return self._page(
            request, "admin_users.html", session, status, accounts=accounts, errors=errors,
            values=values, done=done, failed_accounts=failure_rows(by_account),
            failed_addresses=failure_rows(by_address), registration=registration,
        )  # fmt: skip

    @page("/admin/users/", methods=["POST"])
    async def create_user(self, request: IRequest) -> bytes:
        session, form = await self._staff_form(request)
        fields = form.fields
        values = {k: fields.get(k, "") for k in ("username", "email", "quota")}
        try:
            made = await self._users.create(
                values["username"], fields.get("password", ""), values["email"] or None,
                fields.get("is_staff") == "on", parse_quota(values["quota"]),
            )  # fmt: skip
        except ApiError as error:
            errors = field_errors(error, "username")
            return await self._users_page(request, session, errors, values, "", error.status)
        return await self._users_page(request, session, {}, {}, f"Account {made.username} created.")

    @page("/admin/users/<username>/", methods=["POST"])
    async def change_user(self, request: IRequest, username: str) -> bytes:
        session, form = await self._staff_form(request)
        fields = form.fields
        changes: dict[str, Any] = {}
        action = fields.get("action", "")
        try:
            if action in ("make-staff", "revoke-staff"):
                changes["is_staff"] = action == "make-staff"
            elif action in ("disable", "enable"):
                changes["is_active"] = action == "enable"
            elif action == "quota":
                changes["quota"] = parse_quota(fields.get("quota", ""))
            else:
                raise BadRequest("Unknown action", field="action")
            changed = await self._users.change(username, changes)
        except ApiError as error:
            errors = {f"{username}": error.detail}
            return await self._users_page(request, session, errors, {}, "", error.status)
        return await self._users_page(
            request, session, {}, {}, f"Account {changed.username} updated."
        )

    @page("/admin/users/access/throttle/", methods=["POST"])
    async def clear_throttle(self, request: IRequest) -> bytes:
        session, form = await self._staff_form(request)
        kind, key = form.fields.get("kind", ""), form.fields.get("key", "")
        throttle = self._accounts.throttle
        if kind == "account":
            cleared = await throttle.clear_account(key, session.username)
        elif kind == "address":
            cleared = await throttle.clear_address(key, session.username)
        else:
            errors = {"throttle": "Choose an account or an address to clear"}
            return await self._users_page(request, session, errors, {}, "", 400)
        what = f"{kind} {key}" if key else f"the empty {kind} (as recorded)"
        done = f"Cleared {cleared} failed login{'' if cleared == 1 else 's'} of {what}."
        return await self._users_page(request, session, {}, {}, done)

    @page("/admin/users/access/registration/", methods=["POST"])
    async def switch_registration(self, request: IRequest) -> bytes:
        session, form = await self._staff_form(request)
        action = form.fields.get("action", "")
        if action not in ("open", "close"):
            errors = {"registration": "Choose to open or to close registration"}
            return await self._users_page(request, session, errors, {}, "", 400)
        await self._accounts.registration.switch(action == "open", session.username)
        done = "Registration is open." if action == "open" else "Registration is closed."
        return await self._users_page(request, session, {}, {}, done)
