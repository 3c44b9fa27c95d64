"""Register, log in, log out, and the profile (email, password, picture, storage used)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from common.errors import ApiError, BadRequest
from proxy.api.edge import client_address
from proxy.catalog import store
from proxy.catalog.sessions import Session
from proxy.web.avatars import reencode
from proxy.web.pages.base import FILE_FORM_LIMIT, PageBase, Redirect, field_errors, local_path, page


class AccountPages(PageBase):
    @page("/register/", methods=["GET"])
    async def register_page(self, request: IRequest) -> bytes:
        if await self._auth.session(request) is not None:
            raise Redirect("/archives/")
        closed = not await self._accounts.registration.is_open()
        return self._page(request, "register.html", None, errors={}, values={}, closed=closed)

    @page("/register/", methods=["POST"])
    async def register(self, request: IRequest) -> bytes:
        form = await self._visitor_form(request)
        fields = form.fields
        values = {"username": fields.get("username", ""), "email": fields.get("email", "")}
        try:
            if fields.get("password", "") != fields.get("password_again", ""):
                raise BadRequest("The two passwords are not the same", field="password_again")
            user = await self._accounts.register(
                values["username"], fields.get("password", ""), values["email"] or None
            )
        except ApiError as error:
            errors = field_errors(error, "username")
            closed = not await self._accounts.registration.is_open()
            return self._page(
                request, "register.html", None, error.status, errors=errors, values=values,
                closed=closed,
            )  # fmt: skip
        await self._auth.start_session(request, user)
        raise Redirect("/archives/")

    @page("/login/", methods=["GET"])
    async def login_page(self, request: IRequest) -> bytes:
        next_path = local_path(_arg(request, b"next"))
        if await self._auth.session(request) is not None:
            raise Redirect(next_path)
        return self._page(request, "login.html", None, errors={}, values={}, next_path=next_path)

    @page("/login/", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        form = await self._visitor_form(request)
        fields = form.fields
        next_path = local_path(fields.get("next"))
        username = fields.get("username", "")
        try:
            user = await self._accounts.check_login(
                username, fields.get("password", ""), client_address(request)
            )
        except ApiError as error:
            status = error.status if error.status in (403, 429) else 400
            errors = {"__all__": error.detail}
            return self._page(
                request, "login.html", None, status, errors=errors,
                values={"username": username}, next_path=next_path,
            )  # fmt: skip
        await self._auth.start_session(request, user)
        state = await self._db.run(store.account_state, user.id)
        if state is not None and state.must_change_password:
            raise Redirect("/profile/")  # a password staff set: the owner chooses one first
        raise Redirect(next_path)

    @page("/logout/", methods=["POST"])
    async def logout(self, request: IRequest) -> bytes:
        await self._session_form(request)
        await self._auth.end_session(request)
        raise Redirect("/login/")

    @page("/profile/", methods=["GET"])
    async def profile(self, request: IRequest) -> bytes:
        session = await self._viewer(request)
        return await self._profile(request, session, {}, "")

    async def _profile(
        self,
        request: IRequest,
        session: Session,
        errors: dict[str, str],
        done: str,
        status: int = 200,
    ) -> bytes:
        user = await self._accounts.user(session.user_id)
        used = await self._db.run(store.storage_used, session.user_id)
        has_avatar = await self._db.run(store.avatar, session.user_id) is not None
        state = await self._db.run(store.account_state, session.user_id)
        quota = await self._db.run(store.user_quota, session.user_id)
        return self._page(
            request, "profile.html", session, status, account=user, used=used, quota=quota,
            has_avatar=has_avatar, errors=errors, done=done,
            must_change=state is not None and state.must_change_password,
        )  # fmt: skip

    @page("/profile/email", methods=["POST"])
    async def change_email(self, request: IRequest) -> bytes:
        session, form = await self._session_form(request)
        try:
            await self._accounts.set_email(session.user_id, form.fields.get("email"))
        except ApiError as error:
            return await self._profile(request, session, {"email": error.detail}, "", 400)
        return await self._profile(request, session, {}, "Your email address was saved.")

    @page("/profile/password", methods=["POST"])
    async def change_password(self, request: IRequest) -> bytes:
        session, form = await self._session_form(request)
        fields = form.fields
        try:
            if fields.get("new_password", "") != fields.get("new_password_again", ""):
                raise BadRequest(
                    "The two new passwords are not the same", field="new_password_again"
                )
            user = await self._accounts.change_password(
                session.user_id, fields.get("current_password", ""), fields.get("new_password", "")
            )
        except ApiError as error:
            errors = field_errors(error, "new_password")
            if errors.keys() == {"password"}:
                errors = {"new_password": errors["password"]}
            return await self._profile(request, session, errors, "", 400)
        ended = await self._auth.sessions.keep_only(session, user.token_version)
        others = "session" if ended == 1 else "sessions"
        done = (
            f"Your password was changed. {ended} other {others} and every API token issued "
            "before were signed out."
        )
        return await self._profile(request, session, {}, done)

    @page("/profile/picture", methods=["POST"])
    async def change_picture(self, request: IRequest) -> bytes:
        session, form = await self._session_form(request, FILE_FORM_LIMIT)
        if form.fields.get("remove"):
            await self._db.run(store.set_avatar, session.user_id, None)
            return await self._profile(request, session, {}, "Your picture was removed.")
        if form.file is None:
            return await self._profile(
                request, session, {"file": "Choose a picture first"}, "", 400
            )
        try:
            png = await self._in_thread(reencode, form.file.spool, form.file.size)
        except ApiError as error:
            return await self._profile(request, session, {"file": error.detail}, "", error.status)
        finally:
            form.file.spool.close()
        await self._db.run(store.set_avatar, session.user_id, png)
        return await self._profile(request, session, {}, "Your picture was saved.")

    @page("/profile/picture.png", methods=["GET"])
    async def picture(self, request: IRequest) -> bytes:
        session = await self._viewer(request)
        png = await self._db.run(store.avatar, session.user_id)
        if png is None:
            raise Redirect("/static/default-avatar.svg")
        request.setHeader("Content-Type", "image/png")
        request.setHeader("X-Content-Type-Options", "nosniff")
        request.setHeader("Content-Security-Policy", "default-src 'none'; sandbox")
        request.setHeader("Cache-Control", "private, no-cache")
        return png


def _arg(request: IRequest, name: bytes) -> str | None:
    values = (request.args or {}).get(name)
    return values[0].decode("utf-8", "replace") if values else None
