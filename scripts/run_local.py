"""The supervisor behind ``scripts/run-local``: starts the local system, stops it on a signal.

Today the system is the proxy alone; storage nodes and a local S3 endpoint join it in later
issues. Every child is started with an argument list, remembered by PID, and stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
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


def wait_healthy(url: str, child: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            sys.exit(f"run-local: the proxy exited with status {child.returncode}")
        try:
            with urllib.request.urlopen(f"{url}health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    child.terminate()
    sys.exit(f"run-local: the proxy did not answer {url}health within {timeout:.0f} s")


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
    log_path = data_dir / "proxy.log"
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            proxy_command(data_dir, "--listen", f"tcp:{args.port}:interface=127.0.0.1"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        wait_healthy(url, child)
        print(f"Proxy log: {log_path}", flush=True)
        print(f"PyArchive is ready at {url}", flush=True)
        while not stopping and child.poll() is None:
            time.sleep(0.2)
    finally:
        stop(child)
    if not stopping:
        sys.exit(f"run-local: the proxy exited with status {child.returncode}; see {log_path}")
    print("PyArchive stopped.", flush=True)


if __name__ == "__main__":
    main()
