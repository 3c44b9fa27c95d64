"""The console's nodes page and overview (issue 12), on a real proxy over each database: staff
only; adding a node with the API's validation; drain and reactivate; removal confirmed, and
refused with the reason while the node holds the only copy; a node's recent trouble from the
system log; the overview's figures, the low-space warning and the lists behind two counts,
for a known catalogue."""

from __future__ import annotations

import doctest
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
import pytest_twisted

from common.db import Txn
from proxy.catalog import console_store
from proxy.cluster import nodestore
from proxy.cluster.nodestore import CONFIRMED, DRAINING
from proxy.remote.states import MIRRORED, MIRRORING, REMOTE
from proxy.web.pages import console_nodes
from tests.conftest import RunningProxy, proxy_with
from tests.test_nodes_api import upload
from tests.test_web_console import staff_browser
from tests.webclient import Page, WebClient

# No loop of the proxy touches the nodes a test sets up: the monitor's first ping happens at
# start, before any node exists, and the next one an hour later.
QUIET = {
    "node_ping_interval": 3600.0,
    "replication_interval": 3600.0,
    "mirror_sync_interval": 3600.0,
    "scrub_interval": 3600.0,
}
NODE = {
    "name": "n1",
    "url": "http://127.0.0.1:9",
    "rsync_url": "rsync://pyarchive@127.0.0.1:9/incoming",
    "zone": "a",
}


@pytest_twisted.async_yield_fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_with(database_url, tmp_path / "proxy", page_size=1, **QUIET) as running:
        yield running


# -- the catalogue, set up directly where only the database can say it


def _add_node(txn: Txn, name: str, zone: str = "a") -> None:
    nodestore.add_node(txn, name, f"http://127.0.0.1:9/{name}", "rsync://127.0.0.1:9/x", zone, 1.0)


def _seen(txn: Txn, name: str, free: int, total: int) -> None:
    nodestore.record_ping(txn, name, now=1000.0, free_bytes=free, total_bytes=total, rtt_ms=2.5)


def _blob_of(txn: Txn, file_id: str) -> int:
    return int(
        txn.scalar(
            "SELECT v.blob_id FROM files f JOIN versions v ON v.file_id = f.id"
            " AND v.number = f.current_version WHERE f.id = ?",
            (file_id,),
        )
    )


def _blob_state(
    txn: Txn, blob_id: int, state: str, *, verified: bool = False, node: str | None = None,
    detail: str = "",
) -> None:  # fmt: skip
    """Set a blob's place in the S3 tier; its local copy counts as released."""
    txn.execute(
        "UPDATE blobs SET local = 0, remote_state = ?, remote_verified = ?, mirror_node = ?,"
        " mirror_detail = ? WHERE id = ?",
        (state, int(verified), node, detail, blob_id),
    )


def _replica(txn: Txn, blob_id: int, node: str) -> None:
    nodestore.set_replica(txn, blob_id, node, CONFIRMED, 1000.0)


async def blob(site: RunningProxy, token: str, name: str, content: bytes) -> int:
    return int(await site.proxy.db.run(_blob_of, await upload(site, token, name, content)))


def row_of(page: Page, node: str) -> str:
    found = re.search(rf'<tr data-node="{re.escape(node)}"[^>]*>.*?</tr>', page.text, re.S)
    assert found is not None, page.text[:2000]
    return found[0]


def figure(page: Page, element: str) -> dict[str, str]:
    """The data attributes of the overview's element ``id="<element>"``."""
    found = re.search(rf'<[a-z]+[^>]* id="{element}"([^>]*)>', page.text)
    assert found is not None, page.text[:2000]
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', found[1]))


# -- who may look


@pytest_twisted.ensureDeferred
async def test_the_nodes_and_overview_pages_are_for_staff_only(site: RunningProxy) -> None:
    paths = [
        "/admin/nodes/", "/admin/nodes/n1/", "/admin/nodes/n1/remove", "/admin/overview/",
        "/admin/overview/short/", "/admin/overview/failing/",
    ]  # fmt: skip
    await site.proxy.db.run(_add_node, "n1")
    for path in paths:
        assert (await WebClient(site.url).get(path)).status == 303, path  # log in first
    member = WebClient(site.url)
    await member.register("alice")
    for path in paths:
        shown = await member.get(path)
        assert shown.status == 403 and "your account is not staff" in shown.text, path
    refused = await member.post("/admin/nodes/", {"csrf_token": "x", **NODE, "name": "n9"})
    assert refused.status == 403
    boss = await staff_browser(site)
    assert "n9" not in (await boss.get("/admin/nodes/")).text
    for path in paths:
        assert (await boss.get(path)).status == 200, path
    console = await boss.get("/admin/")
    assert (console.status, console.location) == (303, "/admin/overview/")


# -- the nodes page


@pytest_twisted.ensureDeferred
async def test_adding_a_node_checks_its_fields_as_the_api_does(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    bad = await boss.form("/admin/nodes/", {**NODE, "url": "ftp://127.0.0.1:9"})
    assert bad.status == 400
    assert 'id="url-error"' in bad.text and "url must look like http://HOST:PORT" in bad.text
    assert 'value="ftp://127.0.0.1:9"' in bad.text  # what was typed is kept
    assert 'data-node="n1"' not in bad.text
    no_rsync = await boss.form("/admin/nodes/", {**NODE, "rsync_url": "http://x:1/"})
    assert no_rsync.status == 400 and 'id="rsync_url-error"' in no_rsync.text
    added = await boss.form("/admin/nodes/", NODE)
    assert added.status == 200 and "Node n1 added" in added.text
    row = row_of(added, "n1")
    assert 'data-status="down"' in row and ">a</td>" in row and "never" in row
    again = await boss.form("/admin/nodes/", NODE)
    assert again.status == 409 and 'id="name-error"' in again.text
    assert "exists already" in again.text


@pytest_twisted.ensureDeferred
async def test_staff_drain_a_node_and_make_it_active_again(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    await site.proxy.db.run(_add_node, "n1")
    await site.proxy.db.run(_seen, "n1", 600, 1000)
    listed = await boss.get("/admin/nodes/")
    row = row_of(listed, "n1")
    assert 'data-status="up"' in row and "<meter" in row and 'value="400"' in row
    assert "600 B free of 1000 B" in row and "2.5 ms" in row
    drained = await boss.form("/admin/nodes/n1/", {"action": "drain"}, form_page="/admin/nodes/")
    assert drained.status == 200 and "Node n1 is being drained" in drained.text
    assert 'data-status="draining"' in row_of(drained, "n1")
    assert (await site.proxy.db.run(nodestore.get_node, "n1")).state == DRAINING
    back = await boss.form("/admin/nodes/n1/", {"action": "reactivate"}, form_page="/admin/nodes/")
    assert back.status == 200 and 'data-status="up"' in row_of(back, "n1")
    odd = await boss.form("/admin/nodes/n1/", {"action": "explode"}, form_page="/admin/nodes/")
    assert odd.status == 400 and "Unknown action" in odd.text
    gone = await boss.form("/admin/nodes/n7/", {"action": "drain"}, form_page="/admin/nodes/")
    assert gone.status == 404 and "Node not found" in gone.text
    assert (await boss.get("/admin/nodes/n7/")).status == 404


@pytest_twisted.ensureDeferred
async def test_removing_a_node_is_confirmed_and_refused_while_it_holds_the_only_copy(
    site: RunningProxy,
) -> None:
    token = await site.register_and_login("alice")
    only = await blob(site, token, "only.bin", b"the one copy is on n1")
    for name in ("n1", "n2"):
        await site.proxy.db.run(_add_node, name)
    await site.proxy.db.run(_seen, "n2", 500, 1000)
    await site.proxy.db.run(_blob_state, only, "local")
    await site.proxy.db.run(_replica, only, "n1")
    boss = await staff_browser(site)
    confirm = await boss.get("/admin/nodes/n1/remove")
    assert confirm.status == 200 and "Remove node “n1”?" in confirm.text
    assert 'action="/admin/nodes/n1/remove"' in confirm.text
    assert "its 1 confirmed replica;" in confirm.text
    refused = await boss.post("/admin/nodes/n1/remove", {"csrf_token": confirm.csrf})
    assert refused.status == 409
    reason = "Node n1 was not removed: Node &#39;n1&#39; holds the only copy of 1 files"
    assert reason in refused.text
    assert 'data-node="n1"' in refused.text
    no_csrf = await boss.post("/admin/nodes/n1/remove", {})
    assert no_csrf.status == 403
    await site.proxy.db.run(_replica, only, "n2")  # a second copy, on a node that is up
    removed = await boss.form("/admin/nodes/n1/remove", {})
    assert removed.status == 200 and "Node n1 removed." in removed.text
    assert 'data-node="n1"' not in removed.text and 'data-node="n2"' in removed.text
    assert (await boss.get("/admin/nodes/n1/remove")).status == 404


@pytest_twisted.ensureDeferred
async def test_a_nodes_page_shows_its_own_recent_warnings_and_errors(site: RunningProxy) -> None:
    syslog = site.proxy.syslog
    for name in ("n_1", "nx1"):
        await site.proxy.db.run(_add_node, name)
    await syslog.record("warn", "replication.copy_failed", "copy of blob 7 to n_1 failed: EIO",
                        blob=7, node="n_1", attempts=1)  # fmt: skip
    await syslog.record("error", "mirror", "mirror of blob 8 failed: S3 said no",
                        job="mirror@n_1", node="n_1")  # fmt: skip
    await syslog.record("info", "node.up", "node n_1 is up", node="n_1", was="down")
    await syslog.record("warn", "node.down", "node nx1 is down", node="nx1", was="up")
    boss = await staff_browser(site)
    shown = await boss.get("/admin/nodes/n_1/")
    assert shown.status == 200
    trouble = shown.text[shown.text.index('id="trouble"') :]
    assert "copy of blob 7 to n_1 failed: EIO" in trouble and "S3 said no" in trouble
    assert trouble.index("S3 said no") < trouble.index("EIO")  # newest first
    assert "node n_1 is up" not in trouble  # info is not trouble
    assert "nx1" not in trouble  # another node's, though LIKE's _ would match it
    other = await boss.get("/admin/nodes/nx1/")
    assert "node nx1 is down" in other.text and "EIO" not in other.text


# -- the overview


async def known_catalogue(site: RunningProxy) -> None:
    """Five files of two users over four distinct contents:

    - a.txt and c.txt (both alice's: content is shared within one owner's files only)
      share 100 bytes: two replicas, mirrored and verified;
    - b.txt (alice), 200 bytes: one replica, mirroring on n1, whose last try failed;
    - d.txt (bob), 50 bytes: uncached, only in S3;
    - e.txt (bob), 10 bytes: no replica yet.
    """
    alice = await site.register_and_login("alice")
    bob = await site.register_and_login("bob")
    shared = await blob(site, alice, "a.txt", b"s" * 100)
    assert await blob(site, alice, "c.txt", b"s" * 100) == shared
    failing = await blob(site, alice, "b.txt", b"f" * 200)
    remote = await blob(site, bob, "d.txt", b"r" * 50)
    bare = await blob(site, bob, "e.txt", b"e" * 10)
    for name in ("n1", "n2"):
        await site.proxy.db.run(_add_node, name)
        await site.proxy.db.run(_seen, name, 5 if name == "n1" else 4, 100)
    await site.proxy.db.run(_add_node, "n3")  # drained: its room does not count
    await site.proxy.db.run(_seen, "n3", 1000, 1000)
    await site.proxy.db.run(nodestore.update_node, "n3", state=DRAINING)
    for node in ("n1", "n2"):
        await site.proxy.db.run(_replica, shared, node)
    await site.proxy.db.run(_replica, failing, "n1")
    await site.proxy.db.run(_blob_state, shared, MIRRORED, verified=True)
    await site.proxy.db.run(_blob_state, failing, MIRRORING, node="n1", detail="S3 said no")
    await site.proxy.db.run(_blob_state, remote, REMOTE, verified=True)
    await site.proxy.db.run(_blob_state, bare, "local")


@pytest_twisted.ensureDeferred
async def test_the_overview_adds_up_a_known_catalogue(site: RunningProxy) -> None:
    await known_catalogue(site)
    boss = await staff_browser(site)
    shown = await boss.get("/admin/overview/")
    assert shown.status == 200
    assert figure(shown, "stored") == {"count": "4", "bytes": "360"}
    assert figure(shown, "versions") == {"count": "5", "bytes": "460"}
    assert figure(shown, "replicated") == {"count": "1", "bytes": "100"}
    assert figure(shown, "backed-up") == {"count": "2", "bytes": "150"}
    assert figure(shown, "remote-only") == {"count": "1", "bytes": "50"}
    assert figure(shown, "short") == {"count": "2"}
    assert figure(shown, "failing") == {"count": "1"}
    assert figure(shown, "space") == {"free": "9", "total": "200", "low": "yes"}
    assert 'id="space-warning"' in shown.text and "4.5 % free" in shown.text
    assert 'href="/admin/overview/short/"' in shown.text
    nodes = await boss.get("/admin/nodes/")
    assert re.search(r"<td>2</td>\s*<td>1</td>", row_of(nodes, "n1"))  # replicas, backlog
    assert re.search(r"<td>1</td>\s*<td>0</td>", row_of(nodes, "n2"))

    await site.proxy.db.run(_seen, "n1", 50, 100)
    roomy = await boss.get("/admin/overview/")
    assert figure(roomy, "space") == {"free": "54", "total": "200", "low": "no"}
    assert 'id="space-warning"' not in roomy.text


@pytest_twisted.ensureDeferred
async def test_the_short_and_failing_lists_show_every_users_files_a_page_at_a_time(
    site: RunningProxy,
) -> None:
    await known_catalogue(site)
    boss = await staff_browser(site)
    first = await boss.get("/admin/overview/short/")  # one file a page in these tests
    assert first.status == 200 and "2 files, by owner and name" in first.text
    assert 'data-owner="alice"' in first.text and "b.txt" in first.text
    assert "1 of 2" in first.text and 'rel="next"' in first.text
    second = await boss.get("/admin/overview/short/?page=2")
    assert 'data-owner="bob"' in second.text and "e.txt" in second.text
    assert "0 of 2" in second.text and 'rel="next"' not in second.text
    assert "a.txt" not in first.text + second.text and "d.txt" not in first.text + second.text
    assert (await boss.get("/admin/overview/short/?page=3")).status == 404
    failing = await boss.get("/admin/overview/failing/")
    assert failing.status == 200 and "1 file, by owner and name" in failing.text
    assert "b.txt" in failing.text and "S3 said no" in failing.text
    assert "backing up to S3" in failing.text


@pytest_twisted.ensureDeferred
async def test_the_overview_warns_when_no_node_can_take_copies(site: RunningProxy) -> None:
    boss = await staff_browser(site)
    shown = await boss.get("/admin/overview/")
    assert figure(shown, "stored") == {"count": "0", "bytes": "0"}
    assert figure(shown, "space") == {"free": "0", "total": "0", "low": "yes"}
    assert "No storage node is up" in shown.text


@pytest.mark.parametrize("module", [console_store, console_nodes], ids=lambda m: m.__name__)
def test_the_examples_in_the_console_helpers_hold(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
