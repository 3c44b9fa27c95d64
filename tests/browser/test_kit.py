"""The browser tests' own helpers, on the main thread: what counts as staying on this
machine, files of known content, and Playwright kept on its own thread."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.browser.chromium import BrowserThread
from tests.browser.kit import is_local, screenshot
from tests.browser.pages import file_sha256, make_file


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/docs/redoc/",
        "ws://127.0.0.1:8000/api/events",
        "data:image/svg+xml;base64,PHN2Zy8+",
        "blob:http://127.0.0.1:8000/3c1f0d2e-1111-2222-3333-444455556666",
        "about:blank",
    ],
)
def test_a_url_on_127_0_0_1_or_naming_no_host_is_local(url: str) -> None:
    assert is_local(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.redoc.ly/redoc/logo-mini.svg",
        "https://fonts.googleapis.com/css?family=Roboto",
        "http://localhost:8000/",  # the cluster is reached as 127.0.0.1 only
        "http://127.0.0.2:8000/",
        "http://127.0.0.1.example.com/",
        "wss://example.com/socket",
    ],
)
def test_a_url_anywhere_else_is_not_local(url: str) -> None:
    assert not is_local(url)


def test_make_file_writes_the_bytes_its_seed_and_size_fix(tmp_path: Path) -> None:
    size = 2 * 2**20 + 12_345  # two whole blocks and a part of one
    digest = make_file(tmp_path / "a.bin", size, seed=7)
    again = make_file(tmp_path / "b.bin", size, seed=7)
    other = make_file(tmp_path / "c.bin", size, seed=8)
    data = (tmp_path / "a.bin").read_bytes()
    assert len(data) == size
    assert digest == again == hashlib.sha256(data).hexdigest() == file_sha256(tmp_path / "a.bin")
    assert other != digest
    # A shorter file of the same seed is a prefix of the longer one.
    make_file(tmp_path / "short.bin", 1000, seed=7)
    assert (tmp_path / "short.bin").read_bytes() == data[:1000]
    assert make_file(tmp_path / "empty.bin", 0, seed=7) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("name", ["", "API-docs", "api docs", "../api", "api-", "api.png"])
def test_a_screenshot_name_is_lowercase_words_joined_by_dashes(name: str) -> None:
    with pytest.raises(ValueError, match="lowercase words"):
        screenshot(None, name)  # type: ignore[arg-type]  # refused before the page is used


def test_playwright_on_its_own_thread_leaves_asyncio_on_the_main_thread_free(
    browser: Browser, browser_thread: BrowserThread
) -> None:
    """Playwright's sync API leaves its loop set as the running loop of the thread that calls
    it; on its own thread that stays out of the way of asyncio here."""

    def open_and_close_a_page() -> str:
        opened = browser.new_page()
        opened.set_content("<p>hello</p>")
        text = opened.inner_text("p")
        opened.close()
        return text

    assert not browser_thread.current
    assert browser_thread.call(open_and_close_a_page) == "hello"
    asyncio.run(asyncio.sleep(0))
