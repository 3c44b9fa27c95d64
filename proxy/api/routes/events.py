"""Your live events: a server-sent-events stream, and the same feed as a JSON long poll."""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.server import Request

from common.tokens import TokenClaims
from common.web import header, respond
from proxy.api import types as t
from proxy.api.contract import operation
from proxy.api.docs_parts import (
    LAST_EVENT_ID_PARAM,
    SINCE_PARAM,
    TIMEOUT_PARAM,
    error,
    event_stream,
)
from proxy.api.inputs import query
from proxy.api.routes.base import RouteBase
from proxy.api.views import changes_json
from proxy.events.inputs import parse_cursor, parse_timeout, stream_cursor
from proxy.events.stream import EventStream

_BAD_CURSOR = error(
    "A cursor or timeout that is not a whole number in range, or a query argument given "
    "twice or unknown.",
    cursor={"detail": "since must be an event id: a whole number from 0", "field": "since"},
)


class EventRoutes(RouteBase):
    @operation(
        method="GET",
        path="/api/events",
        operation_id="events_stream",
        tag="events",
        summary="Your live events, as server-sent events",
        description="Upload progress and completion, files created, updated, deleted and "
        "rolled back, replicas confirmed, parts mirrored, files backed up to S3 and restored "
        "from it: only your own. Staff accounts also get the cluster's `node.status`, "
        "`node.changed`, `job.started` and `job.finished`. Reconnect with `Last-Event-ID` (an "
        "`EventSource` does) and nothing is missed while the events are kept "
        "(`event_retention`, 7 days by default).",
        responses={200: event_stream(), 400: _BAD_CURSOR},
        parameters=(LAST_EVENT_ID_PARAM, SINCE_PARAM),
    )
    async def events_stream(self, request: IRequest, caller: TokenClaims) -> None:
        since = stream_cursor(
            header(request, "last-event-id"), query(request, {"since"}).get("since")
        )
        assert isinstance(request, Request)
        await EventStream(self._events, request, caller.user_id, since).start()

    @operation(
        method="GET",
        path="/api/changes",
        operation_id="changes",
        tag="events",
        summary="Your events after a cursor, as a long poll",
        description="The feed of `GET /api/events` for clients that cannot hold a stream: "
        "answers at once when there are events after `since` (or a reset), else when one "
        "arrives or `timeout` seconds have passed (then with none). Without `since`, at once "
        "with no events and the `last_id` to start from.",
        answer=t.Changes,
        answer_description="The events, and where to go on from.",
        responses={400: _BAD_CURSOR},
        parameters=(SINCE_PARAM, TIMEOUT_PARAM),
    )
    async def changes(self, request: IRequest, caller: TokenClaims) -> bytes:
        asked = query(request, {"since", "timeout"})
        since = parse_cursor(asked.get("since"), "since")
        timeout = parse_timeout(asked.get("timeout"))
        found = await self._events.changes(caller.user_id, since, timeout)
        return respond(request, 200, changes_json(found))
