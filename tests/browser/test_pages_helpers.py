"""``tests.browser.pages`` drives forms by their labels: tried here on stand-in pages with the
labels and buttons the real ``/register/`` and ``/login/`` pages are to have, served on
127.0.0.1, until those pages exist."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from playwright.sync_api import Page, expect

from tests.browser.kit import assert_only_local
from tests.browser.pages import login, register

pytestmark = [pytest.mark.slow, pytest.mark.browser]

_FIELD = '<label for="{id}">{label}</label><input id="{id}" name="{id}" type="{type}">'
_FORMS = {
    "/register/": [
        ("username", "Username", "text"),
        ("password", "Password", "password"),
        ("password2", "Password again", "password"),
        ("email", "Email (optional)", "email"),
        ("Register", "", "submit"),
    ],
    "/login/": [
        ("username", "Username", "text"),
        ("password", "Password", "password"),
        ("Log in", "", "submit"),
    ],
}


def _form(path: str) -> bytes:
    parts = []
    for name, label, kind in _FORMS[path]:
        if kind == "submit":
            parts.append(f"<button type=submit>{name}</button>")
        else:
            parts.append(_FIELD.format(id=name, label=label, type=kind))
    body = f'<form method=post action="{path}">{"".join(parts)}</form>'
    return f"<!DOCTYPE html><title>form</title>{body}".encode()


class _StandIn(BaseHTTPRequestHandler):
    sent: list[tuple[str, dict[str, list[str]]]]

    def do_GET(self) -> None:
        page = _form(self.path) if self.path in _FORMS else b"<!DOCTYPE html><h1>Done</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.sent.append((self.path, parse_qs(self.rfile.read(length).decode())))
        self.send_response(303)
        self.send_header("Location", "/done/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[tuple[str, list[tuple[str, dict[str, list[str]]]]]]:
    """The stand-in site's base URL, and the forms posted to it."""
    sent: list[tuple[str, dict[str, list[str]]]] = []
    handler = type("Handler", (_StandIn,), {"sent": sent})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_register_fills_each_field_by_its_label_and_presses_register(
    page: Page, stand_in: tuple[str, list[tuple[str, dict[str, list[str]]]]]
) -> None:
    base, sent = stand_in
    register(page, base, "alice", "Correct-Horse-9", "alice@example.org")
    register(page, base, "bob", "Correct-Horse-9", password_again="typo")
    expect(page.get_by_role("heading", name="Done")).to_be_visible()
    assert sent == [
        ("/register/", {
            "username": ["alice"], "password": ["Correct-Horse-9"],
            "password2": ["Correct-Horse-9"], "email": ["alice@example.org"],
        }),
        ("/register/", {
            "username": ["bob"], "password": ["Correct-Horse-9"], "password2": ["typo"],
        }),
    ]  # fmt: skip
    assert_only_local(page)


def test_login_fills_username_and_password_and_presses_log_in(
    page: Page, stand_in: tuple[str, list[tuple[str, dict[str, list[str]]]]]
) -> None:
    base, sent = stand_in
    login(page, base, "alice", "Correct-Horse-9")
    expect(page.get_by_role("heading", name="Done")).to_be_visible()
    assert sent == [("/login/", {"username": ["alice"], "password": ["Correct-Horse-9"]})]
