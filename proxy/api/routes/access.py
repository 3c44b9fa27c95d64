"""Staff only: who is failing to log in (and clearing a throttle), and the run-time settings
(whether anyone may register)."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from common.tokens import TokenClaims
from common.web import respond
from proxy.api import types as t
from proxy.api.contract import operation
from proxy.api.docs_parts import error
from proxy.api.routes.base import RouteBase
from proxy.api.views import isotime
from proxy.catalog.settings import RegistrationState
from proxy.catalog.throttle import Recent


def failures_json(recent: Recent, key: str) -> dict[str, Any]:
    return {
        key: recent.key,
        "failures": recent.count,
        "last_failure": isotime(recent.last),
        "throttled_until": isotime(recent.until),
    }


def settings_json(registration: RegistrationState) -> dict[str, Any]:
    return {
        "allow_registration": registration.open,
        "allow_registration_source": registration.source,
    }


class AccessRoutes(RouteBase):
    @operation(
        method="GET",
        path="/api/login-failures/",
        operation_id="login_failures",
        tag="users",
        summary="Recent failed logins per account and per address, and who waits now",
        description="Failures of the last 15 minutes (older ones no longer count), at most "
        "100 names and 100 addresses, the most recent first. Never a password.",
        access="staff",
        answer=t.LoginFailures,
        answer_description="The failures.",
    )
    async def login_failures(self, request: IRequest, caller: TokenClaims) -> bytes:
        accounts, addresses = await self._accounts.throttle.recent()
        return respond(
            request,
            200,
            {
                "accounts": [failures_json(r, "username") for r in accounts],
                "addresses": [failures_json(r, "address") for r in addresses],
            },
        )

    @operation(
        method="DELETE",
        path="/api/login-failures/accounts/{username}",
        operation_id="login_failures_clear_account",
        tag="users",
        summary="Forget a username's failed logins: it may log in again at once",
        description="Logged in the system log with who cleared it. Its address's own "
        "failures stay (clear them separately).",
        access="staff",
        answer=t.ThrottleCleared,
        answer_description="Cleared (0 if there was nothing to clear).",
    )
    async def clear_account(self, request: IRequest, caller: TokenClaims, username: str) -> bytes:
        cleared = await self._accounts.throttle.clear_account(username, caller.username)
        return respond(request, 200, {"cleared": cleared})

    @operation(
        method="DELETE",
        path="/api/login-failures/addresses/{address}",
        operation_id="login_failures_clear_address",
        tag="users",
        summary="Forget an address's failed logins: logins from it wait no longer",
        description="Logged in the system log with who cleared it.",
        access="staff",
        answer=t.ThrottleCleared,
        answer_description="Cleared (0 if there was nothing to clear).",
    )
    async def clear_address(self, request: IRequest, caller: TokenClaims, address: str) -> bytes:
        cleared = await self._accounts.throttle.clear_address(address, caller.username)
        return respond(request, 200, {"cleared": cleared})

    @operation(
        method="GET",
        path="/api/settings/",
        operation_id="settings_get",
        tag="users",
        summary="Settings staff change at run time: is registration open",
        access="staff",
        answer=t.Settings,
        answer_description="The settings.",
    )
    async def get_settings(self, request: IRequest, caller: TokenClaims) -> bytes:
        return respond(request, 200, settings_json(await self._accounts.registration.state()))

    @operation(
        method="PATCH",
        path="/api/settings/",
        operation_id="settings_update",
        tag="users",
        summary="Open or close self-registration, at once and for every proxy",
        description="Kept in the database (it outlasts restarts and the config's "
        "`allow_registration`, which is only the default); logged in the system log.",
        access="staff",
        answer=t.Settings,
        answer_description="The settings as they now are.",
        body=t.SettingsChange,
        body_media=("application/json",),
        body_required=False,  # no body changes nothing, as `{}` does
        responses={400: error("A field is malformed or unknown.")},
    )
    async def update_settings(
        self, request: IRequest, caller: TokenClaims, body: t.SettingsChange
    ) -> bytes:
        registration = self._accounts.registration
        if isinstance(body.allow_registration, bool):
            state = await registration.switch(body.allow_registration, caller.username)
        else:
            state = await registration.state()
        return respond(request, 200, settings_json(state))
