"""Supervision for ``scripts/run-local``: keep each child running until the whole system stops.

A child that exits (crash, SIGKILL, OOM) is started again with the same command, after a delay
that doubles from ``Backoff.initial`` up to ``Backoff.longest`` while it keeps failing, and goes
back to the first delay once a run lasted ``Backoff.stable_after``. The others keep serving.
Each child runs in a process group of its own (a Ctrl-C in the terminal reaches the supervisor
only, which then stops the children in order) and through ``node/replicas/deathsig.py``, so
children die with the supervisor even when it is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from node.replicas import deathsig

STARTUP_TIMEOUT = 30.0
"""How long a (re)started child has to answer its health URL before it is killed and retried."""
STOP_TIMEOUT = 15.0
"""How long a child has after SIGTERM before it gets SIGKILL."""


@dataclass
class Backoff:
    """The delays between restarts of one child.

    >>> b = Backoff(initial=1.0, longest=30.0, stable_after=60.0)
    >>> [b.after_exit(ran=0.5) for _ in range(7)]
    [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    >>> b.after_exit(ran=61.0)
    1.0
    """

    initial: float = 1.0
    longest: float = 30.0
    stable_after: float = 60.0
    _next: float = field(default=0.0, repr=False)

    def after_exit(self, ran: float) -> float:
        """The delay before the next start of a child that ran ``ran`` seconds."""
        if ran >= self.stable_after or not self._next:
            self._next = self.initial
        delay = self._next
        self._next = min(delay * 2, self.longest)
        return delay


def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class Child:
    """One supervised program: how to start it, how to tell it serves, and its current run."""

    name: str
    argv: list[str]
    log_path: Path
    health_url: str
    env: Mapping[str, str] | None = None
    after_start: Callable[[], None] | None = None
    """Run once the child answers (e.g. create the local bucket in a fresh S3 stand-in)."""
    back_note: str = ""
    """Said when a restarted child is back (e.g. that an in-memory stand-in starts empty)."""
    backoff: Backoff = field(default_factory=Backoff)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    healthy: bool = False

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                deathsig.wrapped(os.getpid(), self.argv[0], self.argv),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=None if self.env is None else dict(self.env), process_group=0,
            )  # fmt: skip
        self.started_at, self.restart_at, self.healthy = time.monotonic(), None, False

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT) -> str | None:
        """Block until the first run answers; None when it does, else why not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return f"{self.name} exited with status {self.process.returncode}"
            if self.answers():
                return self._became_healthy()
            time.sleep(0.2)
        return f"{self.health_url} did not answer within {timeout:.0f} s"

    def _became_healthy(self) -> str | None:
        if self.after_start is not None:
            try:
                self.after_start()
            except Exception as problem:  # whatever it was: this run is no good
                return f"{self.name} could not be set up: {problem}"
        self.healthy = True
        return None

    def tick(self, now: float) -> None:
        """One supervision step: notice an exit, restart when due, see a restart through."""
        if self.process is None:
            if self.restart_at is not None and now >= self.restart_at:
                self.spawn()
            return
        status = self.process.poll()
        if status is not None:
            delay = self.backoff.after_exit(ran=now - self.started_at)
            say(f"{self.name} exited with status {status}; restarting in {delay:g} s")
            self.process, self.restart_at, self.healthy = None, now + delay, False
            return
        if self.healthy:
            return
        if self.answers():
            problem = self._became_healthy()
            if problem is None:
                say(f"{self.name} is back (pid {self.process.pid}){self.back_note}")
                return
            say(problem)
        elif now - self.started_at < STARTUP_TIMEOUT:
            return
        else:
            say(f"{self.name} did not answer within {STARTUP_TIMEOUT:.0f} s; killing it")
        self.process.kill()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def supervise(children: list[Child], stopping: Callable[[], bool], step: float = 0.2) -> None:
    """Keep ``children`` running until ``stopping()``; then stop them, last started first."""
    try:
        while not stopping():
            now = time.monotonic()
            for child in children:
                child.tick(now)
            time.sleep(step)
    finally:
        stop_all(children)


def stop_all(children: list[Child]) -> None:
    for child in reversed(children):
        child.stop()
