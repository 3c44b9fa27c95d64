"""PyArchive's S3 mirror benchmark, beside a plain boto3 ``upload_file`` in the same run.

Run through ``scripts/bench`` (which makes sure .venv exists):

    scripts/bench mirror [--runs N]

Set up once (untimed): a local S3 endpoint (moto's server, ``moto_server``, on a loopback port,
data in memory) and one fresh ``pyarchive-node`` holding the 1 GiB test file as a confirmed
replica (rsync to its daemon + the signed confirm, as the proxy does). Then N runs, each with a
fresh bucket and each timing right after bench.py's settle() (sync, 1 s pause, prefault):

    plain   boto3 ``upload_file`` of $BENCH_DATA/test-1g.bin to the bucket (boto3's transfer
            defaults: 8 MiB parts, 10 threads), in this process, with the client the project
            uses (``common.s3.make_client``: path-style, checksums only when required, which
            spares it the CRC32 a default client computes)
    mirror  one signed ``POST /internal/mirror/sync`` asking the node to mirror the replica
            (the proxy's call), then the same call every 50 ms until the node reports it
            ``mirrored`` and verified: multipart upload with the node's part size and parts in
            flight, md5 + sha256 per part, ETag checks, complete, HeadObject verification

The two alternate which goes first from run to run. Both objects are checked for size (and
the mirror's metadata sha256) and deleted after the run, so moto's memory does not grow.
Reported: MB/s (1 MB = 10^6 bytes, over the file's size) for both and mirror / plain as a
ratio of throughputs (the issue's target: >= 0.9).
Node settings come from PYARCHIVE_* in the environment (recorded), e.g.
PYARCHIVE_MIRROR_PART_SIZE, PYARCHIVE_MIRROR_PARTS_IN_FLIGHT.
Per-run data: $BENCH_DATA/results/pyarchive-mirror.json, in bench.py's format.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench_common import (
    DATA,
    LOGS,
    MB,
    PREFAULT_GIB,
    RUN_TIMEOUT,
    BenchError,
    Node,
    Proxy,
    cpu_times,
    digest_file,
    free_port,
    known_md5,
    log,
    main_wrapper,
    print_result,
    proc_cpu_s,
    project_version,
    require_test_file,
    row,
    settle,
    sitting,
    steal_pct,
    stop_pid,
    tuning_env,
    warm,
    write_result,
)

NAME = "pyarchive-mirror"
POLL_S = 0.05
MOTO = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "moto_server"
S3_KEY = "bench"
S3_SECRET = "bench-secret-not-a-real-key"  # moto accepts any credentials
BLOB_ID = 1


class Moto:
    """moto's S3 server on a free loopback port, stopped by its PID."""

    def __init__(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logf = open(LOGS / "moto-server.log", "ab")
        self.proc = subprocess.Popen(
            [str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BenchError(f"moto_server exited ({self.proc.returncode})")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/moto-api/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.1)
        raise BenchError("moto_server did not answer within 30 s")

    def stop(self) -> None:
        stop_pid(self.proc)
        self.logf.close()

    def active_connection(self, bucket: str) -> Callable[[Proxy], None]:
        """A ``Cluster`` ``prepare`` step: ``bucket`` made on this server, then added to the
        proxy as its active S3 connection (``pyarchive-proxy s3 add --activate``, as
        run-local does)."""

        def prepare(proxy: Proxy) -> None:
            import boto3

            boto3.client(
                "s3", endpoint_url=self.url, region_name="us-east-1",
                aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
            ).create_bucket(Bucket=bucket)  # fmt: skip
            proxy.cli(
                "s3", "add", "local", "--endpoint-url", self.url, "--region", "us-east-1",
                "--bucket", bucket, "--access-key", S3_KEY, "--activate",
                env={"PYARCHIVE_S3_SECRET_KEY": S3_SECRET},
            )  # fmt: skip

        return prepare


class ReachableNode(Protocol):
    """What ``signed`` and ``place_replica`` use of a node: the bench's ``Node`` or the
    reliability script's restartable one."""

    port: int
    rsync_url: str
    keys: Any


def signed(node: ReachableNode, method: str, path: str, payload: Any) -> tuple[int, Any]:
    from common.signing import sign_request

    body = json.dumps(payload).encode()
    headers = sign_request(node.keys, method, path, body, now=time.time())
    headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=RUN_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        raw = answer.read()
        return answer.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def place_replica(node: ReachableNode, path: Path, md5: str, sha256: str) -> str:
    """Push the test file to the node and confirm it, as the proxy's replication does."""
    from common.signing import replica_key

    key = replica_key(BLOB_ID, sha256)
    env = {**os.environ, "RSYNC_PASSWORD": node.keys.rsync_password}
    done = subprocess.run(
        ["rsync", "--partial", "--inplace", str(path), f"{node.rsync_url}/{key}"],
        env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    if done.returncode:
        raise BenchError(f"rsync to the node failed: {done.stderr.strip()}")
    size = path.stat().st_size
    status, body = signed(
        node, "POST", f"/internal/replicas/{key}/confirm",
        {"size": size, "md5": md5, "sha256": sha256},
    )  # fmt: skip
    if status != 200:
        raise BenchError(f"confirm answered {status}: {body}")
    return key


def client_for(settings: Any) -> Any:
    from common.s3 import make_client

    return make_client(settings)


def plain(settings: Any, path: Path, bucket: str) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig

    client = client_for(settings)
    size = path.stat().st_size
    prefault_s = settle()
    k0, c0 = cpu_times(), time.process_time()
    t0 = time.perf_counter()
    client.upload_file(str(path), bucket, "plain/test-1g.bin", Config=TransferConfig())
    secs = time.perf_counter() - t0
    k1, cpu = cpu_times(), time.process_time() - c0
    head = client.head_object(Bucket=bucket, Key="plain/test-1g.bin")
    if head["ContentLength"] != size:
        raise BenchError(f"plain upload left {head['ContentLength']} bytes, not {size}")
    client.delete_object(Bucket=bucket, Key="plain/test-1g.bin")
    return {
        "seconds": secs, "mb_s": size / secs / MB, "client_cpu_s": round(cpu, 2),
        "steal_pct": steal_pct(k0, k1), "prefault_seconds": prefault_s,
    }  # fmt: skip


def mirror(node: Node, settings: Any, key: str, size: int, md5: str, sha256: str) -> dict[str, Any]:
    from common.s3 import settings_to_wire

    want = {
        "connection": settings_to_wire(settings, node.keys.transport),
        "mirror_interval": None,
        "mirror": [{"key": key, "size": size, "md5": md5, "sha256": sha256}],
        "restore": [],
    }
    prefault_s = settle()
    cpu0 = proc_cpu_s(node.pid)
    k0 = cpu_times()
    t0 = time.perf_counter()
    end = time.monotonic() + RUN_TIMEOUT
    state: dict[str, Any] = {}
    while time.monotonic() < end:
        status, body = signed(node, "POST", "/internal/mirror/sync", want)
        if status != 200:
            raise BenchError(f"mirror sync answered {status}: {body}")
        state = next((m for m in body["mirror"] if m["key"] == key), {})
        if state.get("state") == "mirrored" and state.get("verified"):
            break
        if state.get("state") == "failed":
            raise BenchError(f"the node could not mirror: {state.get('detail')}")
        time.sleep(POLL_S)
    else:
        raise BenchError(f"not mirrored within {RUN_TIMEOUT:.0f} s: {state}")
    secs = time.perf_counter() - t0
    k1, cpu1 = cpu_times(), proc_cpu_s(node.pid)
    client = client_for(settings)
    head = client.head_object(Bucket=settings.bucket, Key=settings.object_key(sha256))
    if head["ContentLength"] != size or head["Metadata"].get("sha256") != sha256:
        raise BenchError(f"mirrored object is wrong: {head['ContentLength']} {head['Metadata']}")
    # Forget it on the node (an empty want-list), then remove the object.
    status, _ = signed(node, "POST", "/internal/mirror/sync", {**want, "mirror": []})
    client.delete_object(Bucket=settings.bucket, Key=settings.object_key(sha256))
    return {
        "seconds": secs, "mb_s": size / secs / MB, "parts": len(state.get("parts", [])),
        "node_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
        "steal_pct": steal_pct(k0, k1), "prefault_seconds": prefault_s,
    }  # fmt: skip


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from common.s3 import S3Settings

    path = DATA / "test-1g.bin"
    size = require_test_file(path)
    log(f"== {NAME}: 1 GiB mirrored to a local S3 endpoint vs boto3 upload_file, "
        f"{args.runs} runs, prefault {PREFAULT_GIB:g} GiB")  # fmt: skip
    warm(path)
    md5, _ = known_md5(path)
    sha256 = digest_file(path, "sha256")
    la0, t_start = os.getloadavg(), time.time()
    moto = Moto()
    secret = secrets.token_urlsafe(32)
    node = Node(DATA, "node1", "a", secret)
    det: list[dict[str, dict[str, Any]]] = []
    try:
        node.wait_ready()
        key = place_replica(node, path, md5, sha256)
        for i in range(args.runs):
            bucket = f"bench-mirror-{i}"
            settings = S3Settings(
                bucket=bucket, region="us-east-1", access_key="bench",
                secret_key="bench-secret-key-0000", endpoint_url=moto.url, prefix="bench",
                name="bench",
            )  # fmt: skip
            client_for(settings).create_bucket(Bucket=bucket)
            # Alternate which goes first, so neither always meets a fresher moto.
            if i % 2 == 0:
                d = {"plain": plain(settings, path, bucket)}
                d["mirror"] = mirror(node, settings, key, size, md5, sha256)
            else:
                d = {"mirror": mirror(node, settings, key, size, md5, sha256)}
                d["plain"] = plain(settings, path, bucket)
            d["mirror"]["ratio_to_plain"] = d["mirror"]["mb_s"] / d["plain"]["mb_s"]
            det.append(d)
            log(f"  run {i + 1}: mirror {d['mirror']['mb_s']:.0f} MB/s "
                f"({d['mirror']['parts']} parts, node CPU {d['mirror']['node_cpu_s']} s), "
                f"boto3 upload_file {d['plain']['mb_s']:.0f} MB/s; "
                f"mirror/plain {d['mirror']['ratio_to_plain']:.2f}x")  # fmt: skip
    finally:
        node.stop()
        moto.stop()
    tool = f"{project_version()}, moto_server {moto_version()}"
    rows = [
        row("pyarchive mirror 1 GiB to S3 (moto, loopback)",
            [d["mirror"]["mb_s"] for d in det], "MB/s", [d["mirror"] for d in det], tool,
            "node's multipart upload, md5+sha256 per part, ETag checks, HeadObject verify; "
            "sync polled every 50 ms"),
        row("boto3 upload_file 1 GiB to S3 (moto, loopback)",
            [d["plain"]["mb_s"] for d in det], "MB/s", [d["plain"] for d in det], tool,
            "boto3 defaults: 8 MiB parts, 10 threads"),
        row("pyarchive mirror / boto3 upload_file: throughput ratio",
            [d["mirror"]["ratio_to_plain"] for d in det], "x", [], tool, "per run"),
    ]  # fmt: skip
    ratio = statistics.median(d["mirror"]["mb_s"] for d in det) / statistics.median(
        d["plain"]["mb_s"] for d in det
    )
    out = {
        "measurement": NAME,
        "description": "1 GiB test file mirrored by a node to a local S3 endpoint, beside "
        "boto3 upload_file of the same file to the same endpoint in the same run",
        "runs": args.runs,
        **sitting(t_start, la0),
        "file": str(path),
        "size": size,
        "ratio_of_medians": ratio,
        "node_env": tuning_env(),
        "rows": rows,
    }
    write_result(NAME, out)
    for r in rows:
        print_result(r, 2 if r["unit"] == "x" else 1)
    print(f"RESULT pyarchive mirror / boto3 upload_file (ratio of median MB/s): {ratio:.2f}x "
          "(target >= 0.90)", flush=True)  # fmt: skip
    return out


def moto_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("moto")
    except Exception:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["mirror"])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")))
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    return main_wrapper("mirror", lambda: bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
