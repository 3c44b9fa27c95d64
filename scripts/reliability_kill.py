"""Crash the proxy again and again during one upload; check nothing acknowledged is lost.

A real proxy process is SIGKILLed at random moments while the project's client library
uploads a file, and restarted on the same port and data directory each time. The client
resumes from the offset the server reports. At the end the stored file's md5 and sha256 must
equal the source's, and a download must return the same bytes. Prints one RESULT line.

Usage: scripts/reliability kill [--kills 20] [--size-mib 256] [--chunk-mib 4] [--seed N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from client import PyArchiveClient

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proxy:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.process: subprocess.Popen[bytes] | None = None
        self.log = open(data_dir.parent / "proxy.log", "ab")

    def start(self) -> None:
        env = {**os.environ, "PYARCHIVE_SECRET_KEY": "reliability-" + "x" * 32}
        self.process = subprocess.Popen(
            [str(BIN / "pyarchive-proxy"), "--data-dir", str(self.data_dir),
             "--listen", f"tcp:{self.port}:interface=127.0.0.1"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("proxy did not come up")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-mib", type=int, default=4)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="pyarchive-reliability-") as tmp:
        work = Path(tmp)
        source = work / "source.bin"
        with open(source, "wb") as out:
            for _ in range(args.size_mib):
                out.write(rng.randbytes(1 << 20))
        data = source.read_bytes()
        want_md5, want_sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
        del data
        proxy = Proxy(work / "proxy", free_port())
        (work / "proxy").mkdir()
        proxy.start()
        kills: list[float] = []
        done = threading.Event()

        def killer() -> None:
            while len(kills) < args.kills and not done.is_set():
                time.sleep(rng.uniform(0.05, 0.6))
                if done.is_set():
                    return
                proxy.kill()
                kills.append(time.monotonic())
                proxy.start()

        try:
            client = PyArchiveClient(
                f"http://127.0.0.1:{proxy.port}", sleep=lambda s: time.sleep(0.05)
            )
            client.register("reliable", "Unbreakable-77")
            client.login("reliable", "Unbreakable-77")
            thread = threading.Thread(target=killer, daemon=True)
            started = time.monotonic()
            thread.start()
            result = None
            while result is None:
                try:
                    result = client.upload(source, chunk_size=args.chunk_mib << 20, retries=1000)
                except Exception as exc:  # a kill during the md5 POST: ask again
                    print(f"  upload call ended with {type(exc).__name__}: {exc}; retrying")
            done.set()
            thread.join()
            elapsed = time.monotonic() - started
            info = client.file_info(result["file_id"])
            client.download(result["file_id"], work / "back.bin")
            back = (work / "back.bin").read_bytes()
            identical = hashlib.sha256(back).hexdigest() == want_sha
        finally:
            done.set()
            proxy.stop()
    ok = info["md5"] == want_md5 and info["sha256"] == want_sha and identical
    print(
        f"RESULT reliability kill: {len(kills)} SIGKILLs during a {args.size_mib} MiB upload "
        f"in {args.chunk_mib} MiB chunks (seed {args.seed}), {elapsed:.1f} s: "
        f"{'stored md5+sha256 match the source, download identical' if ok else 'MISMATCH'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
