"""How fast a backlog of small files drains to two nodes (files/s), for direction only.

    .venv/bin/python scripts/measure_drain.py [--files 2000] [--size 1024] [--live]

A fresh proxy (SQLite) with no node takes ``--files`` files of ``--size`` random bytes through
the client library (nothing can replicate yet, so they pile up as a backlog); then two fresh
nodes (zones a and b) are registered through the staff API, and the time is taken from the
moment the proxy sees both up until its database holds two confirmed replicas of every file
(read from the proxy's SQLite file every 50 ms). Prints the ingest rate and the drain rate.
With ``--live`` the two nodes are there from the start, so replication runs beside the
ingest; then it prints how long after the last upload's answer the last copy was confirmed.

``measure_drain(cluster_proxy_db, expected, since)`` is the reusable part: the seconds until
``expected`` confirmed replicas are recorded. Everything is stopped by PID, even on error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench_common import DATA, BenchError, Cluster, Node, expect, log

from client import PyArchiveClient

FAST = {
    "PYARCHIVE_REPLICAS": "2",
    "PYARCHIVE_NODE_PING_INTERVAL": "0.2s",
    "PYARCHIVE_REPLICATION_INTERVAL": "0.5s",
}


def confirmed_replicas(database: Path) -> int:
    """Confirmed replica rows in a proxy's SQLite database (read-only, beside the proxy)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        row = db.execute("SELECT COUNT(*) FROM replicas WHERE state = 'confirmed'").fetchone()
        return int(row[0])


def wait_for_confirmed(database: Path, expected: int, since: float, timeout: float) -> float:
    """Seconds from ``since`` (perf_counter) until ``expected`` replicas are confirmed."""
    while True:
        done = confirmed_replicas(database)
        if done >= expected:
            return time.perf_counter() - since
        if time.perf_counter() - since > timeout:
            raise BenchError(f"{done} of {expected} replicas confirmed after {timeout:g} s")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--live", action="store_true", help="nodes up during the ingest")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="drain-", dir=DATA))
    cluster = Cluster(root, [("node1", "a"), ("node2", "b")] if args.live else [], FAST)
    nodes: list[Node] = cluster.nodes  # stopped with the cluster, even on error
    try:
        assert cluster.proxy is not None and cluster.conn is not None
        database = cluster.proxy.data_dir / "pyarchive.sqlite3"
        sources = root / "sources"
        sources.mkdir()
        started = time.perf_counter()
        with PyArchiveClient(cluster.proxy.base, cluster.token) as client:
            for n in range(args.files):
                path = sources / f"f{n:06d}.bin"
                path.write_bytes(os.urandom(args.size))
                client.upload(path)
                path.unlink()
        ingest = time.perf_counter() - started
        log(f"ingest: {args.files} files in {ingest:.1f} s = {args.files / ingest:.0f} files/s")
        if args.live:
            behind = wait_for_confirmed(database, 2 * args.files, time.perf_counter(), args.timeout)
            print(
                f"RESULT live {args.files} files of {args.size} B, two nodes: ingest"
                f" {args.files / ingest:.0f} files/s over {ingest:.1f} s; every copy confirmed"
                f" {behind:.1f} s after the last upload"
            )
            return 0
        for name, zone in (("node1", "a"), ("node2", "b")):
            node = Node(root, name, zone, cluster.secret)
            nodes.append(node)
            node.wait_ready()
        for node in nodes:
            status, answer = cluster.conn.json("POST", "/api/nodes/", {
                "name": node.name, "url": node.url, "zone": node.zone,
                "rsync_url": node.rsync_url,
            })  # fmt: skip
            expect("adding a node", status, answer, ok=(201,))
        cluster.wait_nodes_up()
        since = time.perf_counter()
        seconds = wait_for_confirmed(database, 2 * args.files, since, args.timeout)
        print(
            f"RESULT drain {args.files} files of {args.size} B to two nodes: {seconds:.1f} s ="
            f" {args.files / seconds:.0f} files/s (ingest {args.files / ingest:.0f} files/s)"
        )
        return 0
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
