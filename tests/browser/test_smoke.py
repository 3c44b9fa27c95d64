"""The browser harness against what the proxy serves today: its cluster is really up, and the
API documentation renders in Chromium from the proxy alone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from proxy.api.docs_page import redoc_asset_path
from tests.browser.kit import assert_only_local, require, screenshot, screenshot_phone
from tests.browser.pages import api_token
from tests.clusterkit import RemoteCluster, eventually

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_the_cluster_has_two_nodes_up_and_an_active_s3_connection(cluster: RemoteCluster) -> None:
    def both_up() -> list[dict[str, object]] | None:
        status, nodes = cluster.staff("GET", "/api/nodes/")
        assert status == 200, nodes
        return nodes if [n["status"] for n in nodes] == ["up", "up"] else None

    nodes = eventually(both_up, 20, "both nodes up")
    assert sorted(str(n["name"]) for n in nodes) == ["node1", "node2"]
    status, connections = cluster.staff("GET", "/api/s3-connections/")
    assert status == 200, connections
    assert [(c["name"], c["bucket"], c["active"], c["validation_ok"]) for c in connections] == [
        ("local", cluster.s3.bucket, True, True)
    ]
    status, health = cluster.proxy.request("GET", "/health")
    assert status == 200, health


def test_api_token_gives_a_token_for_an_account_the_cluster_has(cluster: RemoteCluster) -> None:
    token = api_token(cluster, "tester", "Correct-Horse-9")  # made by ProxyProcess.login()
    status, files = cluster.proxy.request(
        "GET", "/storage/files/", headers={"Authorization": f"JWT {token}"}
    )
    assert status == 200, files


def test_the_api_documentation_renders_in_chromium_with_nothing_from_elsewhere(
    page: Page, cluster: RemoteCluster
) -> None:
    require(None if redoc_asset_path() else "ReDoc is not fetched: run scripts/fetch-assets")
    page.goto(f"{cluster.proxy.url}/docs/redoc/")
    expect(page.get_by_role("heading", level=1, name=re.compile(r"^PyArchive\b"))).to_be_visible()
    expect(page.get_by_text("Loading the API documentation")).to_have_count(0)
    # The operations, read from the proxy's own /openapi.json, are there (the heading's
    # accessible name starts with its anchor link's).
    account = page.get_by_role("heading", level=2, name=re.compile(r"Create an account$"))
    expect(account).to_be_visible()
    assert_only_local(page)
    assert screenshot(page, "api-docs").name == "api-docs.png"
    assert screenshot_phone(page, "api-docs").name == "api-docs-phone.png"
    assert page.viewport_size == {"width": 1280, "height": 800}
