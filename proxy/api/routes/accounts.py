"""Accounts and login tokens."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from common.web import respond
from proxy.api import types as t
from proxy.api.contract import operation
from proxy.api.docs_parts import error, throttled
from proxy.api.edge import client_address
from proxy.api.inputs import refuse_query
from proxy.api.routes.base import RouteBase


class AccountRoutes(RouteBase):
    async def _credentials(self, request: IRequest, allowed: set[str]) -> dict[str, Any]:
        """The body's fields only: a password in a URL would end up in logs. Refused before
        the body is read, let alone the password checked or stored."""
        refuse_query(request, "the username and password")
        return await self._fields(request, allowed)

    @operation(
        method="POST",
        path="/api/auth/register",
        operation_id="register",
        tag="auth",
        summary="Create an account",
        access="public",
        status=201,
        answer=t.User,
        answer_description="Created.",
        body=t.Registration,
        body_media=("application/json",),
        body_reader="_credentials",
        responses={
            400: error(
                "Missing or weak password, or a bad username. Or a field sent in the URL: the body "
                "only may carry them.",
                weak={"detail": "password cannot be entirely numeric", "field": "password"},
            ),
            403: error(
                "Registration is closed here (`allow_registration`): staff create accounts. "
                "Staff open and close it with `PATCH /api/settings/`."
            ),
            409: error("The username is taken."),
        },
    )
    async def register(self, request: IRequest, body: t.Registration) -> bytes:
        user = await self._accounts.register(body.username, body.password, body.email or None)
        answer = {
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "is_staff": user.is_staff,
        }
        return respond(request, 201, answer)

    @operation(
        method="POST",
        path="/api-token-auth/",
        operation_id="token",
        tag="auth",
        summary="Log in: trade a username and password for a token",
        access="public",
        answer=t.Token,
        answer_description="A token.",
        body=t.Credentials,
        body_media=("application/x-www-form-urlencoded", "application/json"),
        body_reader="_credentials",
        responses={
            400: error(
                "Wrong or missing credentials. Or a field sent in the URL: the body only may "
                "carry them."
            ),
            403: error("The account is disabled."),
            429: throttled(),
        },
    )
    async def token(self, request: IRequest, body: t.Credentials) -> bytes:
        token = await self._accounts.login(body.username, body.password, client_address(request))
        return respond(request, 200, {"token": token})
