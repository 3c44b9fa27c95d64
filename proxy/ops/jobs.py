"""Built-in periodic jobs: one ``LoopingCall`` each, visible and adjustable by staff.

A little over 400 lines on purpose, for now: the scheduler's loops, runs, locks and what staff
see of them share one job's state; the natural split (the staff view, ``_job_json`` and the
remote jobs' entries, into a module of its own) belongs with issue 15's work on the jobs.

The proxy's periodic work (node pings, replication, scrub, upload expiry, and later the
metadata backup) runs here instead of in ad-hoc loops, so that every run is recorded (when,
how long, whether it worked, what it found) and staff can see it, change how often it runs
and run it now through ``/api/jobs/``. Only jobs added in code can run: never arbitrary code.

Rules every job gets for free:

- A run never overlaps another run of the same job: a tick or a "run now" that arrives while
  a run is going joins that run and gets its outcome.
- A failing run is caught, logged and recorded (``last_ok`` false, ``last_result`` the error);
  the loop goes on at its interval.
- An interval staff set is stored in the ``jobs`` table and survives a restart; rows written
  only to record runs carry ``interval_seconds = 0``, meaning "the configured default".
- Across proxies on one PostgreSQL database, a job runs on one proxy at a time: a run takes
  the job's cluster-wide lock (``joblocks``) first, and a proxy that does not get it skips
  that run (its tick does nothing; a staff "run now" answers 409).

Jobs that run on storage nodes (their S3 mirror loops, named ``mirror@<node>``) are reported
here by whoever talks to the nodes (``report_remote``) and listed with ``where`` = the node.
Staff may set their interval (kept here; ``interval_of`` tells the caller what to send to the
node), but cannot run them from the proxy: that answers 409 with when the node runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from common.db import Database, Txn
from common.errors import BadRequest, Conflict, NotFound
from proxy.api.views import isotime
from proxy.events import kinds
from proxy.events.emit import NO_WAKING, Emitter, Waker, tell_staff
from proxy.ops import jobstore
from proxy.ops.joblocks import JobLocks, LocalOnly, let_go, take
from proxy.ops.jobrules import (
    MAX_INTERVAL,
    QUIET_BELOW,
    Work,
    error_text,
    next_tick,
    parse_interval,
    summary,
)
from proxy.ops.systemlog import SystemLog

__all__ = ["JobScheduler", "Outcome", "parse_interval"]

log = Logger()


@dataclass
class Outcome:
    """How one run ended. Never a Failure, so it can be handed to any number of waiters."""

    ok: bool
    result: Any
    text: str
    skipped: bool = False
    """Not run: another proxy holds the job's lock."""


_SKIPPED = Outcome(False, None, "running on another proxy", skipped=True)


@dataclass
class _Job:
    name: str
    work: Work
    default_interval: float
    now: bool
    description: str
    override: float | None = None
    loop: LoopingCall | None = None
    current: Deferred[Outcome] | None = None
    last_run: float | None = None
    last_duration: float | None = None
    last_ok: bool | None = None
    last_result: str = ""
    next_run: float | None = None

    @property
    def interval(self) -> float:
        return self.override if self.override is not None else self.default_interval


@dataclass
class _Remote:
    name: str
    node: str
    report: dict[str, Any] = field(default_factory=dict)
    override: float | None = None


def _observe(run: Deferred[Outcome]) -> Deferred[Outcome]:
    """A new Deferred that fires with ``run``'s outcome, leaving ``run`` itself untouched."""
    seen: Deferred[Outcome] = Deferred()

    def relay(outcome: Outcome) -> Outcome:
        seen.callback(outcome)
        return outcome

    run.addCallback(relay)
    return seen


class JobScheduler:
    """Runs added jobs on ``clock``; records runs in ``db`` and ``syslog``."""

    def __init__(
        self,
        db: Database,
        clock: IReactorTime,
        syslog: SystemLog,
        waker: Waker = NO_WAKING,
        locks: JobLocks | None = None,
    ) -> None:
        self._db = db
        self._locks: JobLocks = locks or LocalOnly()
        self._clock = clock
        self._syslog = syslog
        self._waker = waker
        self._jobs: dict[str, _Job] = {}
        self._remote: dict[str, _Remote] = {}
        self._started = False

    # -- setting up

    def add(
        self, name: str, work: Work, interval: float, *, now: bool = True, description: str = ""
    ) -> None:
        """Add a job (before or after ``start``). ``work`` returns a JSON-able result."""
        if name in self._jobs or "@" in name:
            raise ValueError(f"job {name!r} is already added, or names a remote job")
        if not 0 < interval <= MAX_INTERVAL:
            raise ValueError(f"job {name!r}: interval {interval} is out of range")
        job = _Job(name, work, interval, now, description)
        self._jobs[name] = job
        if self._started:
            ensureDeferred(self._activate(job)).addErrback(
                lambda failure: log.failure("could not start job {job}", failure, job=name)
            )

    async def start(self) -> None:
        """Load stored intervals and last runs, then start every job's loop."""
        self._started = True
        rows = await self._db.run(jobstore.load_all)
        for name, row in rows.items():
            if "@" in name and row[0] > 0:
                self._remote_entry(name).override = row[0]
        for job in list(self._jobs.values()):
            self._apply_row(job, rows.get(job.name))
            self._start_loop(job, now=job.now)

    async def _activate(self, job: _Job) -> None:
        rows = await self._db.run(jobstore.load_all)
        self._apply_row(job, rows.get(job.name))
        if self._started and job.loop is None:
            self._start_loop(job, now=job.now)

    @staticmethod
    def _apply_row(job: _Job, row: tuple[Any, ...] | None) -> None:
        if row is None:
            return
        interval, last_run, last_duration, last_ok, last_result = row
        job.override = interval if interval > 0 else None
        job.last_run, job.last_duration = last_run, last_duration
        job.last_ok = None if last_ok is None else bool(last_ok)
        job.last_result = last_result

    def stop(self) -> None:
        """Stop every loop; runs in progress finish on their own."""
        self._started = False
        for job in self._jobs.values():
            self._stop_loop(job)

    def _start_loop(self, job: _Job, *, now: bool) -> None:
        loop = LoopingCall(self._tick, job)
        loop.clock = self._clock
        job.loop = loop
        loop.start(job.interval, now=now).addErrback(
            lambda failure: log.failure("job {job}'s loop stopped", failure, job=job.name)
        )

    @staticmethod
    def _stop_loop(job: _Job) -> None:
        if job.loop is not None and job.loop.running:
            job.loop.stop()
        job.loop = None

    # -- running

    def _tick(self, job: _Job) -> Deferred[None]:
        return self._run(job).addCallback(lambda _: None)

    def _run(self, job: _Job, *, asked: bool = False) -> Deferred[Outcome]:
        """The job's current run, started if none is going (``asked``: by staff)."""
        if job.current is not None:
            return _observe(job.current)
        run = ensureDeferred(self._execute(job, asked))
        if not run.called:  # a run that finished at once has already cleared ``current``
            job.current = run
        return _observe(run)

    async def _execute(self, job: _Job, asked: bool) -> Outcome:
        try:
            if not await take(self._locks, job.name):
                return _SKIPPED
            try:
                return await self._execute_held(job, asked)
            finally:
                await let_go(self._locks, job.name)
        finally:
            job.current = None

    async def _execute_held(self, job: _Job, asked: bool) -> Outcome:
        started = self._clock.seconds()
        # Staff watch the runs they asked for and those of slow jobs; a job every few
        # seconds is shown live only when its outcome changes.
        announced = asked or job.interval >= QUIET_BELOW
        # Recorded while the work starts (never delaying it), and before its end is.
        telling = (
            ensureDeferred(
                tell_staff(self._db, self._waker, started, kinds.JOB_STARTED, job=job.name)
            )
            if announced
            else None
        )
        try:
            result = await job.work()
        except Exception as exc:
            log.failure("job {job} failed", job=job.name)
            outcome = Outcome(False, None, error_text(exc))
        else:
            outcome = Outcome(True, result, summary(result))
        now = self._clock.seconds()
        duration = max(0.0, now - started)
        was_ok = job.last_ok
        job.last_run, job.last_duration = started, duration
        job.last_ok, job.last_result = outcome.ok, outcome.text
        if telling is not None:
            await telling
        emitter = Emitter(now)
        told = announced or (was_ok is not None and was_ok != outcome.ok)
        next_run = self._next_run(job, now)  # here: the loop belongs to the reactor

        def record(txn: Txn) -> None:
            jobstore.record_run(
                txn, job.name, started, duration, outcome.ok, outcome.text, next_run
            )
            if told:
                emitter.for_staff(
                    txn, kinds.JOB_FINISHED, job=job.name, ok=outcome.ok,
                    result=outcome.text, duration=round(duration, 3),
                )  # fmt: skip

        try:
            await self._db.run(record)
        except Exception:
            log.failure("could not record a run of job {job}", job=job.name)
        self._waker.wake(emitter.users)
        await self._log_run(job, outcome, duration, was_ok)
        return outcome

    @staticmethod
    def _next_run(job: _Job, now: float) -> float | None:
        loop = job.loop
        if loop is None or not loop.running or loop.starttime is None:
            return None
        if loop.call is not None and loop.call.active():
            return float(loop.call.getTime())
        return next_tick(loop.starttime, job.interval, now)

    async def _log_run(
        self, job: _Job, outcome: Outcome, duration: float, was_ok: bool | None
    ) -> None:
        """Failures always; successes of slow jobs, and the first success after a failure
        (a job every few seconds would otherwise bury everything else)."""
        took = round(duration, 3)
        if not outcome.ok:
            await self._syslog.record(
                "error", "job.failed", f"job {job.name} failed after {took} s: {outcome.text}",
                job=job.name, duration=took, result=outcome.text,
            )  # fmt: skip
        elif was_ok is False or job.interval >= QUIET_BELOW:
            event = "job.recovered" if was_ok is False else "job.finished"
            await self._syslog.record(
                "info", event, f"job {job.name} finished in {took} s",
                job=job.name, duration=took, result=outcome.text,
            )  # fmt: skip

    async def run_now(self, name: str) -> Outcome:
        """Run a job at once (or join the run going); its loop keeps its own schedule."""
        job = self._jobs.get(name)
        if job is None:
            remote = self._remote.get(name)
            if remote is not None:
                every = self._remote_interval(remote)
                when = f"; it runs every {every:g} s" if every is not None else ""
                raise Conflict(f"{name} runs on node {remote.node}{when}", node=remote.node)
            raise NotFound(f"No job named {name!r}; jobs: {', '.join(self.names())}")
        outcome = await self._run(job, asked=True)
        if outcome.skipped:
            raise Conflict(f"{name} is running on another proxy; ask again once it has finished")
        return outcome

    async def idle(self) -> None:
        """Wait until no run is in progress (for an orderly stop, and for tests)."""
        while running := [job.current for job in self._jobs.values() if job.current]:
            for run in running:
                await _observe(run)

    # -- staff's view

    def names(self) -> list[str]:
        return sorted(self._jobs) + sorted(self._remote)

    async def set_interval(self, name: str, seconds: float | None) -> dict[str, Any]:
        """Set (or, with None, clear) a job's interval; a local loop restarts on it, keeping
        the run in progress if there is one. Stored, so it survives a restart."""
        if seconds is not None and not 0 < seconds <= MAX_INTERVAL:
            raise BadRequest("interval must be above 0 and at most 30 days", field="interval")
        job = self._jobs.get(name)
        remote = self._remote.get(name)
        if job is None and remote is None:
            raise NotFound(f"No job named {name!r}; jobs: {', '.join(self.names())}")
        await self._db.run(jobstore.store_interval, name, seconds or 0.0)
        if job is not None:
            job.override = seconds
            if self._started:
                self._stop_loop(job)
                self._start_loop(job, now=False)
            view = self._job_json(job)
        else:
            assert remote is not None
            remote.override = seconds
            view = self._remote_json(remote)
        await self._syslog.record(
            "info", "job.interval", f"job {name} now runs every {view['interval']} s",
            job=name, interval=view["interval"],
        )  # fmt: skip
        return view

    async def list(self) -> list[dict[str, Any]]:
        local = [self._job_json(self._jobs[name]) for name in sorted(self._jobs)]
        return local + [self._remote_json(self._remote[name]) for name in sorted(self._remote)]

    def _job_json(self, job: _Job) -> dict[str, Any]:
        next_run = self._next_run(job, self._clock.seconds())
        return {
            "name": job.name,
            "description": job.description,
            "interval": job.interval,
            "last_run": isotime(job.last_run),
            "last_duration": None if job.last_duration is None else round(job.last_duration, 3),
            "last_ok": job.last_ok,
            "last_result": job.last_result,
            "next_run": isotime(next_run),
            "running": job.current is not None,
            "where": "proxy",
        }

    # -- jobs on nodes

    def report_remote(self, name: str, job: dict[str, Any]) -> None:
        """What a node said about one of its jobs (``name`` like ``mirror@node1``)."""
        self._remote_entry(name).report = dict(job)

    def interval_of(self, name: str) -> float | None:
        """The interval staff set for ``name`` (for a remote job: None if never set, so the
        node keeps its own); a local job's current interval."""
        job = self._jobs.get(name)
        if job is not None:
            return job.interval
        remote = self._remote.get(name)
        return None if remote is None else remote.override

    def _remote_entry(self, name: str) -> _Remote:
        if "@" not in name:
            raise ValueError(f"a remote job's name is JOB@NODE, not {name!r}")
        if name not in self._remote:
            self._remote[name] = _Remote(name, name.partition("@")[2])
        return self._remote[name]

    @staticmethod
    def _remote_interval(remote: _Remote) -> float | None:
        if remote.override is not None:
            return remote.override
        reported = remote.report.get("interval")
        return float(reported) if isinstance(reported, int | float) else None

    def _remote_json(self, remote: _Remote) -> dict[str, Any]:
        report = remote.report

        def when(key: str) -> str | None:
            value = report.get(key)
            return isotime(float(value)) if isinstance(value, int | float) else None

        duration = report.get("last_duration")
        last_ok = report.get("last_ok")
        job = remote.name.partition("@")[0]
        return {
            "name": remote.name,
            "description": f"the {job} loop of storage node {remote.node}",
            "interval": self._remote_interval(remote),
            "last_run": when("last_run"),
            "last_duration": round(duration, 3) if isinstance(duration, int | float) else None,
            "last_ok": last_ok if isinstance(last_ok, bool) else None,
            "last_result": str(report.get("last_result") or ""),
            "next_run": when("next_run"),
            "running": bool(report.get("running")),
            "where": remote.node,
        }
