"""Debian's Chromium, driven by Playwright's sync API on a thread of its own.

Why a thread: pytest-twisted runs every test function, plain ``def`` ones too, inside the
greenlet that runs Twisted's reactor (its ``pytest_pyfunc_call`` hands the call to the reactor
with ``callLater`` and blocks on it). Playwright's sync API does work there: it is built from
greenlets of its own, pumping a private asyncio loop in a "dispatcher" greenlet. But after
every call it sets that loop as the calling thread's running loop
(``asyncio._set_running_loop`` in ``playwright/_impl/_sync_base.py``) and never unsets it. On
the main thread, every later ``asyncio.run()`` of the session then fails with "cannot be
called from a running event loop" (tried: a plain test calling ``asyncio.run`` after one that
drove a page), and so would an asyncio reactor. The async API is no way out: it needs the
asyncio reactor under the whole suite.

So every Playwright object is made and used on one dedicated thread (``BrowserThread``):
``tests/browser/conftest.py`` runs each test marked ``browser`` there, from its fixtures'
setup to their teardown, so tests and fixtures alike read as plain synchronous Playwright
code. Such a test must be a plain ``def``, and cannot use pytest-twisted's async fixtures
(the reactor's greenlet lives on the main thread). The cluster and the other blocking
helpers work from any thread: they block on sockets and subprocesses and touch no reactor.

Browsers are never downloaded (``PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1``, and ``launch`` always
names ``/usr/bin/chromium``, which ``scripts/test`` installs from Debian when it is missing).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Browser, Playwright, sync_playwright

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")

# Playwright already passes --disable-background-networking, --disable-component-update,
# --disable-sync and --no-first-run. The rest: no GPU on these machines, no QUIC probes on a
# closed network, /dev/shm may be small in a container, and no host name but the cluster's
# 127.0.0.1 resolves, so the browser never looks a name up outside (a page that asks for a
# CDN still shows the request, which ``assert_only_local`` reports).
CHROMIUM_ARGS = (
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def chromium_problem() -> str | None:
    """None if Debian's Chromium is there to drive, else why not."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does it as root)"
    return None


def chromium_args() -> list[str]:
    """The command-line switches for Chromium here; as root its sandbox cannot start."""
    return [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]


class BrowserThread:
    """One thread on which every Playwright call of the test session runs.

    ``call(f, ...)`` runs ``f`` there and returns its result (or raises its exception); from
    the thread itself it just calls ``f``. One worker, so every call lands on the same thread:
    Playwright's sync objects cannot move between threads.
    """

    _shared: BrowserThread | None = None

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self._ident = self._pool.submit(threading.get_ident).result()

    @classmethod
    def shared(cls) -> BrowserThread:
        """The test session's one browser thread, started the first time it is asked for."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    @classmethod
    def close_shared(cls) -> None:
        if cls._shared is not None:
            cls._shared.close()
            cls._shared = None

    @property
    def current(self) -> bool:
        return threading.get_ident() == self._ident

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.current:
            return function(*args, **kwargs)
        return self._pool.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Chromium:
    """Playwright and a headless Debian Chromium, started and stopped on ``thread``."""

    def __init__(self, thread: BrowserThread) -> None:
        self.thread = thread
        self._playwright: Playwright | None = None
        self.browser: Browser | None = None

    def start(self) -> Browser:
        self.thread.call(self._start)
        assert self.browser is not None
        return self.browser

    def _start(self) -> None:
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=chromium_args()
        )

    def stop(self) -> None:
        self.thread.call(self._stop)

    def _stop(self) -> None:
        try:
            if self.browser is not None:
                self.browser.close()
        finally:
            self.browser = None
            if self._playwright is not None:
                self._playwright.stop()
                self._playwright = None
