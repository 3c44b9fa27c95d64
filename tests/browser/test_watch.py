"""``assert_only_local`` catches a page that goes elsewhere, and lets one whose CSP refused
the load pass. Nothing leaves this machine here: the browser resolves no host name but
127.0.0.1 (``CHROMIUM_ARGS``), and requests to other hosts are aborted by a route before
that, so only what the page asked for is seen."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Route

from tests.browser.kit import assert_only_local, watch

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ELSEWHERE = "http://cdn.pyarchive.invalid"


@pytest.fixture
def offline(page: Page) -> Page:
    """``page`` with every request to another host aborted inside the browser."""

    def abort(route: Route) -> None:
        route.abort()

    page.route(f"{ELSEWHERE}/**", abort)
    return page


def test_a_script_from_another_host_fails_the_check(offline: Page) -> None:
    offline.set_content(f'<script src="{ELSEWHERE}/lib.js"></script>')
    with pytest.raises(AssertionError, match=re.escape(f"{ELSEWHERE}/lib.js")):
        assert_only_local(offline)


def test_a_websocket_to_another_host_fails_the_check(offline: Page) -> None:
    offline.set_content("<script>new WebSocket('ws://cdn.pyarchive.invalid/feed')</script>")
    offline.wait_for_function("true")  # the script has run
    with pytest.raises(AssertionError, match=re.escape("ws://cdn.pyarchive.invalid/feed")):
        assert_only_local(offline)


def test_an_image_the_csp_refused_never_left_and_passes(offline: Page) -> None:
    offline.set_content(
        "<meta http-equiv='Content-Security-Policy' content=\"img-src 'self'\">"
        f'<img src="{ELSEWHERE}/logo.png">'
    )
    assert_only_local(offline)
    assert watch(offline.context).blocked() == [f"{ELSEWHERE}/logo.png"]
