"""The supervisor behind ``scripts/run-local``: starts the local system and keeps it running.

The system: the proxy (SQLite), two storage nodes, ``node1`` (zone ``a``) and ``node2``
(zone ``b``), each with its rsync daemon, and a local S3 endpoint (moto's server, data in
memory: a stand-in for a real bucket) configured as the proxy's active S3 connection, all on
free loopback ports. Every child is started with an argument list, remembered by PID, and
stopped by PID. A child that exits is started again on the same ports, with growing delays
while it keeps failing (see ``local_supervisor.py``); only Ctrl-C or SIGTERM stops the whole
system.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType

from local_supervisor import Child, stop_all, supervise

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


def local_s3(data_dir: Path) -> Child:
    """moto's S3 server on a free loopback port; each run starts with an empty bucket."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"

    def create_bucket() -> None:
        import boto3

        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=LOCAL_S3_KEY, aws_secret_access_key=LOCAL_S3_SECRET,
        ).create_bucket(Bucket=LOCAL_BUCKET)  # fmt: skip

    return Child(
        "s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        data_dir / "s3.log", f"{endpoint}/moto-api/", after_start=create_bucket,
        back_note=f", with an empty bucket {LOCAL_BUCKET}: what it held was in memory",
    )  # fmt: skip


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


def storage_node(data_dir: Path, name: str, zone: str, env: dict[str, str]) -> Child:
    port, rsync_port = free_port(), free_port()
    register_node(data_dir, name, zone, port, rsync_port)
    return Child(
        name,
        [str(BIN / "pyarchive-node"), "--name", name, "--zone", zone,
         "--data-dir", str(data_dir / name), "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--rsync-port", str(rsync_port)],
        data_dir / f"{name}.log", f"http://127.0.0.1:{port}/health", env=env,
    )  # fmt: skip


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
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_admin(data_dir)
    url = f"http://127.0.0.1:{args.port}/"
    secret = cluster_secret(data_dir)
    env = {**os.environ, "PYARCHIVE_CLUSTER_SECRET": secret}  # the proxy's; nodes get their keys
    children: list[Child] = []
    try:
        s3 = local_s3(data_dir)
        s3.spawn()
        children.append(s3)
        fail_unless_healthy(s3, data_dir)
        endpoint = s3.health_url.removesuffix("/moto-api/")
        configure_local_s3(data_dir, endpoint)
        print(f"Local S3 endpoint at {endpoint}, bucket {LOCAL_BUCKET}: moto's server,"
              " data in memory, a STAND-IN for a real bucket (gone when this stops;"
              " see the README to use real S3)", flush=True)  # fmt: skip
        nodes = [
            storage_node(data_dir, n, z, node_environment(secret, n))
            for n, z in (("node1", "a"), ("node2", "b"))
        ]
        for node in nodes:
            node.spawn()
            children.append(node)
        proxy = Child(
            "proxy", proxy_command(data_dir, "--listen", f"tcp:{args.port}:interface=127.0.0.1"),
            data_dir / "proxy.log", f"{url}health", env=env,
        )  # fmt: skip
        proxy.spawn()
        children.append(proxy)
        for node in nodes:
            fail_unless_healthy(node, data_dir)
            address = node.health_url.removesuffix("health")
            print(f"Storage node {node.name} at {address} (log: {node.log_path})", flush=True)
        fail_unless_healthy(proxy, data_dir)
    except BaseException:
        stop_all(children)
        raise
    print(f"Proxy log: {proxy.log_path}", flush=True)
    print(f"PyArchive is ready at {url}", flush=True)
    supervise(children, lambda: stopping)
    print("PyArchive stopped.", flush=True)


def fail_unless_healthy(child: Child, data_dir: Path) -> None:
    problem = child.wait_healthy()
    if problem is not None:
        sys.exit(f"run-local: {problem} (see the logs in {data_dir})")


if __name__ == "__main__":
    main()
