"""The supervisor behind ``scripts/run-local``: starts the local system, stops it on a signal.

The system: the proxy (SQLite) and two storage nodes, ``node1`` (zone ``a``) and ``node2``
(zone ``b``), each with its rsync daemon, on free loopback ports; a local S3 endpoint joins
in a later issue. Every child is started with an argument list, remembered by PID, and
stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

BIN = Path(sys.executable).parent


def proxy_command(data_dir: Path, *extra: str) -> list[str]:
    return [str(BIN / "pyarchive-proxy"), "--data-dir", str(data_dir), *extra]


def ensure_admin(data_dir: Path) -> None:
    """Create staff user ``admin``: password from $PYARCHIVE_ADMIN_PASSWORD, else random once."""
    marker = data_dir / ".admin-created"
    password = os.environ.get("PYARCHIVE_ADMIN_PASSWORD")
    generated = False
    if not password:
        if marker.exists():
            print("Staff user 'admin' exists already (password unchanged).", flush=True)
            return
        password, generated = secrets.token_urlsafe(12), True
    env = dict(os.environ, PYARCHIVE_ADMIN_PASSWORD=password)
    done = subprocess.run(
        proxy_command(data_dir, "create-admin", "admin"), env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"run-local: could not create the admin user: {done.stderr.strip()}")
    marker.touch()
    if generated:
        print(f"Staff user 'admin' created with password: {password}", flush=True)
        print("(shown once; set PYARCHIVE_ADMIN_PASSWORD to choose it)", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cluster_secret(data_dir: Path) -> str:
    """The secret the proxy and the local nodes share, made once and kept (mode 0600)."""
    path = data_dir / "cluster_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def register_node(data_dir: Path, name: str, zone: str, port: int, rsync_port: int) -> None:
    """Add the node to the proxy's database, or point it at this run's ports."""
    url, rsync_url = (
        f"http://127.0.0.1:{port}",
        f"rsync://pyarchive@127.0.0.1:{rsync_port}/incoming",
    )
    added = subprocess.run(
        proxy_command(data_dir, "nodes", "add", name, url, rsync_url, "--zone", zone),
        capture_output=True, text=True,
    )  # fmt: skip
    if added.returncode:
        updated = subprocess.run(
            proxy_command(data_dir, "nodes", "update", name, "--url", url,
                          "--rsync-url", rsync_url, "--zone", zone),
            capture_output=True, text=True,
        )  # fmt: skip
        if updated.returncode:
            sys.exit(f"run-local: could not register {name}: {updated.stderr.strip()}")


def wait_healthy(url: str, child: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            sys.exit(f"run-local: {url} exited with status {child.returncode}")
        try:
            with urllib.request.urlopen(f"{url}health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    child.terminate()
    sys.exit(f"run-local: {url}health did not answer within {timeout:.0f} s")


def stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run PyArchive locally in the foreground.")
    parser.add_argument("--port", type=int, default=8000, help="proxy port (default 8000)")
    parser.add_argument("--data-dir", default="var/local", help="data (default ./var/local)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_admin(data_dir)
    url = f"http://127.0.0.1:{args.port}/"
    secret = cluster_secret(data_dir)
    env = {**os.environ, "PYARCHIVE_CLUSTER_SECRET": secret}
    children: list[tuple[str, subprocess.Popen[bytes], str]] = []
    for name, zone in (("node1", "a"), ("node2", "b")):
        port, rsync_port = free_port(), free_port()
        register_node(data_dir, name, zone, port, rsync_port)
        node_dir = data_dir / name
        with open(data_dir / f"{name}.log", "ab") as log:
            node = subprocess.Popen(
                [str(BIN / "pyarchive-node"), "--name", name, "--zone", zone,
                 "--data-dir", str(node_dir), "--listen", f"tcp:{port}:interface=127.0.0.1",
                 "--rsync-port", str(rsync_port)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        children.append((name, node, f"http://127.0.0.1:{port}/"))
    log_path = data_dir / "proxy.log"
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            proxy_command(data_dir, "--listen", f"tcp:{args.port}:interface=127.0.0.1"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    children.append(("proxy", child, url))

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for name, process, address in children:
            wait_healthy(address, process)
            if name != "proxy":
                print(f"Storage node {name} at {address} (log: {data_dir / (name + '.log')})",
                      flush=True)  # fmt: skip
        print(f"Proxy log: {log_path}", flush=True)
        print(f"PyArchive is ready at {url}", flush=True)
        while not stopping and all(p.poll() is None for _, p, _ in children):
            time.sleep(0.2)
    finally:
        for _, process, _ in reversed(children):
            stop(process)
    if not stopping:
        dead = [f"{name} ({p.returncode})" for name, p, _ in children if p.returncode is not None]
        sys.exit(f"run-local: exited: {', '.join(dead)}; see the logs in {data_dir}")
    print("PyArchive stopped.", flush=True)


if __name__ == "__main__":
    main()
