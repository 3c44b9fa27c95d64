"""Staff only: storage nodes, jobs, the system log and S3 connections."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from common.tokens import TokenClaims
from common.web import respond
from proxy.api import types as t
from proxy.api.contract import operation, set_fields
from proxy.api.docs_parts import error
from proxy.api.inputs import query
from proxy.api.routes.base import RouteBase
from proxy.ops.jobs import parse_interval
from proxy.ops.systemlog import parse_log_query

_NO_NODE = error("No such node.")
_NO_JOB = error("No such job.")
# Each may be given empty (allowEmptyValue), which means what leaving it out does.
_LOG_PARAMETERS = (
    {
        "description": "This level and above.",
        "in": "query",
        "name": "level",
        "schema": {"enum": ["debug", "info", "warn", "error"], "type": "string"},
        "allowEmptyValue": True,
    },
    {
        "description": "ISO 8601 time or unix seconds.",
        "in": "query",
        "name": "since",
        "schema": {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
            ]
        },
        "allowEmptyValue": True,
    },
    {
        "description": "Until this time (included): ISO 8601 time or unix seconds.",
        "in": "query",
        "name": "until",
        "schema": {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
            ]
        },
        "allowEmptyValue": True,
    },
    {
        "description": "Only entries about this job.",
        "in": "query",
        "name": "job",
        "schema": {"type": "string"},
        "allowEmptyValue": True,
    },
    {
        "description": "At most this many entries.",
        "in": "query",
        "name": "limit",
        "schema": {"default": 200, "maximum": 1000, "minimum": 1, "type": "integer"},
        "allowEmptyValue": True,
    },
    {
        "description": "Only entries older than the entry with this id (in the log's order: "
        "time, then id): for the next page, the `id` of the last entry of this one; an empty "
        "page is the end.",
        "in": "query",
        "name": "before",
        "schema": {"maximum": 999999999999999999, "minimum": 0, "type": "integer"},
        "allowEmptyValue": True,
    },
)


class StaffRoutes(RouteBase):
    # -- storage nodes

    @operation(
        method="GET",
        path="/api/nodes/",
        operation_id="nodes_list",
        tag="nodes",
        summary="Storage nodes and what the monitor last saw of them",
        access="staff",
        answer=list[t.Node],
        answer_description="The nodes.",
    )
    async def list_nodes(self, request: IRequest, caller: TokenClaims) -> bytes:
        return respond(request, 200, await self._nodes.list_nodes())

    @operation(
        method="POST",
        path="/api/nodes/",
        operation_id="nodes_add",
        tag="nodes",
        summary="Register a storage node (used once its first ping succeeds)",
        access="staff",
        status=201,
        answer=t.Node,
        answer_description="Registered.",
        body=t.NewNode,
        body_media=("application/json",),
        responses={
            400: error("A field is missing or malformed."),
            409: error("A node with that name exists."),
        },
    )
    async def add_node(self, request: IRequest, caller: TokenClaims, body: t.NewNode) -> bytes:
        return respond(request, 201, await self._nodes.add(set_fields(body)))

    @operation(
        method="PATCH",
        path="/api/nodes/{name}/",
        operation_id="nodes_update",
        tag="nodes",
        summary="Drain, reactivate or move a node",
        access="staff",
        answer=t.Node,
        answer_description="Changed.",
        body=t.NodeChange,
        body_media=("application/json",),
        body_required=False,  # no body changes nothing, as `{}` does: the node is answered
        responses={400: error("A field is malformed."), 404: _NO_NODE},
        path_types={"name": t.Name},
    )
    async def update_node(
        self, request: IRequest, caller: TokenClaims, name: str, body: t.NodeChange
    ) -> bytes:
        return respond(request, 200, await self._nodes.update(name, set_fields(body)))

    @operation(
        method="DELETE",
        path="/api/nodes/{name}/",
        operation_id="nodes_remove",
        tag="nodes",
        summary="Forget a node",
        access="staff",
        status=204,
        answer_description="Forgotten.",
        responses={
            400: error("The name is not a node's name (see `name`)."),
            404: _NO_NODE,
            409: error("It holds the only copy of some files; drain it first."),
        },
        path_types={"name": t.Name},
    )
    async def remove_node(self, request: IRequest, caller: TokenClaims, name: str) -> bytes:
        await self._nodes.remove(name)
        request.setResponseCode(204)
        return b""

    # -- jobs and the system log

    @operation(
        method="GET",
        path="/api/jobs/",
        operation_id="jobs_list",
        tag="jobs",
        summary="Periodic jobs: the proxy's own and the storage nodes' mirror loops",
        access="staff",
        answer=list[t.Job],
        answer_description="The jobs.",
    )
    async def list_jobs(self, request: IRequest, caller: TokenClaims) -> bytes:
        return respond(request, 200, await self._jobs.list())

    @operation(
        method="PATCH",
        path="/api/jobs/{name}/",
        operation_id="jobs_update",
        tag="jobs",
        summary="Change how often a job runs (kept across restarts)",
        access="staff",
        description="A proxy job's loop restarts at once with the new interval; a node's job "
        "gets it with the next sync.",
        answer=t.Job,
        answer_description="The job as it now stands.",
        body=t.JobInterval,
        responses={
            400: error("`interval` is missing or out of range."),
            404: _NO_JOB,
        },
    )
    async def update_job(
        self, request: IRequest, caller: TokenClaims, name: str, body: t.JobInterval
    ) -> bytes:
        interval = parse_interval(body.interval)
        return respond(request, 200, await self._jobs.set_interval(name, interval))

    @operation(
        method="POST",
        path="/api/jobs/{name}/run",
        operation_id="jobs_run",
        tag="jobs",
        summary="Run a built-in job now (or wait for its run in progress)",
        access="staff",
        answer=t.JobRun,
        answer_description="How the run went: `ok`, its `result`, and `error` if it failed.",
        responses={
            404: _NO_JOB,
            409: error(
                "The job runs on a storage node, on its own schedule. Or another proxy on "
                "the same database is running it now: ask again once it has finished."
            ),
        },
    )
    async def run_job(self, request: IRequest, caller: TokenClaims, name: str) -> bytes:
        """Run a built-in job now, or join its run in progress. Never arbitrary code."""
        outcome = await self._jobs.run_now(name)
        body: dict[str, Any] = {"job": name, "ok": outcome.ok, "result": outcome.result}
        if not outcome.ok:
            body["error"] = outcome.text
        return respond(request, 200, body)

    @operation(
        method="GET",
        path="/api/system-log/",
        operation_id="system_log",
        tag="jobs",
        summary="What the proxy did and saw, newest first",
        access="staff",
        description="Job runs, node up/down transitions, replication, mirror and restore "
        "events, S3 connection changes and failed logins.",
        answer=list[t.LogEntry],
        answer_description="The entries.",
        responses={
            400: error(
                "A malformed `level`, `since` or `limit`. Or a malformed `until` or "
                "`before`, or `since` after `until`."
            )
        },
        parameters=_LOG_PARAMETERS,
    )
    async def system_log(self, request: IRequest, caller: TokenClaims) -> bytes:
        asked = parse_log_query(
            query(request, {"level", "since", "until", "job", "limit", "before"})
        )
        entries = await self._syslog.query(
            asked.level, asked.since, asked.job, asked.limit,
            until=asked.until, before=asked.before,
        )  # fmt: skip
        return respond(request, 200, entries)
