"""What every page of the staff console (``/admin/``) stands on: the caller must be staff,
read from the database on every request (someone demoted loses the console at once); anyone
else gets a 403 page that says why.

Each console page is a module of its own beside this one (``admin`` for accounts, ...), a
``ConsolePage`` subclass that ``proxy.web.app.WebApp`` inherits; its templates extend
``console.html``, which draws the console's own navigation
(``proxy.web.render.CONSOLE_SECTIONS``).
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from common.errors import Forbidden
from proxy.api.forms import Form
from proxy.catalog.sessions import Session
from proxy.web.pages.base import PageBase

NOT_STAFF = (
    "This is the staff console, and your account is not staff. Ask the people who run this "
    "server if you need it."
)


class ConsolePage(PageBase):
    async def _staff(self, request: IRequest) -> Session:
        """The staff session looking at a console page (login page, or 403, for others)."""
        session = await self._viewer(request)
        if not session.is_staff:
            raise Forbidden(NOT_STAFF)
        return session

    async def _staff_form(self, request: IRequest) -> tuple[Session, Form]:
        """A console form: the staff session (403 for anyone else, before the form is read),
        and the fields once its CSRF token is checked; the session is looked up once."""
        session = await self._staff(request)
        return session, await self._form_of(request, session)
