"""Steps the page tests share: an account made and used through the forms, as a person would
(fields found by their labels, buttons by their names), an API token for the same account,
and files of known content to upload.

    register(page, cluster.proxy.url, "alice", "Correct-Horse-9")
    login(page, cluster.proxy.url, "alice", "Correct-Horse-9")
    digest = make_file(tmp_path / "photo.bin", 3 * 2**20 + 5, seed=1)
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from playwright.sync_api import Page

from tests.clusterkit import Cluster

_BLOCK = 1 << 20


def register(
    page: Page,
    base: str,
    username: str,
    password: str,
    email: str | None = None,
    *,
    password_again: str | None = None,
) -> None:
    """Fill in ``/register/`` and press Register. ``password_again`` is the password unless
    given (a test of a mistyped repeat gives it). Returns when the answer has loaded."""
    page.goto(f"{base}/register/")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password again", exact=True).fill(
        password if password_again is None else password_again
    )
    if email is not None:
        page.get_by_label("Email (optional)", exact=True).fill(email)
    page.get_by_role("button", name="Register", exact=True).click()
    page.wait_for_load_state()


def login(page: Page, base: str, username: str, password: str) -> None:
    """Fill in ``/login/`` and press Log in. Returns when the answer has loaded."""
    page.goto(f"{base}/login/")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.wait_for_load_state()


def api_token(cluster: Cluster, username: str, password: str) -> str:
    """A JSON API token for an existing account, from ``/api-token-auth/``."""
    status, body = cluster.proxy.request(
        "POST", "/api-token-auth/",
        json.dumps({"username": username, "password": password}),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200, body
    return str(body["token"])


def make_file(path: Path, size: int, seed: int) -> str:
    """Write ``size`` pseudo-random bytes fixed by ``seed`` to ``path``, a block at a time
    (memory stays flat in ``size``); return their sha256 (hex).

    The same ``(size, seed)`` always gives the same bytes, and a shorter file of the same
    seed is a prefix of a longer one.
    """
    source = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left > 0:
            block = source.randbytes(_BLOCK)[: min(left, _BLOCK)]
            out.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file, read a block at a time: for what a page downloaded."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
