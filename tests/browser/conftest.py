"""Fixtures for end-to-end tests in Debian's Chromium against a real local cluster.

- ``cluster`` (one per test module): a proxy process, two storage nodes with their rsync
  daemons, moto's S3 server over HTTP, and an active S3 connection made by staff; fast job
  intervals. SQLite unless the module overrides ``cluster_database_kind``.
- ``browser`` (one per session), and a fresh ``context`` and ``page`` per test: 1280x800,
  downloads accepted, 20 s timeouts, every request and console line recorded
  (``tests.browser.kit``). When a test fails, its page is saved as ``failure.png`` in the
  test's tmp dir and the console is printed with the report.

Playwright runs on a thread of its own and so do the bodies of the tests that use it: see
``tests/browser/chromium.py`` for why.

Without ``/usr/bin/chromium`` the tests that need it are skipped with the reason, except when
``CI`` is set: then they fail.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.chromium import BrowserThread, Chromium, chromium_problem
from tests.browser.kit import DESKTOP, require, watch
from tests.clusterkit import RemoteCluster, remote_cluster
from tests.conftest import _database_url
from tests.s3server import S3Server

TIMEOUT_MS = 20_000
_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


# -- the cluster


@pytest.fixture(scope="module")
def cluster_database_kind() -> str:
    """``"sqlite"`` or ``"postgresql"``: the metadata database of the module's cluster. The
    pages are what these tests look at, and both databases are tested everywhere else."""
    return "sqlite"


@pytest.fixture(scope="module")
def cluster(
    cluster_database_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteCluster]:
    """One real cluster for a test module, its S3 tier connected and active."""
    root = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack:
        server = S3Server().start()
        stack.callback(server.close)
        database = stack.enter_context(contextmanager(_database_url)(cluster_database_kind, root))
        yield stack.enter_context(remote_cluster(root, database, server.bucket(name="local")))


# -- the browser


@pytest.fixture(scope="session")
def browser_thread() -> Iterator[BrowserThread]:
    thread = BrowserThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="session")
def browser(browser_thread: BrowserThread) -> Iterator[Browser]:
    """Headless Debian Chromium, one for the session (each test has its own context)."""
    require(chromium_problem())
    expect.set_options(timeout=TIMEOUT_MS)
    chromium = Chromium(browser_thread)
    try:
        yield chromium.start()
    finally:
        chromium.stop()


@pytest.fixture
def context(browser: Browser, browser_thread: BrowserThread) -> Iterator[BrowserContext]:
    """A fresh profile: no cookies, no storage; its requests and console recorded."""

    def new() -> BrowserContext:
        made = browser.new_context(
            viewport={"width": DESKTOP["width"], "height": DESKTOP["height"]},
            accept_downloads=True,
            locale="en-GB",
            timezone_id="UTC",
        )
        made.set_default_timeout(TIMEOUT_MS)
        made.set_default_navigation_timeout(TIMEOUT_MS)
        watch(made)
        return made

    made = browser_thread.call(new)
    try:
        yield made
    finally:
        browser_thread.call(made.close)


@pytest.fixture
def page(
    request: pytest.FixtureRequest,
    context: BrowserContext,
    browser_thread: BrowserThread,
    tmp_path: Path,
) -> Iterator[Page]:
    opened = browser_thread.call(context.new_page)
    yield opened
    report = request.node.stash.get(_CALL_REPORT, None)
    if report is not None and report.failed:
        browser_thread.call(_keep_evidence, opened, tmp_path)


def _keep_evidence(page: Page, directory: Path) -> None:
    """The failed test's page as a screenshot and its console in ``directory``; printed
    too, so the report shows where and what."""
    lines = watch(page.context).console
    (directory / "console.log").write_text("".join(f"{line}\n" for line in lines))
    shot = directory / "failure.png"
    try:
        page.screenshot(path=shot, full_page=True)
    except Exception as exc:  # a page that crashed still has a console worth reading
        print(f"no screenshot of {page.url}: {exc}")
    else:
        print(f"screenshot of {page.url} at the failure: {shot}")
    print(f"browser console ({len(lines)} lines, also in {directory / 'console.log'}):")
    for line in lines:
        print(f"  {line}")


# -- running the tests that use the browser on its thread


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Call a test that uses the browser on the browser's thread (instead of in Twisted's
    greenlet, where pytest-twisted would call it)."""
    thread = pyfuncitem.funcargs.get("browser_thread")
    if not isinstance(thread, BrowserThread):
        return None
    test = pyfuncitem.obj
    if inspect.iscoroutinefunction(test):
        raise TypeError(f"{pyfuncitem.name}: a browser test is a plain def (sync Playwright)")
    arguments = {
        name: pyfuncitem.funcargs[name]
        for name in inspect.signature(test).parameters
        if name in pyfuncitem.funcargs
    }
    thread.call(test, **arguments)
    return True
