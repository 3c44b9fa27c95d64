"""Fixtures for end-to-end tests in Debian's Chromium against a real local cluster.

- ``cluster`` (one per test module): a proxy process, two storage nodes with their rsync
  daemons, moto's S3 server over HTTP, and an active S3 connection made by staff; fast job
  intervals. SQLite unless the module overrides ``cluster_database_kind``.
- ``browser`` (one per session), and a fresh ``context`` and ``page`` per test: 1280x800,
  downloads accepted, 20 s timeouts, every request and console line recorded
  (``tests.browser.kit``). When a test with a page fails, before any fixture is torn down,
  the page is saved as ``failure.png`` in the test's tmp dir with ``console.log``, and the
  report shows both, under "Chromium at the failure".

Playwright runs on a thread of its own, and so does every test marked ``browser``, fixtures
and all: see ``tests/browser/chromium.py`` for why. A test that uses ``page`` or ``context``
without the mark fails with a line that says so.

Without ``/usr/bin/chromium`` the tests that need it are skipped with the reason, except when
``CI`` is set: then they fail.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from _pytest.runner import runtestprotocol
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.chromium import BrowserThread, Chromium, chromium_problem
from tests.browser.kit import DESKTOP, require, watch
from tests.clusterkit import RemoteCluster, remote_cluster
from tests.conftest import _database_url
from tests.s3server import S3Server

TIMEOUT_MS = 20_000


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
def browser_thread() -> BrowserThread:
    """The thread every Playwright call runs on (``tests/browser/chromium.py`` says why)."""
    return BrowserThread.shared()


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
def context(
    request: pytest.FixtureRequest, browser: Browser, browser_thread: BrowserThread
) -> Iterator[BrowserContext]:
    """A fresh profile: no cookies, no storage; its requests and console recorded."""
    if not browser_thread.current:
        pytest.fail(
            f"{request.node.nodeid} uses the browser, so it must be marked"
            " @pytest.mark.browser (its Playwright calls can only run on the browser's thread)",
            pytrace=False,
        )
    made = browser.new_context(
        viewport={"width": DESKTOP["width"], "height": DESKTOP["height"]},
        accept_downloads=True,
        locale="en-GB",
        timezone_id="UTC",
    )
    made.set_default_timeout(TIMEOUT_MS)
    made.set_default_navigation_timeout(TIMEOUT_MS)
    watch(made)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def page(context: BrowserContext, tmp_path: Path) -> Page:
    """A page of its own for the test. When the test fails, ``failure.png`` and
    ``console.log`` are left in ``tmp_path``, and the console is in the report."""
    return context.new_page()


def _keep_evidence(page: Page, directory: Path) -> str:
    """The failed test's page as a screenshot and its console, in ``directory``; what the
    report should say about them."""
    lines = watch(page.context).console
    (directory / "console.log").write_text("".join(f"{line}\n" for line in lines))
    shot = directory / "failure.png"
    try:
        page.screenshot(path=shot, full_page=True)
    except Exception as exc:  # a page that crashed still has a console worth reading
        said = [f"no screenshot of {page.url}: {exc}"]
    else:
        said = [f"screenshot of {page.url} at the failure: {shot}"]
    said.append(f"console ({len(lines)} lines, also in {directory / 'console.log'}):")
    return "\n".join(said + [f"  {line}" for line in lines])


# -- the tests marked ``browser`` run on the browser's thread, from setup to teardown


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """Run a test marked ``browser`` (its fixtures' setup, the test, their teardown) on the
    browser's thread, so that fixtures can use Playwright as freely as tests do. What the
    hook wrappers around this (warnings, logging, capture) do stays on the main thread,
    which waits meanwhile."""
    if item.get_closest_marker("browser") is None:
        return None
    thread = BrowserThread.shared()
    if thread.current:
        return None

    def protocol() -> None:
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        runtestprotocol(item, nextitem=nextitem)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    thread.call(protocol)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a test with a page fails, keep its evidence before any fixture is torn down."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    opened, directory = funcargs.get("page"), funcargs.get("tmp_path")
    if report.failed and report.when != "teardown" and isinstance(opened, Page):
        assert isinstance(directory, Path)
        report.sections.append(("Chromium at the failure", _keep_evidence(opened, directory)))
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Call a test marked ``browser`` right here, on the browser's thread: pytest-twisted
    would hand it to the reactor's greenlet, which lives on the main thread."""
    if pyfuncitem.get_closest_marker("browser") is None:
        return None
    test = pyfuncitem.obj
    if inspect.iscoroutinefunction(test):
        raise TypeError(f"{pyfuncitem.name}: a browser test is a plain def (sync Playwright)")
    arguments = {
        name: pyfuncitem.funcargs[name]
        for name in inspect.signature(test).parameters
        if name in pyfuncitem.funcargs
    }
    test(**arguments)
    return True


def pytest_sessionfinish(session: pytest.Session) -> None:
    BrowserThread.close_shared()
