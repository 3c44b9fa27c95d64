"""The console's nodes page and overview in Debian's Chromium against a real cluster (issue
12): staff add a third, real node through the form and see it come up, drain it, remove it
through its confirm page, and read the overview of a replicated file. Screenshots of both
pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.kit import assert_only_local, screenshot
from tests.browser.pages import login
from tests.clusterkit import STAFF, RemoteCluster, eventually
from tests.nodeproc import NodeProcess

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_staff_add_a_node_that_comes_up_drain_it_remove_it_and_read_the_overview(
    page: Page, cluster: RemoteCluster, tmp_path: Path
) -> None:
    base = cluster.proxy.url
    extra = NodeProcess(tmp_path / "node3", name="node3", zone="c")
    try:
        extra.start()
        login(page, base, *STAFF)
        page.goto(f"{base}/admin/nodes/")
        expect(page.locator('#nodes tr[data-node="node1"]')).to_have_attribute("data-status", "up")

        page.get_by_label("Name", exact=True).fill("node3")
        page.get_by_label("URL", exact=True).fill("ftp://127.0.0.1:1")
        page.get_by_role("button", name="Add node").click()
        expect(page.locator("#url-error")).to_contain_text("url must look like http://HOST:PORT")
        page.get_by_label("URL", exact=True).fill(extra.url)
        page.get_by_label("rsync URL", exact=True).fill(
            f"rsync://pyarchive@127.0.0.1:{extra.rsync_port}/incoming"
        )
        page.get_by_label("Zone", exact=True).fill("c")
        page.get_by_role("button", name="Add node").click()
        expect(page.locator("p.notice")).to_contain_text("Node node3 added")
        row = page.locator('#nodes tr[data-node="node3"]')
        expect(row).to_be_visible()
        # No reload: the monitor's node.status event reaches staff, and the table is redrawn.
        expect(row).to_have_attribute("data-status", "up", timeout=20_000)
        expect(row.locator("meter")).to_have_count(1)
        expect(row).to_contain_text("free of")
        screenshot(page, "console-nodes")
        extra.stop()  # it goes down, and staff see it without a reload
        expect(row).to_have_attribute("data-status", "down", timeout=20_000)
        extra.start()
        expect(row).to_have_attribute("data-status", "up", timeout=20_000)

        row.get_by_role("button", name="Drain").click()
        expect(page.locator("p.notice")).to_contain_text("Node node3 is being drained")
        expect(row).to_have_attribute("data-status", "draining")
        expect(row.get_by_role("button", name="Reactivate")).to_be_visible()

        # With node3 drained, a new file's copies go to node1 and node2 only.
        file_id = cluster.upload(b"kept twice, backed up once" * 1000, "overview.bin")["file_id"]
        eventually(lambda: cluster.confirmed(file_id, 2), what="two confirmed replicas")

        row.get_by_role("link", name="Remove…").click()
        expect(page.get_by_role("heading", name="Remove node “node3”?")).to_be_visible()
        page.get_by_role("button", name="Remove it").click()
        expect(page.locator("p.notice")).to_contain_text("Node node3 removed.")
        expect(page.locator('#nodes tr[data-node="node3"]')).to_have_count(0)

        page.get_by_role("navigation", name="Console").get_by_role("link", name="Overview").click()
        expect(page).to_have_url(f"{base}/admin/overview/")
        expect(page.locator("#stored")).to_have_attribute("data-count", "1")
        expect(page.locator("#replicated")).to_have_attribute("data-count", "1")
        expect(page.locator("#short")).to_have_attribute("data-count", "0")
        expect(page.locator("#space")).to_contain_text("on 2 of 2 nodes")
        screenshot(page, "console-overview")
        assert_only_local(page)
    finally:
        extra.stop()


def test_a_node_drained_from_the_table_goes_on_following_events_without_sending_the_form_again(
    page: Page, cluster: RemoteCluster
) -> None:
    """The drain form's answer is drawn at the form's address (/admin/nodes/<name>/), which a
    GET answers with the node's own page: the live refresher re-read that, found other regions
    and reloaded, which sent the drain again, over and over (CI failed on it, 2026-12-02). Now
    the page takes its own address, keeps its document and redraws only the table."""
    base = cluster.proxy.url
    added: list[str] = []

    def add(name: str) -> None:
        status, body = cluster.staff(
            "POST", "/api/nodes/",
            {"name": name, "url": "http://127.0.0.1:1", "zone": "z",
             "rsync_url": "rsync://pyarchive@127.0.0.1:1/incoming"},
        )  # fmt: skip
        assert status == 201, body
        added.append(name)

    try:
        add("asleep")
        login(page, base, *STAFF)
        page.goto(f"{base}/admin/nodes/")
        row = page.locator('#nodes tr[data-node="asleep"]')
        row.get_by_role("button", name="Drain").click()
        expect(page.locator("p.notice")).to_contain_text("Node asleep is being drained")
        expect(page).to_have_url(f"{base}/admin/nodes/")
        page.evaluate("window.sameDocument = true")

        add("later")  # node.changed reaches staff: the table is redrawn in place
        expect(page.locator('#nodes tr[data-node="later"]')).to_be_visible()
        expect(row).to_have_attribute("data-status", "draining")
        assert page.evaluate("window.sameDocument === true"), "the page was loaded again"
        expect(page.locator("p.notice")).to_contain_text("Node asleep is being drained")

        page.reload()  # a GET of the nodes page, not the drain once more
        expect(page.locator("p.notice")).to_have_count(0)
        expect(page.get_by_role("heading", name="Storage nodes")).to_be_visible()
    finally:
        for name in added:
            status, body = cluster.staff("DELETE", f"/api/nodes/{name}/")
            assert status in (200, 204), body
