"""Real proxy processes for tests that cross a process boundary (kill, restart, memory).

Blocking on purpose: these tests drive a server in another process with ``http.client``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


TOKEN_KEY = "process-test-secret"  # what signs the test proxies' login tokens


@dataclass
class ProxyProcess:
    data_dir: Path
    database_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    # What to run instead of the installed pyarchive-proxy (e.g. a test build with a hook).
    command: list[str] | None = None
    # For https: a TLS endpoint string's options after the port, and the client's context.
    tls_options: str = ""
    tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def listen(self) -> str:
        if self.tls_options:
            return f"ssl:{self.port}:interface=127.0.0.1:{self.tls_options}"
        return f"tcp:{self.port}:interface=127.0.0.1"

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        self.port = self.port or free_port()
        log = open(self.data_dir.parent / f"proxy-{self.port}.log", "ab")
        env = {**os.environ, "PYARCHIVE_SECRET_KEY": TOKEN_KEY, **self.env}
        # Only the parent (for the log): the proxy makes its data directory itself, private.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                *(self.command or [str(BIN / "pyarchive-proxy")]),
                "--data-dir", str(self.data_dir),
                "--listen", self.listen,
                "--database", self.database_url,
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("proxy did not become healthy")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def peak_rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        conn = (
            http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=self.tls)
            if self.tls
            else http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        )
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw

    def login(self, username: str = "tester", password: str = "Correct-Horse-9") -> str:
        credentials = json.dumps({"username": username, "password": password})
        json_type = {"Content-Type": "application/json"}
        self.request("POST", "/api/auth/register", credentials, json_type)
        status, body = self.request("POST", "/api-token-auth/", credentials, json_type)
        assert status == 200, body
        return str(body["token"])


def chunk_headers(token: str, start: int, end: int, total: int | str) -> dict[str, str]:
    return {
        "Authorization": f"JWT {token}",
        "Content-Range": f"bytes {start}-{end}/{total}",
        "Content-Type": "application/octet-stream",
    }
