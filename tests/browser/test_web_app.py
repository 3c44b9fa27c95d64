"""The web application end to end, in Debian's Chromium against a real cluster (a proxy, two
storage nodes with their rsync daemons, moto's S3 server): what a new user does from the
first page, with the browser's own network cut and throttled where the tests need it.

Uploads go through the page's own script (tus-js-client, the sha256 worker); the tests read
what the page shows and check it against what the server says.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Dialog, FilePayload, Page, Request, expect

from tests.browser.kit import assert_only_local, screenshot, screenshot_phone
from tests.browser.pages import api_token, make_file, register
from tests.clusterkit import RemoteCluster, eventually

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MiB = 2**20
NASTY = "<img src=x onerror=alert(1)>.png"
UPLOAD_TIMEOUT_MS = 120_000


class Network:
    """This page's network as Chromium's DevTools emulate it: throttled uploads, and cut."""

    def __init__(self, page: Page, bytes_per_second: int) -> None:
        self._page = page
        self._cdp = page.context.new_cdp_session(page)
        self._cdp.send("Network.enable")
        self._rate = bytes_per_second
        self._apply(offline=False)

    def _apply(self, *, offline: bool) -> None:
        self._cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": offline,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": self._rate,
            },
        )

    def cut(self) -> None:
        self._apply(offline=True)
        self._page.context.set_offline(True)  # navigator.onLine and the offline event too

    def restore(self) -> None:
        self._page.context.set_offline(False)
        self._apply(offline=False)


def throttle(page: Page, bytes_per_second: int) -> Network:
    """Slow this page's uploads to ``bytes_per_second`` (Chromium's network emulation)."""
    return Network(page, bytes_per_second)


def percent(page: Page, row: str = "li.upload") -> int:
    text = page.locator(row).first.locator(".percent").inner_text()
    found = re.search(r"(\d+)", text)
    return int(found[1]) if found else 0


def server_offset(cluster: RemoteCluster, token: str, name: str) -> tuple[int, int] | None:
    """(offset, total) of the user's unfinished upload named ``name``, as the server has it."""
    status, body = cluster.proxy.request(
        "GET", "/storage/tmp-upload/", headers={"Authorization": f"JWT {token}"}
    )
    assert status == 200, body
    for upload in body["results"]:
        if upload["filename"] == name:
            return int(upload["offset"]), int(upload["total"] or 0)
    return None


def file_named(cluster: RemoteCluster, token: str, name: str) -> dict[str, Any] | None:
    status, body = cluster.proxy.request(
        "GET", "/storage/files/", headers={"Authorization": f"JWT {token}"}
    )
    assert status == 200, body
    return next((f for f in body["results"] if f["filename"] == name), None)


def detail(cluster: RemoteCluster, token: str, file_id: str) -> dict[str, Any]:
    status, body = cluster.proxy.request(
        "GET", f"/storage/files/{file_id}/", headers={"Authorization": f"JWT {token}"}
    )
    assert status == 200, body
    return dict(body)


def choose(page: Page, path: Path) -> None:
    page.set_input_files("#files", str(path))


def wait_verified(page: Page, name: str) -> None:
    row = page.locator(f'li.upload[data-filename="{name}"]')
    expect(row).to_have_attribute("data-state", "verified", timeout=UPLOAD_TIMEOUT_MS)


def sign_up(page: Page, cluster: RemoteCluster, username: str) -> str:
    """A new account through the register form; returns an API token for it."""
    password = "Correct-Horse-" + username[::-1]
    register(page, cluster.proxy.url, username, password)
    expect(page).to_have_url(f"{cluster.proxy.url}/archives/")
    return api_token(cluster, username, password)


# ---------------------------------------------------------------- the whole journey


def test_a_new_user_uploads_watches_it_back_up_downloads_uncaches_caches_and_deletes(
    page: Page, context: BrowserContext, cluster: RemoteCluster, tmp_path: Path
) -> None:
    base = cluster.proxy.url
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login/")
    screenshot(page, "login")
    page.goto(f"{base}/register/")
    screenshot(page, "register")
    token = sign_up(page, cluster, "olivia")
    size = 40 * MiB
    digest = make_file(tmp_path / "holiday.mov", size, seed=11)

    # A second tab on the list, opened before the file exists: it shows it live.
    watcher = context.new_page()
    watcher.goto(f"{base}/archives/")
    expect(watcher.get_by_text("Nothing here yet")).to_be_visible()

    page.goto(f"{base}/archives/new/")
    throttle(page, 8 * MiB)  # about 5 s: long enough to watch the bar move
    choose(page, tmp_path / "holiday.mov")
    row = page.locator('li.upload[data-filename="holiday.mov"]')
    expect(row).to_have_attribute("data-state", "uploading")
    expect(row.locator(".percent")).to_have_text(re.compile(r"^[1-9]\d? %$"))  # under way
    screenshot(page, "upload")
    wait_verified(page, "holiday.mov")
    expect(row.locator(".percent")).to_have_text("100 %")
    bar = row.locator("progress")
    assert bar.evaluate("p => p.value === p.max"), "the bar is full"
    expect(row).to_contain_text(digest)  # the sha256 the worker computed, which matched

    expect(watcher.locator("#files")).to_contain_text("holiday.mov", timeout=20_000)
    watcher.close()

    stored = file_named(cluster, token, "holiday.mov")
    assert stored is not None and stored["sha256"] == digest and stored["size"] == size
    page.goto(f"{base}/archives/")
    expect(page.get_by_role("link", name="holiday.mov")).to_be_visible()
    page.get_by_role("link", name="holiday.mov").click()
    expect(page).to_have_url(f"{base}/archives/{stored['id']}/")
    navigations = page.evaluate("performance.getEntriesByType('navigation').length")
    # Parts turn green as the node mirrors them, with no reload.
    parts = page.locator("#parts tr.part")
    expect(page.locator("#state")).to_have_text("backed up", timeout=60_000)
    expect(parts).to_have_count(8)  # 40 MiB in the test cluster's 5 MiB parts
    expect(page.locator("#parts tr.part-uploaded")).to_have_count(8)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == navigations
    assert page.url == f"{base}/archives/{stored['id']}/"
    expect(page.locator("#replicas")).to_contain_text("2 confirmed", timeout=30_000)
    screenshot(page, "archive")
    screenshot_phone(page, "archive")

    with page.expect_download() as wanted:
        page.locator("#download").click()
    saved = tmp_path / "downloaded.mov"
    wanted.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest

    page.locator("#uncache").click()
    expect(page.locator("#state")).to_have_text("remote only")
    expect(page.locator("#cache")).to_be_visible()
    expect(page.locator("#download")).to_have_count(0)
    assert detail(cluster, token, stored["id"])["remote_state"] == "remote"

    page.locator("#cache").click()
    expect(page.locator("#state")).to_contain_text(re.compile("restoring|backed up"))
    navigations = page.evaluate("performance.getEntriesByType('navigation').length")
    expect(page.locator("#state")).to_have_text("backed up", timeout=60_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == navigations
    expect(page.locator("#download")).to_be_visible()

    page.get_by_role("link", name="Delete this file…").click()
    expect(page.get_by_role("heading", name=re.compile("Delete “holiday.mov”"))).to_be_visible()
    page.get_by_role("button", name="Delete it").click()
    expect(page).to_have_url(f"{base}/archives/")
    expect(page.get_by_role("link", name="holiday.mov")).to_have_count(0)
    assert file_named(cluster, token, "holiday.mov") is None
    assert_only_local(page)


def test_the_pages_look_right_on_a_desktop_and_a_phone(
    page: Page, cluster: RemoteCluster, tmp_path: Path
) -> None:
    base = cluster.proxy.url
    sign_up(page, cluster, "pablo")
    for index in range(3):
        path = tmp_path / f"photo-{index + 1}.jpg"
        make_file(path, 300_000 + index, seed=index)
        page.goto(f"{base}/archives/new/")
        choose(page, path)
        wait_verified(page, path.name)
    page.goto(f"{base}/archives/")
    expect(page.locator("#files tbody tr")).to_have_count(3)
    expect(page.locator("#files")).to_contain_text("backed up", timeout=60_000)
    screenshot(page, "archives")
    screenshot_phone(page, "archives")
    page.goto(f"{base}/archives/new/")
    screenshot_phone(page, "upload")
    page.goto(f"{base}/profile/")
    expect(page.get_by_text("Your files use")).to_be_visible()
    screenshot(page, "profile")
    assert_only_local(page)


# ---------------------------------------------------------------- resuming


def test_closing_the_page_mid_upload_and_choosing_the_file_again_continues_from_the_server_offset(
    page: Page, context: BrowserContext, cluster: RemoteCluster, tmp_path: Path
) -> None:
    base = cluster.proxy.url
    token = sign_up(page, cluster, "quentin")
    size = 40 * MiB
    path = tmp_path / "backup.tar"
    digest = make_file(path, size, seed=21)
    page.goto(f"{base}/archives/new/")
    throttle(page, 4 * MiB)
    choose(page, path)
    # Shown progress never runs ahead of what the server acknowledged.
    while True:
        shown = percent(page)
        standing = server_offset(cluster, token, "backup.tar")
        if standing is not None:
            offset, total = standing
            assert shown <= offset * 100 // total + 1, (shown, offset, total)
            if offset >= 16 * MiB:
                break
        time.sleep(0.2)
    page.close()  # the tab is closed mid-upload

    again = context.new_page()
    requests: list[Request] = []
    again.on("request", lambda request: requests.append(request))
    again.goto(f"{base}/archives/new/")
    listed = again.locator('#unfinished li[data-filename="backup.tar"]')
    expect(listed).to_contain_text("choose this file again to resume")
    kept = int(listed.get_attribute("data-offset") or 0)
    assert kept >= 16 * MiB
    choose(again, path)
    wait_verified(again, "backup.tar")
    tus = [r for r in requests if "/files/" in r.url]
    assert not [
        r for r in tus if r.method == "POST" and "x-http-method-override" not in r.headers
    ], "no new upload was started"
    patches = [r for r in tus if r.method == "PATCH"]
    assert patches and int(patches[0].headers["upload-offset"]) >= kept
    stored = file_named(cluster, token, "backup.tar")
    assert stored is not None and stored["sha256"] == digest


def test_an_upload_resumes_by_itself_when_the_network_comes_back(
    page: Page, context: BrowserContext, cluster: RemoteCluster, tmp_path: Path
) -> None:
    base = cluster.proxy.url
    token = sign_up(page, cluster, "rosa")
    size = 40 * MiB
    path = tmp_path / "scans.zip"
    digest = make_file(path, size, seed=31)
    page.goto(f"{base}/archives/new/")
    network = throttle(page, 2 * MiB)
    choose(page, path)
    row = page.locator('li.upload[data-filename="scans.zip"]')
    eventually(
        lambda: (server_offset(cluster, token, "scans.zip") or (0, 0))[0] >= 8 * MiB or None,
        60, "a first chunk acknowledged",
    )  # fmt: skip
    network.cut()
    expect(row).to_have_attribute("data-state", re.compile("retrying|stalled"), timeout=30_000)
    held = percent(page)
    page.wait_for_timeout(2_000)
    assert percent(page) == held, "nothing is acknowledged while offline"
    network.restore()
    wait_verified(page, "scans.zip")
    assert int(row.get_attribute("data-retries") or 0) >= 1
    stored = file_named(cluster, token, "scans.zip")
    assert stored is not None and stored["sha256"] == digest


# ---------------------------------------------------------------- web security


def test_a_post_without_its_csrf_token_is_refused(
    page: Page, cluster: RemoteCluster, tmp_path: Path
) -> None:
    base = cluster.proxy.url
    token = sign_up(page, cluster, "sven")
    path = tmp_path / "keep.txt"
    path.write_bytes(b"keep me")
    page.goto(f"{base}/archives/new/")
    choose(page, path)
    wait_verified(page, "keep.txt")
    stored = file_named(cluster, token, "keep.txt")
    assert stored is not None
    statuses = page.evaluate(
        """async (id) => {
            const form = await fetch(`/archives/${id}/delete`, {method: "POST",
                body: new URLSearchParams({})});
            const api = await fetch(`/storage/files/${id}/`, {method: "DELETE"});
            const token = document.querySelector('meta[name="csrf-token"]').content;
            const wrong = await fetch(`/storage/files/${id}/`, {method: "DELETE",
                headers: {"X-CSRF-Token": token + "x"}});
            return [form.status, api.status, wrong.status];
        }""",
        stored["id"],
    )
    assert statuses == [403, 403, 403]
    assert file_named(cluster, token, "keep.txt") is not None


def test_a_filename_with_markup_is_shown_as_text(page: Page, cluster: RemoteCluster) -> None:
    base = cluster.proxy.url
    token = sign_up(page, cluster, "tomas")
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    page.goto(f"{base}/archives/new/")
    nasty: FilePayload = {"name": NASTY, "mimeType": "image/png", "buffer": b"not a picture"}
    page.set_input_files("#files", files=[nasty])
    wait_verified(page, NASTY)
    stored = file_named(cluster, token, NASTY)
    assert stored is not None
    page.goto(f"{base}/archives/")
    expect(page.get_by_role("link", name=NASTY)).to_be_visible()
    page.get_by_role("link", name=NASTY).click()
    expect(page.locator("h1.filename")).to_have_text(NASTY)
    assert page.locator("img[src='x']").count() == 0
    page.wait_for_timeout(500)
    assert dialogs == []
    assert json.dumps(NASTY) in json.dumps(stored["filename"])


def test_logging_in_works_with_the_keyboard_alone(page: Page, cluster: RemoteCluster) -> None:
    base = cluster.proxy.url
    register(page, base, "ulla", "Correct-Horse-allu")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{base}/login/")
    page.goto(f"{base}/archives/new/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/archives/new/$"))
    page.keyboard.press("Tab")  # the skip link comes first
    expect(page.locator(".skip")).to_be_focused()
    page.get_by_label("Username", exact=True).focus()
    page.keyboard.type("ulla")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password", exact=True)).to_be_focused()
    page.keyboard.type("Correct-Horse-allu")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/archives/new/")
    expect(page.get_by_label("Files", exact=True)).to_be_visible()
