"""What every browser test uses: a record of what a page asked for and said, the no-CDN check,
and screenshots under ``docs/screenshots/`` with fixed viewports and fixed names.

    page.goto(f"{cluster.proxy.url}/archives/")
    assert_only_local(page)          # no request left 127.0.0.1
    screenshot(page, "archives")     # docs/screenshots/archives.png at 1280x800
    screenshot_phone(page, "archives")  # docs/screenshots/archives-phone.png at 390x844
"""

from __future__ import annotations

import os
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request

from tests.proc import ROOT

SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
LOCAL_HOST = "127.0.0.1"
# URLs that name no host: the page's own data, blobs it made (ReDoc's worker), blank pages.
_HOSTLESS_SCHEMES = frozenset({"data", "blob", "about"})
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass
class Watch:
    """Everything one browser context's pages asked for and printed, in order."""

    requests: list[Request] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    _settled: set[int] = field(default_factory=set)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._request)
        context.on("requestfinished", self._settle)
        context.on("requestfailed", self._settle)
        context.on("console", self._console)
        context.on("weberror", lambda error: self.console.append(f"[pageerror] {error.error}"))
        context.on("page", self._page)

    # Handlers are methods or lambdas: Playwright keeps its wrapper on them as an attribute.
    def _request(self, request: Request) -> None:
        self.requests.append(request)

    def _settle(self, request: Request) -> None:
        self._settled.add(id(request))

    def _console(self, message: ConsoleMessage) -> None:
        where = message.location
        self.console.append(
            f"[{message.type}] {message.text} ({where['url']}:{where['lineNumber']})"
        )

    def _page(self, page: Page) -> None:
        # WebSockets are not requests to Playwright; a page opens them itself.
        page.on("websocket", lambda socket: self.sockets.append(socket.url))

    @property
    def urls(self) -> list[str]:
        """Every URL asked for, in order: requests, then WebSockets."""
        return [request.url for request in self.requests] + self.sockets

    def foreign(self) -> list[str]:
        """The URLs not on 127.0.0.1 that the browser went for (each once, in order).

        A request the page's Content-Security-Policy stopped never left the browser, so it is
        not among them (``blocked()`` lists those); one still in flight is.
        """
        left = [r.url for r in self.requests if not is_local(r.url) and not _blocked(r)]
        return list(dict.fromkeys(left + [url for url in self.sockets if not is_local(url)]))

    def blocked(self) -> list[str]:
        """The URLs not on 127.0.0.1 that the page asked for and its CSP refused."""
        return list(dict.fromkeys(r.url for r in self.requests if _blocked(r)))

    def unsettled(self) -> list[Request]:
        """Requests not on 127.0.0.1 that have neither finished nor failed yet."""
        return [r for r in self.requests if not is_local(r.url) and id(r) not in self._settled]


def _blocked(request: Request) -> bool:
    # Playwright's failure text for a request Chromium refused by the page's CSP is "csp".
    failure = request.failure
    return failure is not None and (failure == "csp" or "BLOCKED_BY_CSP" in failure)


def is_local(url: str) -> bool:
    """Whether ``url`` stays on this machine's 127.0.0.1.

    >>> is_local("http://127.0.0.1:8000/docs/redoc/"), is_local("data:image/png;base64,AA")
    (True, True)
    >>> is_local("https://cdn.redoc.ly/logo.png"), is_local("http://localhost:8000/")
    (False, False)
    """
    parts = urlsplit(url)
    if parts.scheme in _HOSTLESS_SCHEMES:
        return True
    return parts.hostname == LOCAL_HOST


_watches: weakref.WeakKeyDictionary[BrowserContext, Watch] = weakref.WeakKeyDictionary()


def watch(context: BrowserContext) -> Watch:
    """The record of ``context``, started the first time it is asked for (the ``context``
    fixture asks before any page opens)."""
    found = _watches.get(context)
    if found is None:
        found = _watches[context] = Watch()
        found.attach(context)
    return found


def require(problem: str | None) -> None:
    """Skip the test when ``problem`` says what it needs is missing (with ``CI`` set, fail)."""
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI is set, so the browser tests must run)")
    pytest.skip(problem)


def assert_only_local(page: Page) -> None:
    """Fail unless every request of ``page``'s context so far stayed on 127.0.0.1: the pages
    load nothing from a CDN or any other host. Their CSP says so, and this checks that it
    held: a request the CSP refused did not leave (ReDoc's sidebar asks for a logo on a CDN)."""
    record = watch(page.context)
    for _ in range(40):  # a refused request's failure comes a moment after the request
        if not record.unsettled():
            break
        page.wait_for_timeout(50)
    left = record.foreign()
    assert not left, f"requests left {LOCAL_HOST}: {left} (refused by the CSP: {record.blocked()})"


def screenshot(page: Page, name: str) -> Path:
    """Save the page as ``docs/screenshots/<name>.png`` at the desktop viewport (1280x800);
    ``name`` is lowercase words joined by ``-``, so the files keep their names run to run."""
    return _shoot(page, name, DESKTOP)


def screenshot_phone(page: Page, name: str) -> Path:
    """The same at a phone's viewport (390x844), as ``<name>-phone.png``; the page is left
    at the viewport it had."""
    return _shoot(page, f"{name}-phone", PHONE)


def _shoot(page: Page, name: str, viewport: dict[str, int]) -> Path:
    if not _NAME.fullmatch(name):
        raise ValueError(f"screenshot names are lowercase words joined by '-': {name!r}")
    path = SCREENSHOTS / f"{name}.png"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    page.set_viewport_size({"width": viewport["width"], "height": viewport["height"]})
    try:
        page.screenshot(path=path, animations="disabled", caret="hide")
    finally:
        if before is not None and before != viewport:
            page.set_viewport_size(before)
    return path
