"""The whole system with real processes: a proxy, storage nodes with their rsync daemons.

Time-based behaviour that crosses processes (pings, down after missed pings, the grace
period, retries) runs on real clocks here with short settings; the same rules are tested
with ``task.Clock`` in ``tests/test_replication.py``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import PyArchiveClient
from tests.clusterkit import Cluster, eventually
from tests.nodeproc import NodeProcess

pytestmark = pytest.mark.slow


def stored_copies(node: NodeProcess, sha256: str) -> list[Path]:
    return sorted((node.data_dir / "replicas").glob(f"*/*-{sha256}"))


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    count = getattr(request, "param", 2)
    running = Cluster(tmp_path, f"sqlite:///{tmp_path}/meta.sqlite3", count).start()
    try:
        yield running
    finally:
        running.stop()


def test_an_upload_gets_two_verified_replicas_and_leaves_staging(cluster: Cluster) -> None:
    content = os.urandom(3 * 2**20 + 17)
    sha = hashlib.sha256(content).hexdigest()
    done = cluster.upload(content)
    holders = eventually(lambda: cluster.confirmed(done["file_id"], 2), 20, "two replicas")
    assert sorted(holders) == ["node1", "node2"]
    for node in cluster.nodes:
        [copy] = stored_copies(node, sha)
        assert copy.read_bytes() == content
    assert eventually(
        lambda: not list((cluster.proxy.data_dir / "blobs").glob(f"*/{sha}.*")), 10,
        "the proxy's own copy to be released",
    )  # fmt: skip
    assert not list((cluster.proxy.data_dir / "staging").iterdir())
    # Ranged downloads through the redirect reassemble the file; no credentials go to nodes.
    first = cluster.download(done["file_id"], "0-29999")
    second = cluster.download(done["file_id"], f"30000-{len(content) - 1}")
    assert first[0] == second[0] == 206
    assert first[1] + second[1] == content
    assert "/download/" in first[2] and str(cluster.proxy.port) not in first[2]


def test_downloads_go_to_a_live_replica_and_are_503_when_none_is_left(cluster: Cluster) -> None:
    content = os.urandom(2**20)
    done = cluster.upload(content)
    eventually(lambda: cluster.confirmed(done["file_id"], 2), 20, "two replicas")
    eventually(lambda: not list((cluster.proxy.data_dir / "blobs").glob("*/*")), 10, "release")
    cluster.node("node1").stop()
    eventually(lambda: cluster.node_status("node1") == "down", 10, "node1 down")
    code, body, url = cluster.download(done["file_id"])
    assert (code, body) == (200, content)
    assert f":{cluster.node('node2').port}/" in url
    cluster.node("node2").stop()
    eventually(lambda: cluster.node_status("node2") == "down", 10, "node2 down")
    status, answer = cluster.user("GET", f"/storage/download/{done['file_id']}/")
    assert status == 503 and "detail" in answer


@pytest.mark.parametrize("cluster", [3], indirect=True)
def test_a_node_down_past_the_grace_period_is_replaced_and_the_surplus_removed_on_return(
    cluster: Cluster,
) -> None:
    content = os.urandom(2**20 + 5)
    sha = hashlib.sha256(content).hexdigest()
    done = cluster.upload(content)
    holders = eventually(lambda: cluster.confirmed(done["file_id"], 2), 20, "two replicas")
    eventually(lambda: not list((cluster.proxy.data_dir / "blobs").glob("*/*")), 10, "release")
    lost = cluster.node(holders[0])
    lost.stop()
    spare = next(n for n in cluster.nodes if n.name not in holders)
    eventually(lambda: stored_copies(spare, sha), 30, "a new replica on the third node")
    assert stored_copies(spare, sha)[0].read_bytes() == content
    lost.start()
    eventually(
        lambda: sum(len(stored_copies(n, sha)) for n in cluster.nodes) == 2, 30,
        "the surplus copy to be removed",
    )  # fmt: skip
    live = eventually(lambda: cluster.confirmed(done["file_id"], 2), 20, "two replicas again")
    zones = {cluster.node(name).zone for name in live}
    assert zones == {"a", "b"}, f"the copies kept are spread over both zones: {live}"


def test_a_corrupted_replica_is_found_by_scrub_quarantined_and_replaced(cluster: Cluster) -> None:
    content = os.urandom(2**20 + 99)
    sha = hashlib.sha256(content).hexdigest()
    done = cluster.upload(content)
    eventually(lambda: cluster.confirmed(done["file_id"], 2), 20, "two replicas")
    eventually(lambda: not list((cluster.proxy.data_dir / "blobs").glob("*/*")), 10, "release")
    victim = cluster.node("node1")
    [copy] = stored_copies(victim, sha)
    raw = bytearray(copy.read_bytes())
    raw[12345] ^= 0x01
    copy.write_bytes(bytes(raw))
    status, body = cluster.staff("POST", "/api/jobs/scrub/run")
    assert status == 200 and body["result"]["corrupt"] == 1, body
    assert any(r["state"] == "quarantined" for r in cluster.replicas(done["file_id"]))
    eventually(lambda: cluster.confirmed(done["file_id"], 2), 30, "re-replicated")
    for node in cluster.nodes:
        assert [p.read_bytes() for p in stored_copies(node, sha)] == [content]


def test_a_node_added_while_running_receives_files_without_a_restart(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, f"sqlite:///{tmp_path}/meta.sqlite3", 1).start()
    try:
        done = cluster.upload(os.urandom(2**20))
        eventually(lambda: cluster.confirmed(done["file_id"], 1), 20, "one replica")
        time.sleep(1)  # a few replication passes: with one node it stays under-replicated
        assert cluster.confirmed(done["file_id"], 1)
        assert list((cluster.proxy.data_dir / "blobs").glob("*/*")), "kept locally meanwhile"
        late = NodeProcess(tmp_path / "node9", name="node9", zone="b").start()
        cluster.nodes.append(late)
        cluster.register(late)
        holders = eventually(lambda: cluster.confirmed(done["file_id"], 2), 20, "a second copy")
        assert "node9" in holders
    finally:
        cluster.stop()


def test_a_node_killed_during_its_rsync_never_gets_an_unverified_replica(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, f"sqlite:///{tmp_path}/meta.sqlite3", 3).start()
    try:
        content = os.urandom(160 * 2**20)
        sha = hashlib.sha256(content).hexdigest()
        path = tmp_path / "big.bin"
        path.write_bytes(content)
        with PyArchiveClient(cluster.proxy.url, cluster.token) as client:
            done = client.upload(path, chunk_size=16 << 20)
        victim = eventually(
            lambda: next((n for n in cluster.nodes if list((n.data_dir / "incoming").iterdir())),
                         None),
            20, "an rsync to start",
        )  # fmt: skip
        victim.kill()
        holders = eventually(lambda: cluster.confirmed(done["file_id"], 2), 60, "two replicas")
        for name in holders:
            [copy] = stored_copies(cluster.node(name), sha)
            assert hashlib.sha256(copy.read_bytes()).hexdigest() == sha
    finally:
        cluster.stop()
