"""Whole clusters of real processes for tests: a proxy, storage nodes with their rsync daemons,
and (for ``RemoteCluster``) moto's S3 server over real HTTP with an active connection.

    with remote_cluster(root, database_url, server.bucket()) as cluster:
        cluster.upload(b"...")          # as the ordinary user ``tester``
        cluster.staff("GET", "/api/nodes/")

Blocking on purpose, like ``tests/proc.py``: the tests drive the processes with ``http.client``
and ``curl``. Time-based behaviour runs on real clocks with short settings (``FAST``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from client import PyArchiveClient
from common.s3 import S3Settings
from tests.nodeproc import SECRET, NodeProcess
from tests.proc import BIN, ProxyProcess

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
MIRROR_FAST = {
    **FAST,
    "PYARCHIVE_MIRROR_SYNC_INTERVAL": "0.3s",
    "PYARCHIVE_S3_CLEANUP_INTERVAL": "0.3s",
    "PYARCHIVE_RESTORE_RETRY_AFTER": "1",
}
NODE_FAST = {"PYARCHIVE_MIRROR_INTERVAL": "0.3s", "PYARCHIVE_MIRROR_PART_SIZE": "5MiB"}
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
        """Start the proxy and the nodes (every one of them stopped again if one fails)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Cluster:
        self.proxy.data_dir.parent.mkdir(parents=True, exist_ok=True)  # create-admin makes it
        subprocess.run(
            [str(BIN / "pyarchive-proxy"), "--data-dir", str(self.proxy.data_dir),
             "--database", self.proxy.database_url, "create-admin", STAFF[0]],
            env={**os.environ, "PYARCHIVE_ADMIN_PASSWORD": STAFF[1]}, check=True,
            capture_output=True,
        )  # fmt: skip
        for node in self.nodes:  # they start while the proxy does: two cores, not one
            node.launch()
        self.proxy.start()
        _, body = self.proxy.request(
            "POST", "/api-token-auth/",
            json.dumps({"username": STAFF[0], "password": STAFF[1]}),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        self.staff_token = body["token"]
        self.token = self.proxy.login()
        for node in self.nodes:
            node.wait_for_status("ok", 30.0)
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


class RemoteCluster(Cluster):
    """``Cluster`` with two nodes, mirror settings, an S3 connection, and a record of every
    answer (to look for secrets in)."""

    def __init__(self, root: Path, database_url: str, s3: S3Settings) -> None:
        super().__init__(root, database_url, 2)
        self.s3 = s3
        self.proxy = ProxyProcess(root / "proxy", database_url, env=MIRROR_FAST)
        for node in self.nodes:
            node.env = NODE_FAST
        self.answers: list[str] = []

    def staff(self, method: str, path: str, data: Any = None) -> tuple[int, Any]:
        status, body = super().staff(method, path, data)
        self.answers.append(json.dumps(body, default=str))
        return status, body

    def user(self, method: str, path: str) -> tuple[int, Any]:
        status, body = super().user(method, path)
        self.answers.append(json.dumps(body, default=str))
        return status, body

    def connect_s3(self) -> None:
        """Staff add the connection to ``self.s3``, validate it and make it the active one."""
        status, body = self.staff("POST", "/api/s3-connections/", {
            "name": self.s3.name, "endpoint_url": self.s3.endpoint_url, "region": self.s3.region,
            "bucket": self.s3.bucket, "prefix": self.s3.prefix,
            "access_key": self.s3.access_key, "secret_key": self.s3.secret_key,
        })  # fmt: skip
        assert status == 201, body
        status, body = self.staff("POST", f"/api/s3-connections/{self.s3.name}/validate")
        assert status == 200 and body["validation_ok"] is True, body
        status, body = self.staff("POST", f"/api/s3-connections/{self.s3.name}/activate")
        assert status == 200 and body["active"] is True, body

    def detail(self, file_id: str) -> dict[str, Any]:
        status, body = self.user("GET", f"/storage/files/{file_id}/")
        assert status == 200, body
        return dict(body)

    def remote_state(self, file_id: str, wanted: str) -> dict[str, Any] | None:
        found = self.detail(file_id)
        return found if found["remote_state"] == wanted else None

    def post(self, path: str) -> tuple[int, Any]:
        return self.user_request("POST", path)

    def user_request(self, method: str, path: str) -> tuple[int, Any]:
        status, body = self.proxy.request(
            method, path, headers={"Authorization": f"JWT {self.token}"}
        )
        self.answers.append(json.dumps(body, default=str))
        return status, body

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.root.glob("*.log"))


@contextmanager
def remote_cluster(root: Path, database_url: str, s3: S3Settings) -> Iterator[RemoteCluster]:
    """A started ``RemoteCluster`` whose active S3 connection reaches ``s3``; every process
    is stopped afterwards, also when starting one of them failed."""
    running = RemoteCluster(root, database_url, s3)
    try:
        running.start()
        running.connect_s3()
        yield running
    finally:
        running.stop()
