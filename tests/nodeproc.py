"""Real storage-node processes for tests that cross a process boundary (rsync, signals).

Blocking on purpose, like ``tests/proc.py``: the tests drive a node in another process with
``http.client``, the real ``rsync`` client and ``curl``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from common.signing import (
    DownloadGrant,
    NodeKeys,
    issue_download_token,
    node_key,
    replica_key,
    sign_request,
)
from node.replicas.rsyncd import stale_daemon_pid
from tests.proc import BIN, free_port

# Long and random, as the proxy and the nodes require (common.secretcheck); one per test run.
SECRET = "node-test-cluster-secret-" + secrets.token_urlsafe(24)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


# A node whose directory fsyncs are slow (tests.slow_fsync_node).
SLOW_DIRECTORIES = (str(BIN / "python"), "-m", "tests.slow_fsync_node")


@dataclass
class NodeProcess:
    data_dir: Path
    name: str = "node1"
    zone: str = "a"
    secret: str = SECRET
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = 0
    rsync_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    # What runs the node: the installed command, or e.g. SLOW_DIRECTORIES.
    command: tuple[str, ...] = ()

    @property
    def keys(self) -> NodeKeys:
        """This node's keys, as the proxy derives them from the cluster secret."""
        return NodeKeys.for_node(self.secret, self.name)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"node-{self.name}.log"

    def start(self, timeout: float = 30.0, *, wait_for: str = "ok") -> NodeProcess:
        """Start the node and wait until ``/health`` says ``wait_for``."""
        self.launch()
        self.wait_for_status(wait_for, timeout)
        return self

    def launch(self) -> NodeProcess:
        """Start the node's process without waiting for it (``wait_for_status`` waits), so
        that several processes can start at once."""
        self.port = self.port or free_port()
        self.rsync_port = self.rsync_port or free_port()
        log = open(self.log_path, "ab")
        # A node is given its own key, never the cluster secret (unless ``env`` says so).
        env = {**os.environ, "PYARCHIVE_NODE_KEY": node_key(self.secret, self.name), **self.env}
        env.pop("PYARCHIVE_CLUSTER_SECRET", None)
        if "PYARCHIVE_CLUSTER_SECRET" in self.env:
            env.pop("PYARCHIVE_NODE_KEY")
            env["PYARCHIVE_CLUSTER_SECRET"] = self.env["PYARCHIVE_CLUSTER_SECRET"]
        self.process = subprocess.Popen(
            [
                *(self.command or (str(BIN / "pyarchive-node"),)),
                "--name", self.name,
                "--zone", self.zone,
                "--data-dir", str(self.data_dir),
                "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                "--rsync-port", str(self.rsync_port),
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()
        return self

    def wait_for_status(self, status: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}")
            try:
                seen = self.health()
                if seen["status"] == status:
                    return seen  # type: ignore[no-any-return]
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"node did not become {status!r} (last health: {seen})")

    def health(self) -> dict[str, Any]:
        response = self.request("GET", "/health")
        assert response.status == 200, response
        return response.json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        """SIGTERM the node and wait; then stop an rsync daemon a killed node left behind."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.stop_left_daemon()

    def kill(self) -> None:
        """SIGKILL the node (its rsync daemon dies with it: see node/replicas/deathsig.py)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop_left_daemon(self) -> None:
        """End the rsync daemon a killed node left (a node started again would do it too)."""
        if self.process is not None and self.process.poll() is None:
            return
        pid_file, conf = self.data_dir / "rsyncd.pid", self.data_dir.resolve() / "rsyncd.conf"
        orphan = stale_daemon_pid(pid_file, conf)
        if orphan is None:
            return
        os.kill(orphan, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while stale_daemon_pid(pid_file, conf) == orphan:
            if time.monotonic() > deadline:
                os.kill(orphan, signal.SIGKILL)
                break
            time.sleep(0.05)

    def rsyncd_pid(self) -> int | None:
        """The pid of the node's rsync daemon child, if it has one now."""
        assert self.process is not None
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return None
        for child in children:
            try:
                if "--daemon" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    return int(child.pid)
            except psutil.NoSuchProcess:
                continue
        return None

    # -- talking to it

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            try:
                conn.request(method, path, body=body, headers=dict(headers or {}))
            except (BrokenPipeError, ConnectionResetError):
                # The node may answer (413) and close before the whole body is sent: its
                # answer is already on the socket, so read it as a client would.
                pass
            answer = conn.getresponse()
            return Response(answer.status, answer.headers, answer.read())
        finally:
            conn.close()

    def signed_headers(
        self, method: str, path: str, body: bytes = b"", *, keys: NodeKeys | None = None,
        at: float = 0,
    ) -> dict[str, str]:  # fmt: skip
        return sign_request(keys or self.keys, method, path, body, now=at or time.time())

    def signed(self, method: str, path: str, data: Any = None) -> Response:
        body = b"" if data is None else json.dumps(data).encode()
        headers = self.signed_headers(method, path, body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        return self.request(method, path, body or None, headers)

    def confirm(self, key: str, content: bytes, **changes: Any) -> Response:
        return self.signed(
            "POST", f"/internal/replicas/{key}/confirm", expected(content, **changes)
        )

    def push(
        self, source: Path, key: str, *, password: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Push ``source`` into the node's incoming module with the real rsync client."""
        env = {**os.environ, "RSYNC_PASSWORD": password or self.keys.rsync_password}
        destination = f"rsync://pyarchive@127.0.0.1:{self.rsync_port}/incoming/{key}"
        return subprocess.run(
            ["rsync", "--partial", "--timeout=30", str(source), destination],
            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def token(
        self,
        key: str,
        *,
        filename: str = "report.bin",
        lifetime: float = 60,
        node: str | None = None,
        keys: NodeKeys | None = None,
        content_type: str = "",
    ) -> str:
        """A download token; by default for this node, signed with its download key."""
        keys = keys or NodeKeys.for_node(self.secret, node or self.name)
        grant = DownloadGrant(
            key, node or self.name, filename, int(time.time() + lifetime), content_type
        )
        return issue_download_token(keys, grant)

    def replica_path(self, key: str) -> Path:
        return self.data_dir / "replicas" / key[-2:] / key


def key_for(content: bytes, blob_id: int = 1) -> str:
    return replica_key(blob_id, hashlib.sha256(content).hexdigest())


def expected(content: bytes, **changes: Any) -> dict[str, Any]:
    """The confirm body for ``content``, with some fields changed."""
    body = {
        "size": len(content),
        "md5": hashlib.md5(content).hexdigest(),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    return {**body, **changes}
