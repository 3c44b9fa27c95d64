"""The supervisor behind ``scripts/run-local``: starts the local system, stops it on a signal.

The system: the proxy (SQLite), two storage nodes, ``node1`` (zone ``a``) and ``node2``
(zone ``b``), each with its rsync daemon, and a local S3 endpoint (moto's server, data in
memory: a stand-in for a real bucket) configured as the proxy's active S3 connection, all on
free loopback ports. Every child is started with an argument list, remembered by PID, and
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
LOCAL_BUCKET = "pyarchive-local"
# moto accepts any credentials; these only exist on this machine, for this stand-in.
LOCAL_S3_KEY = "run-local"
LOCAL_S3_SECRET = "run-local-secret-not-a-real-key"


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


def start_local_s3(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free loopback port with an empty bucket ``pyarchive-local``."""
    port = free_port()
    with open(data_dir / "s3.log", "ab") as log:
        child = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                break
        except OSError:
            if child.poll() is not None or time.monotonic() > deadline:
                stop(child)
                sys.exit(f"run-local: the local S3 endpoint did not start (see {data_dir}/s3.log)")
            time.sleep(0.2)
    import boto3

    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=LOCAL_S3_KEY, aws_secret_access_key=LOCAL_S3_SECRET,
    ).create_bucket(Bucket=LOCAL_BUCKET)  # fmt: skip
    return child, endpoint


def configure_local_s3(data_dir: Path, endpoint: str) -> None:
    """Make the local endpoint the proxy's active S3 connection ``local``."""
    env = dict(os.environ, PYARCHIVE_S3_SECRET_KEY=LOCAL_S3_SECRET)
    for attempt in ("add", "update"):
        done = subprocess.run(
            proxy_command(data_dir, "s3", attempt, "local", "--endpoint-url", endpoint,
                          "--region", "us-east-1", "--bucket", LOCAL_BUCKET,
                          "--access-key", LOCAL_S3_KEY, "--activate"),
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        if done.returncode == 0:
            break
    else:
        sys.exit(f"run-local: could not configure the local S3 connection: {done.stderr.strip()}")
    checked = subprocess.run(
        proxy_command(data_dir, "s3", "validate", "local"), capture_output=True, text=True
    )
    if checked.returncode:
        sys.exit(f"run-local: the local S3 endpoint does not work: {checked.stdout.strip()}")


def stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()


def node_environment(secret: str, name: str) -> dict[str, str]:
    """A node's environment: its own key, derived from the cluster secret, and not the secret."""
    from common.signing import node_key

    env = {k: v for k, v in os.environ.items() if k != "PYARCHIVE_CLUSTER_SECRET"}
    return {**env, "PYARCHIVE_NODE_KEY": node_key(secret, name)}


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
    env = {**os.environ, "PYARCHIVE_CLUSTER_SECRET": secret}  # the proxy's
    children: list[tuple[str, subprocess.Popen[bytes], str]] = []
    s3, endpoint = start_local_s3(data_dir)
    children.append(("s3", s3, f"{endpoint}/moto-api/"))
    configure_local_s3(data_dir, endpoint)
    for name, zone in (("node1", "a"), ("node2", "b")):
        port, rsync_port = free_port(), free_port()
        register_node(data_dir, name, zone, port, rsync_port)
        node_dir = data_dir / name
        with open(data_dir / f"{name}.log", "ab") as log:
            node = subprocess.Popen(
                [str(BIN / "pyarchive-node"), "--name", name, "--zone", zone,
                 "--data-dir", str(node_dir), "--listen", f"tcp:{port}:interface=127.0.0.1",
                 "--rsync-port", str(rsync_port)],
                stdout=log, stderr=subprocess.STDOUT, env=node_environment(secret, name),
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
            if name == "s3":
                print(f"Local S3 endpoint at {endpoint}, bucket {LOCAL_BUCKET}: moto's server,"
                      " data in memory, a STAND-IN for a real bucket (gone when this stops;"
                      " see the README to use real S3)", flush=True)  # fmt: skip
                continue
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
