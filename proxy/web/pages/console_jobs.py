"""The console's jobs page (``/admin/jobs/``): every periodic job (the proxy's own and the
storage nodes' ``JOB@NODE`` loops) with its interval, last run, result, duration and next run;
change an interval; run a proxy job now. Over the same ``JobScheduler`` as the API. Staff only
(``proxy.web.pages.console``).

"Run now" starts the run and answers at once with a redirect back to the page, which shows the
job as running: a job may take minutes (a scrub, a metadata backup), and a page that waited
would time out in the browser while the run went on. A run staff asked for is announced to
them (``job.started``, ``job.finished``: staff-only events), and the page follows them
(``static/live.js``), redrawing the run's notice and the table when it ends. A run already
going is joined, never doubled (the scheduler's rule).

The table is ``#jobs`` with a row ``data-job="NAME"`` and ``data-state="running|idle"`` per job
(and ``data-result``, ``data-last-run``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from common.errors import ApiError, BadRequest
from proxy.catalog.sessions import Session
from proxy.ops.jobs import Outcome, parse_interval
from proxy.web.pages.base import Redirect, page
from proxy.web.pages.console import ConsolePage

log = Logger()
NO_INTERVAL = "Type an interval: seconds, or a duration like 30s, 5m, 2h or 1d."


def interval_text(seconds: float | None) -> str:
    """An interval as staff would type it: the largest unit that divides it.

    >>> interval_text(30), interval_text(300), interval_text(5400), interval_text(86400)
    ('30s', '5m', '90m', '1d')
    >>> interval_text(0.5), interval_text(None)
    ('0.5s', '')
    """
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def moment(iso: str | None) -> str:
    """An ISO time from the scheduler as ``2026-12-01 14:05:09 UTC`` (seconds matter here:
    a job may run every few of them).

    >>> moment("2026-12-01T14:05:09Z"), moment(None)
    ('2026-12-01 14:05:09 UTC', '')
    """
    if not iso:
        return ""
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def job_row(job: dict[str, Any]) -> dict[str, Any]:
    """One job as the page shows it (the scheduler's JSON view, plus words for people)."""
    ok = job["last_ok"]
    return {
        **job,
        "state": "running" if job["running"] else "idle",
        "result": "never run" if job["last_run"] is None and ok is None
        else ("ok" if ok else "failed" if ok is False else "unknown"),
        "interval_text": interval_text(job["interval"]),
        "last_run_text": moment(job["last_run"]),
        "next_run_text": moment(job["next_run"]),
        "remote": job["where"] != "proxy",
    }  # fmt: skip


def typed_interval(fields: dict[str, str]) -> float | None:
    """The interval a form asks for: None for "back to the default", else seconds.

    >>> typed_interval({"interval": " 5m "}), typed_interval({"action": "default"})
    (300.0, None)
    """
    if fields.get("action") == "default":
        return None
    text = fields.get("interval", "").strip()
    if not text:
        raise BadRequest(NO_INTERVAL, field="interval")
    return parse_interval(text)


class JobPages(ConsolePage):
    @page("/admin/jobs/", methods=["GET"])
    async def jobs_page(self, request: IRequest) -> bytes:
        session = await self._staff(request)
        started = request.args.get(b"run", [b""])[0].decode("utf-8", "replace")
        return await self._jobs_list(request, session, started=started)

    async def _jobs_list(
        self,
        request: IRequest,
        session: Session,
        *,
        started: str = "",
        done: str = "",
        errors: dict[str, str] | None = None,
        status: int = 200,
    ) -> bytes:
        jobs = [job_row(job) for job in await self._jobs.list()]
        watched = next((job for job in jobs if job["name"] == started), None)
        return self._page(
            request, "console_jobs.html", session, status, jobs=jobs, watched=watched,
            done=done, errors=errors or {},
        )  # fmt: skip

    @page("/admin/jobs/<name>/interval", methods=["POST"])
    async def set_job_interval(self, request: IRequest, name: str) -> bytes:
        session, form = await self._staff_form(request)
        try:
            job = await self._jobs.set_interval(name, typed_interval(form.fields))
        except ApiError as error:
            errors = {name: error.detail}
            return await self._jobs_list(request, session, errors=errors, status=error.status)
        every = interval_text(job["interval"]) or "the node's own interval"
        said = f"{name} now runs every {every}."
        if job["where"] != "proxy":
            said += f" Node {job['where']} gets it with the next mirror sync."
        return await self._jobs_list(request, session, done=said)

    @page("/admin/jobs/<name>/run", methods=["POST"])
    async def run_job_now(self, request: IRequest, name: str) -> bytes:
        session, _ = await self._staff_form(request)
        run = ensureDeferred(self._jobs.run_now(name))
        refused = _refusal(run)
        if refused is not None:  # no such job, or one that runs on a node
            errors = {name: refused.detail}
            return await self._jobs_list(request, session, errors=errors, status=refused.status)
        raise Redirect("/admin/jobs/?run=" + quote(name, safe="@"))


def _refusal(run: Deferred[Outcome]) -> ApiError | None:
    """The scheduler's refusal, if ``run_now`` refused at once (it does so before it awaits
    anything); a run it started goes on after the page has answered and records its own
    outcome."""
    refused: list[ApiError] = []

    def caught(failure: Failure) -> None:
        if isinstance(failure.value, ApiError):
            refused.append(failure.value)
        else:
            log.failure("a run started from the jobs page failed", failure)

    run.addErrback(caught)
    return refused[0] if refused else None
