"""The console's accounts page (``/admin/users/``): the list with storage used, quota and last
login; create; make staff or not; disable or enable; set a quota, over the same ``UserAdmin``
as the API. Staff only (``proxy.web.pages.console``).
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from common.config import parse_size
from common.errors import ApiError, BadRequest
from proxy.catalog.sessions import Session
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
        return self._page(
            request, "admin_users.html", session, status, accounts=accounts, errors=errors,
            values=values, done=done,
        )  # fmt: skip

    @page("/admin/users/", methods=["POST"])
    async def create_user(self, request: IRequest) -> bytes:
        await self._staff(request)
        session, form = await self._session_form(request)
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
        await self._staff(request)
        session, form = await self._session_form(request)
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
