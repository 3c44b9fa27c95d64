"""Accounts for staff (list, create, change, reset a password) and the caller's own."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from common.tokens import TokenClaims
from common.web import respond
from proxy.api import types as t
from proxy.api.contract import operation, set_fields
from proxy.api.docs_parts import error
from proxy.api.routes.base import RouteBase
from proxy.api.views import isotime
from proxy.catalog.users import Account

_NO_USER = error("No such user.")


def account_json(account: Account) -> dict[str, Any]:
    return {
        "username": account.username,
        "email": account.email,
        "is_staff": account.is_staff,
        "is_active": account.is_active,
        "quota": account.quota,
        "used": account.used,
        "last_login": isotime(account.last_login),
        "created_at": isotime(account.created_at),
        "must_change_password": account.must_change_password,
    }


class UserRoutes(RouteBase):
    @operation(
        method="GET",
        path="/api/users/",
        operation_id="users_list",
        tag="users",
        summary="Every account, with storage used, quota and last login",
        access="staff",
        answer=t.UserAccounts,
        answer_description="The accounts, by username.",
    )
    async def list_users(self, request: IRequest, caller: TokenClaims) -> bytes:
        found = await self._users.list()
        return respond(request, 200, {"results": [account_json(a) for a in found]})

    @operation(
        method="POST",
        path="/api/users/",
        operation_id="users_create",
        tag="users",
        summary="Create an account (also when self-registration is off)",
        access="staff",
        status=201,
        answer=t.UserAccount,
        answer_description="Created.",
        body=t.NewUserAccount,
        body_media=("application/json",),
        responses={
            400: error("A field is missing, malformed, or the password is weak."),
            409: error("The username is taken."),
        },
    )
    async def create_user(
        self, request: IRequest, caller: TokenClaims, body: t.NewUserAccount
    ) -> bytes:
        made = await self._users.create(
            body.username, body.password, body.email or None, body.is_staff, body.quota
        )
        return respond(request, 201, account_json(made))

    @operation(
        method="GET",
        path="/api/users/{username}/",
        operation_id="users_get",
        tag="users",
        summary="One account",
        access="staff",
        answer=t.UserAccount,
        answer_description="The account.",
        responses={404: _NO_USER},
    )
    async def get_user(self, request: IRequest, caller: TokenClaims, username: str) -> bytes:
        return respond(request, 200, account_json(await self._users.get(username)))

    @operation(
        method="PATCH",
        path="/api/users/{username}/",
        operation_id="users_update",
        tag="users",
        summary="Make staff or not, disable or enable, set the quota",
        description="Takes effect on the account's next request. Disabling signs it out "
        "everywhere. The last active staff account can be neither demoted nor disabled.",
        access="staff",
        answer=t.UserAccount,
        answer_description="The account as it now is.",
        body=t.UserChange,
        body_media=("application/json",),
        responses={
            400: error("A field is malformed."),
            404: _NO_USER,
            409: error("That would leave no active staff account."),
        },
    )
    async def update_user(
        self, request: IRequest, caller: TokenClaims, username: str, body: t.UserChange
    ) -> bytes:
        changed = await self._users.change(username, set_fields(body))
        return respond(request, 200, account_json(changed))

    @operation(
        method="POST",
        path="/api/users/{username}/password",
        operation_id="users_reset_password",
        tag="users",
        summary="Set a password its owner must change at the next login",
        description="The account is signed out everywhere.",
        access="staff",
        answer=t.UserAccount,
        answer_description="The account.",
        body=t.PasswordReset,
        body_media=("application/json",),
        responses={400: error("The password is weak."), 404: _NO_USER},
    )
    async def reset_password(
        self, request: IRequest, caller: TokenClaims, username: str, body: t.PasswordReset
    ) -> bytes:
        return respond(
            request, 200, account_json(await self._users.reset_password(username, body.password))
        )

    @operation(
        method="GET",
        path="/api/me",
        operation_id="me",
        tag="auth",
        summary="Your own account: storage used and quota",
        answer=t.Me,
        answer_description="You.",
    )
    async def me(self, request: IRequest, caller: TokenClaims) -> bytes:
        mine = await self._users.get(caller.username)
        return respond(
            request,
            200,
            {
                "username": mine.username,
                "email": mine.email,
                "is_staff": mine.is_staff,
                "used": mine.used,
                "quota": mine.quota,
                "must_change_password": mine.must_change_password,
            },
        )

    @operation(
        method="POST",
        path="/api/me/sign-out-everywhere",
        operation_id="me_sign_out",
        tag="auth",
        summary="End every session and token of your account, this one too",
        answer=t.SignedOut,
        answer_description="Signed out everywhere.",
    )
    async def sign_out_everywhere(self, request: IRequest, caller: TokenClaims) -> bytes:
        await self._accounts.sign_out_everywhere(caller.user_id)
        return respond(request, 200, {"detail": "Every session and token was signed out"})
