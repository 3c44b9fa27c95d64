"""Crash a node again and again while it mirrors one file to S3; check it resumes, never
from scratch, and that the object in the bucket is the file.

A real ``pyarchive-node`` holds the file as a confirmed replica (rsync + the signed confirm, as
the proxy does) and is asked to mirror it to moto's S3 server (in this process, real HTTP),
under a bandwidth cap so the mirror takes long enough to be interrupted. The node is
SIGKILLed at random moments and restarted on the same data directory and ports each time;
after a restart it learns the connection again from the next sync, as from the proxy. Every
UploadPart request S3 answers is counted (moto's request log), so a part sent again shows.
At the end the object's bytes must hash to the file's sha256. Prints one RESULT line.

Usage: scripts/reliability mirror [--kills 8] [--size-mib 256] [--bandwidth-mib 48] [--seed N]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_common import free_port
from bench_mirror import place_replica, signed

BIN = Path(sys.executable).parent
PART_PUT = re.compile(r'"PUT /\S+\?uploadId=\S+&partNumber=(\d+) HTTP')


class PartCounter(logging.Handler):
    """Counts UploadPart requests by part number from moto's (werkzeug's) request log."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: Counter[int] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        found = PART_PUT.search(record.getMessage())
        if found and '" 200 ' in record.getMessage():
            self.parts[int(found.group(1))] += 1


class NodeProc:
    """One pyarchive-node on fixed ports and a fixed data directory, restartable."""

    def __init__(self, data_dir: Path, secret: str, env: dict[str, str]) -> None:
        from common.signing import NodeKeys, node_key

        self.data_dir, self.secret = data_dir, secret
        self.keys = NodeKeys.for_node(secret, "node1")  # what the proxy would use with it
        self.port, self.rsync_port = free_port(), free_port()
        self.rsync_url = f"rsync://pyarchive@127.0.0.1:{self.rsync_port}/incoming"
        self.env = {**os.environ, "PYARCHIVE_NODE_KEY": node_key(secret, "node1"), **env}
        self.env.pop("PYARCHIVE_CLUSTER_SECRET", None)
        self.log = open(data_dir.parent / "node.log", "ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "pyarchive-node"), "--name", "node1", "--zone", "a",
             "--data-dir", str(self.data_dir), "--listen", f"tcp:{self.port}:interface=127.0.0.1",
             "--rsync-port", str(self.rsync_port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"reliability mirror: the node exited ({self.proc.returncode})")
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        sys.exit("reliability mirror: the node did not answer within 30 s")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # A SIGKILLed node leaves its rsync daemon; the restarted node reaps it, and the last
        # one stops its own on SIGTERM. Make sure no daemon of ours outlives the run.
        pid_file = self.data_dir / "rsyncd.pid"
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        self.log.close()


def held_parts(client: Any, bucket: str, key: str) -> int:
    """How many parts S3 holds for the open multipart upload of ``key`` (0 if none)."""
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    total = 0
    for upload in uploads:
        listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        total += len(listed.get("Parts", []))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--bandwidth-mib", type=int, default=48)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from moto.server import ThreadedMotoServer

    from common.s3 import S3Settings, make_client, settings_to_wire
    from common.signing import replica_key

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="pyarchive-reliability-mirror-", dir="/var/tmp"))
    counter = PartCounter()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.INFO)
    werkzeug.addHandler(counter)
    werkzeug.propagate = False
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    node = NodeProc(root / "node", secrets.token_urlsafe(32), {
        "PYARCHIVE_MIRROR_BANDWIDTH": f"{args.bandwidth_mib}MiB",
        "PYARCHIVE_MIRROR_INTERVAL": "0.5s",
    })  # fmt: skip
    try:
        path = root / "file.bin"
        data_rng = random.Random(args.seed)
        md5, sha256 = hashlib.md5(), hashlib.sha256()
        with open(path, "wb") as out:
            for _ in range(args.size_mib):
                block = data_rng.randbytes(1 << 20)
                md5.update(block)
                sha256.update(block)
                out.write(block)
        size = path.stat().st_size
        node.data_dir.mkdir(parents=True)
        node.start()
        key = place_replica(node, path, md5.hexdigest(), sha256.hexdigest())
        assert key == replica_key(1, sha256.hexdigest())
        settings = S3Settings(
            bucket="reliability", region="us-east-1", access_key="reliability",
            secret_key="reliability-secret-0000", endpoint_url=f"http://127.0.0.1:{port}",
            prefix="rel", name="rel",
        )  # fmt: skip
        client = make_client(settings)
        client.create_bucket(Bucket=settings.bucket)
        object_key = settings.object_key(sha256.hexdigest())
        want = {
            "connection": settings_to_wire(settings, node.keys.transport),
            "mirror_interval": None,
            "mirror": [{"key": key, "size": size, "md5": md5.hexdigest(),
                        "sha256": sha256.hexdigest()}],
            "restore": [],
        }  # fmt: skip
        started = time.monotonic()
        kills, held_at_kills = 0, []
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            _, body = signed(node, "POST", "/internal/mirror/sync", want)
            state = next((m for m in body["mirror"] if m["key"] == key), {})
            if state.get("state") == "mirrored" and state.get("verified"):
                break
            if state.get("state") == "failed":
                sys.exit(f"reliability mirror: the node gave up: {state.get('detail')}")
            if kills < args.kills:
                time.sleep(rng.uniform(0.5, 2.5))
                held = held_parts(client, settings.bucket, object_key)
                node.kill()
                kills += 1
                held_at_kills.append(held)
                print(f"kill {kills}: S3 held {held} parts", flush=True)
                node.start()
            else:
                time.sleep(0.2)
        else:
            sys.exit(f"reliability mirror: not mirrored within 900 s: {state}")
        seconds = time.monotonic() - started
        digest = hashlib.sha256()
        answer = client.get_object(Bucket=settings.bucket, Key=object_key)
        for piece in answer["Body"].iter_chunks(1 << 20):
            digest.update(piece)
        parts = len(state["parts"])
        uploads = sum(counter.parts.values())
        resent = uploads - parts
        ok = digest.hexdigest() == sha256.hexdigest() and set(counter.parts) == set(
            range(1, parts + 1)
        )
        print(
            f"RESULT mirror of {args.size_mib} MiB under {kills} SIGKILLs of the node: "
            f"{'object verified (sha256 matches)' if ok else 'OBJECT WRONG'}, {parts} parts, "
            f"{uploads} part uploads ({resent} sent again: parts in flight at a kill), "
            f"S3 held {held_at_kills} parts at the kills, {seconds:.1f} s",
            flush=True,
        )
        if not ok:
            sys.exit(1)
    finally:
        node.stop()
        moto.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
