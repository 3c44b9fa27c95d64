"""The whole system with real processes: a proxy, storage nodes with their rsync daemons.

Time-based behaviour that crosses processes (pings, down after missed pings, the grace
period, retries) runs on real clocks here with short settings; the same rules are tested
with ``task.Clock`` in ``tests/test_replication.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from client import PyArchiveClient
from tests.nodeproc import SECRET, NodeProcess
from tests.proc import BIN, ProxyProcess

pytestmark = pytest.mark.slow
T = TypeVar("T")

FAST = {
    "PYARCHIVE_CLUSTER_SECRET": SECRET,
    "PYARCHIVE_NODE_PING_INTERVAL": "0.2s",
    "PYARCHIVE_NODE_PING_TIMEOUT": "1s",
    "PYARCHIVE_NODE_DOWN_AFTER": "2",
    "PYARCHIVE_REPLICATION_INTERVAL": "0.2s",
    "PYARCHIVE_REPLICA_GRACE": "1.5s",
    "PYARCHIVE_RSYNC_TIMEOUT": "10s",
}
STAFF = ("boss", "Staff-Pass-2024")


def eventually(check: Callable[[], T | None], timeout: float = 20.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except AssertionError as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")


class Cluster:
    def __init__(self, root: Path, database_url: str, node_count: int) -> None:
        self.root = root
        self.proxy = ProxyProcess(root / "proxy", database_url, env=FAST)
        self.nodes = [
            NodeProcess(root / f"node{i}", name=f"node{i}", zone="ab"[i % 2])
            for i in range(1, node_count + 1)
        ]
        self.staff_token = ""
        self.token = ""

    def start(self) -> Cluster:
        self.proxy.data_dir.mkdir(parents=True)
        subprocess.run(
            [str(BIN / "pyarchive-proxy"), "--data-dir", str(self.proxy.data_dir),
             "--database", self.proxy.database_url, "create-admin", STAFF[0]],
            env={**os.environ, "PYARCHIVE_ADMIN_PASSWORD": STAFF[1]}, check=True,
            capture_output=True,
        )  # fmt: skip
        self.proxy.start()
        _, body = self.proxy.request(
            "POST", "/api-token-auth/",
            json.dumps({"username": STAFF[0], "password": STAFF[1]}),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        self.staff_token = body["token"]
        self.token = self.proxy.login()
        for node in self.nodes:
            node.start()
            self.register(node)
        return self

    def register(self, node: NodeProcess) -> None:
        status, body = self.staff("POST", "/api/nodes/", {
            "name": node.name, "url": node.url, "zone": node.zone,
            "rsync_url": f"rsync://pyarchive@127.0.0.1:{node.rsync_port}/incoming",
        })  # fmt: skip
        assert status == 201, body

    def staff(self, method: str, path: str, data: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"JWT {self.staff_token}", "Content-Type": "application/json"}
        return self.proxy.request(method, path, None if data is None else json.dumps(data), headers)

    def user(self, method: str, path: str) -> tuple[int, Any]:
        return self.proxy.request(method, path, headers={"Authorization": f"JWT {self.token}"})

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.proxy.stop()

    def upload(self, content: bytes, name: str = "data.bin") -> dict[str, Any]:
        path = self.root / name
        path.write_bytes(content)
        with PyArchiveClient(self.proxy.url, self.token) as client:
            return client.upload(path, chunk_size=1 << 20)

    def replicas(self, file_id: str) -> list[dict[str, str]]:
        status, body = self.user("GET", f"/storage/files/{file_id}/")
        assert status == 200, body
        return list(body["replicas"])

    def confirmed(self, file_id: str, count: int) -> list[str] | None:
        nodes = [r["node"] for r in self.replicas(file_id) if r["state"] == "confirmed"]
        return nodes if len(nodes) == count else None

    def node(self, name: str) -> NodeProcess:
        return next(n for n in self.nodes if n.name == name)

    def node_status(self, name: str) -> str:
        _, body = self.staff("GET", "/api/nodes/")
        return str(next(n for n in body if n["name"] == name)["status"])

    def download(self, file_id: str, byte_range: str | None = None) -> tuple[int, bytes, str]:
        """``curl -L`` through the redirect, as a user would; (status, body, final URL)."""
        out = self.root / "download.out"
        args = ["curl", "-s", "-L", "-o", str(out), "-w", "%{http_code} %{url_effective}",
                "-H", f"Authorization: JWT {self.token}"]  # fmt: skip
        if byte_range:
            args += ["--range", byte_range]
        done = subprocess.run(
            [*args, f"{self.proxy.url}/storage/download/{file_id}/"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        code, url = done.stdout.split(" ", 1)
        return int(code), out.read_bytes() if out.exists() else b"", url


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
