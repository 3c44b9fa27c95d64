"""The console's S3 page (``/admin/s3/``): the connections with their last validation; add,
validate, make active, change and remove one, over the same ``S3Connections`` as the API.
Staff only (``proxy.web.pages.console``).

The secret key goes one way: typed into a password box, sealed by ``S3Connections``, and never
shown again. The change form leaves it empty, and empty means "keep the one saved". Like the
API, every form here travels in the body: a request with a query string is refused before
anything is read, so a key never lands in an address bar, a history or an access log by way of
these pages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.web.iweb import IRequest

from common.errors import ApiError, BadRequest
from proxy.catalog.sessions import Session
from proxy.remote.connections import CHANGEABLE, FIELDS
from proxy.web.pages.base import field_errors, page
from proxy.web.pages.console import ConsolePage

# The form's fields in the order they are shown; the secret is never among the echoed values.
SHOWN_FIELDS = ("name", "endpoint_url", "region", "bucket", "prefix", "access_key")
NO_QUERY = (
    "The S3 pages take their fields in the form's body, never in the address: a key in a URL "
    "ends up in histories and access logs. Nothing was read or saved."
)

UNREADABLE = (
    "{name}'s secret key cannot be opened with this proxy's key (the database came from "
    "another server, or the key changed): choose Change and type the secret key again."
)


def _unreadable(error: ApiError) -> bool:
    """The service's refusal of a connection whose sealed secret this proxy cannot open."""
    return error.status == 409 and error.extra.get("field") == "secret_key"


def refuse_query(request: IRequest) -> None:
    """Refuse any query string on an S3 page (none of them takes one).

    Twisted folds a form's body into ``request.args``, so the URI itself is looked at.
    """
    uri = request.uri.decode("utf-8", "replace")
    if urlsplit(uri).query:
        raise BadRequest(NO_QUERY)


def connection_input(fields: dict[str, str], *, creating: bool) -> dict[str, str]:
    """What a posted connection form asks ``S3Connections`` to save.

    Empty optional boxes are left out: when creating, the service's defaults apply (the
    endpoint is AWS, the prefix ``pyarchive``); when changing, an empty secret keeps the saved
    one. The endpoint may be emptied on purpose (back to AWS), so it is always sent.

    >>> connection_input({"name": "b", "prefix": "", "secret_key": "", "x": "1"}, creating=True)
    {'name': 'b'}
    >>> connection_input({"endpoint_url": "", "secret_key": "", "prefix": "p"}, creating=False)
    {'endpoint_url': '', 'prefix': 'p'}
    """
    allowed = FIELDS if creating else CHANGEABLE
    data: dict[str, str] = {}
    for name in sorted(allowed):
        value = fields.get(name)
        if value is None:
            continue
        if name != "secret_key":
            value = value.strip()
        if value == "" and not (name == "endpoint_url" and not creating):
            continue
        data[name] = value
    return data


def changed_fields(current: dict[str, Any], wanted: dict[str, str]) -> dict[str, str]:
    """Only the fields that differ from the saved connection (a new secret always counts):
    saving an unchanged form must not forget the connection's last validation.

    >>> changed_fields({"bucket": "a", "prefix": "p"}, {"bucket": "a", "prefix": "q"})
    {'prefix': 'q'}
    """
    return {
        name: value
        for name, value in wanted.items()
        if name == "secret_key" or current.get(name) != value
    }


class S3Pages(ConsolePage):
    @page("/admin/s3/", methods=["GET"])
    async def s3_page(self, request: IRequest) -> bytes:
        session = await self._staff(request)
        refuse_query(request)
        return await self._s3_list(request, session)

    async def _s3_list(
        self,
        request: IRequest,
        session: Session,
        *,
        done: str = "",
        problem: str = "",
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        status: int = 200,
    ) -> bytes:
        connections = await self._s3.list()
        return self._page(
            request, "console_s3.html", session, status, connections=connections, done=done,
            problem=problem, errors=errors or {}, values=values or {},
        )  # fmt: skip

    async def _s3_form(self, request: IRequest) -> tuple[Session, dict[str, str]]:
        """A staff member's posted S3 form, its query string refused before the body is read."""
        session = await self._staff(request)
        refuse_query(request)
        form = await self._form_of(request, session)
        return session, form.fields

    @page("/admin/s3/", methods=["POST"])
    async def create_s3(self, request: IRequest) -> bytes:
        session, fields = await self._s3_form(request)
        values = {name: fields.get(name, "").strip() for name in SHOWN_FIELDS}
        try:
            made = await self._s3.create(connection_input(fields, creating=True))
        except ApiError as error:
            errors = field_errors(error, "__all__")
            return await self._s3_list(
                request, session, errors=errors, values=values, status=error.status
            )
        return await self._s3_list(
            request, session,
            done=f"S3 connection {made['name']} added. Validate it, then make it active.",
        )  # fmt: skip

    @page("/admin/s3/<name>/validate", methods=["POST"])
    async def validate_s3(self, request: IRequest, name: str) -> bytes:
        session, _ = await self._s3_form(request)
        checked = await self._s3.validate(name)
        detail = checked["validation_detail"]
        if checked["validation_ok"]:
            return await self._s3_list(request, session, done=f"{name} is valid: {detail}")
        return await self._s3_list(request, session, problem=f"{name} failed validation: {detail}")

    @page("/admin/s3/<name>/activate", methods=["POST"])
    async def activate_s3(self, request: IRequest, name: str) -> bytes:
        session, _ = await self._s3_form(request)
        try:
            await self._s3.activate(name)
        except ApiError as error:
            problem = UNREADABLE.format(name=name) if _unreadable(error) else error.detail
            return await self._s3_list(request, session, problem=problem, status=error.status)
        return await self._s3_list(
            request, session, done=f"{name} is now the active connection: files are mirrored to it."
        )

    @page("/admin/s3/<name>/", methods=["GET"])
    async def edit_s3_page(self, request: IRequest, name: str) -> bytes:
        session = await self._staff(request)
        refuse_query(request)
        current = await self._s3.get(name)
        values = {key: str(current.get(key) or "") for key in SHOWN_FIELDS}
        return self._page(
            request, "console_s3_edit.html", session, connection=current, values=values,
            errors={},
        )  # fmt: skip

    @page("/admin/s3/<name>/", methods=["POST"])
    async def edit_s3(self, request: IRequest, name: str) -> bytes:
        session, fields = await self._s3_form(request)
        current = await self._s3.get(name)
        changes = changed_fields(current, connection_input(fields, creating=False))
        if not changes:
            return await self._s3_list(request, session, done=f"{name}: nothing was changed.")
        try:
            await self._s3.update(name, changes)
        except ApiError as error:
            values = {key: fields.get(key, "").strip() for key in SHOWN_FIELDS}
            values["name"] = name
            return self._page(
                request, "console_s3_edit.html", session, error.status, connection=current,
                values=values, errors=field_errors(error, "__all__"),
            )  # fmt: skip
        said = ", ".join("secret key" if key == "secret_key" else key for key in sorted(changes))
        return await self._s3_list(
            request, session, done=f"{name} changed ({said}). Validate it again."
        )

    @page("/admin/s3/<name>/delete", methods=["GET"])
    async def delete_s3_page(self, request: IRequest, name: str) -> bytes:
        session = await self._staff(request)
        refuse_query(request)
        current = await self._s3.get(name)
        return self._page(request, "console_s3_delete.html", session, connection=current)

    @page("/admin/s3/<name>/delete", methods=["POST"])
    async def delete_s3(self, request: IRequest, name: str) -> bytes:
        session, _ = await self._s3_form(request)
        try:
            await self._s3.delete(name)
        except ApiError as error:
            return await self._s3_list(request, session, problem=error.detail, status=error.status)
        return await self._s3_list(request, session, done=f"S3 connection {name} removed.")
