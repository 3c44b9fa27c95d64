"""PyArchive's replication benchmark, beside plain rsync (see ../shared/bench/README.md).

Run through ``scripts/bench`` (which makes sure .venv exists):

    scripts/bench replicate [--runs N]

Every run starts a fresh ``pyarchive-proxy`` (SQLite, a temporary data dir under $BENCH_DATA,
PYARCHIVE_REPLICAS=2) and two fresh ``pyarchive-node``s (zones a and b, registered with
``pyarchive-proxy nodes add``, cluster secret shared) and waits until the proxy sees both up.
Then, in the same run, three timings, each right after bench.py's settle() (sync, 1 s pause,
prefault):

    ours         the 1 GiB test file is uploaded (untimed: raw 8 MiB chunks + md5 completion,
                 as ``scripts/bench upload``); timed from the completion POST's answer until a
                 ``GET /storage/files/<id>/`` (polled every 20 ms on one keep-alive connection)
                 shows two ``confirmed`` replicas: the proxy's two rsync pushes (in parallel),
                 the nodes' confirmation (md5 + sha256 re-read, fsync, rename) and the proxy's
                 bookkeeping. The settle() comes before the upload, so the replication starts
                 ~4 s after the prefault.
    rsync-local  rsync --partial --inplace $BENCH_DATA/test-1g.bin to a fresh directory under
                 $BENCH_DATA (same disk, no daemon; wall time of the command)
    rsync-daemon rsync --partial --inplace of the same file to node1's rsync daemon,
                 rsync://pyarchive@127.0.0.1:PORT/incoming/<name>, RSYNC_PASSWORD derived from
                 the cluster secret as the proxy does (wall time of the command)

Checked: both replicas confirmed (the nodes check size, md5 and sha256); the plain copies'
sizes every run and their md5 on the first run. Reported: seconds and MB/s (1 MB = 10^6 bytes,
over the file's size) for all three, and ours / rsync-daemon as a ratio of times (> 1: ours
takes longer). Everything is stopped by PID (the nodes' rsync daemons too), even on error.
Per-run data: $BENCH_DATA/results/pyarchive-replicate.json, in bench.py's format.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    DATA,
    LOGS,
    MB,
    PREFAULT_GIB,
    RUN_TIMEOUT,
    BenchError,
    Cluster,
    cpu_times,
    known_md5,
    log,
    main_wrapper,
    md5_file,
    print_result,
    proc_children_cpu_s,
    proc_cpu_s,
    project_version,
    remove,
    require_test_file,
    row,
    settle,
    sigterm_exits,
    sitting,
    steal_pct,
    timed_command,
    tool_version,
    tuning_env,
    upload_file,
    wait_confirmed,
    warm,
    write_result,
)

NAME = "pyarchive-replicate"
CHUNK = 8 << 20
POLL_S = 0.02
_SET_HERE = frozenset({"PYARCHIVE_CLUSTER_SECRET", "PYARCHIVE_REPLICAS"})


def cpu_snapshot(cluster: Cluster) -> dict[str, float]:
    """CPU seconds so far: the proxy, its reaped children (the rsync clients), each node, and
    each node's rsync daemon's reaped children (the receiving rsyncs)."""
    assert cluster.proxy is not None
    snap = {
        "proxy": proc_cpu_s(cluster.proxy.pid) or 0.0,
        "rsync_senders": proc_children_cpu_s(cluster.proxy.pid) or 0.0,
    }
    for node in cluster.nodes:
        snap[node.name] = proc_cpu_s(node.pid) or 0.0
        daemon = node.daemon_pid
        snap[f"{node.name}_rsync_receivers"] = (
            0.0 if daemon is None else proc_children_cpu_s(daemon) or 0.0
        )
    return snap


def ours(cluster: Cluster, path: Path, md5: str) -> dict[str, Any]:
    prefault_s = settle()
    t_up = time.perf_counter()
    answer = upload_file(cluster, path, CHUNK, md5)
    t0 = time.perf_counter()
    c0, k0 = cpu_snapshot(cluster), cpu_times()
    waited = wait_confirmed(cluster, answer["file_id"], 2, RUN_TIMEOUT, POLL_S, since=t0)
    c1, k1 = cpu_snapshot(cluster), cpu_times()
    held = {n.name: len(n.replica_files()) for n in cluster.nodes}
    if set(held.values()) != {1}:
        raise BenchError(f"expected one replica file on each node, found {held}")
    secs = float(waited["seconds"])
    return {
        "seconds": secs,
        "mb_s": path.stat().st_size / secs / MB,
        "upload_seconds": t0 - t_up,
        "polls": waited["polls"],
        "failed_copies_seen": waited["failed"],
        "cpu_s": {k: round(c1[k] - c0[k], 2) for k in c0},
        "steal_pct": steal_pct(k0, k1),
        "prefault_seconds": prefault_s,
    }


def plain_rsync(
    argv_tail: list[str],
    received: Path,
    path: Path,
    md5: str | None,
    env: dict[str, str] | None = None,
    daemon_pid: int | None = None,
) -> dict[str, Any]:
    """One timed ``rsync --partial --inplace SRC DEST``; checks and then deletes ``received``.

    With ``daemon_pid``, also the CPU seconds of the daemon's (reaped) receiving child.
    """
    size = path.stat().st_size
    prefault_s = settle()
    r0 = None if daemon_pid is None else proc_children_cpu_s(daemon_pid)
    k0 = cpu_times()
    secs, _, client_cpu = timed_command(
        ["rsync", "--partial", "--inplace", str(path), *argv_tail], env=env
    )
    k1 = cpu_times()
    receiver_cpu = None
    if daemon_pid is not None and r0 is not None:
        time.sleep(0.3)  # untimed: let the daemon reap its receiving child
        r1 = proc_children_cpu_s(daemon_pid)
        receiver_cpu = None if r1 is None else round(r1 - r0, 2)
    got = received.stat().st_size if received.exists() else -1
    if got != size:
        raise BenchError(f"rsync left {got} bytes in {received}, not {size}")
    if md5 is not None and md5_file(received) != md5:
        raise BenchError(f"md5 of {received} differs from the test file's")
    remove(received)
    return {
        "seconds": secs,
        "mb_s": size / secs / MB,
        "client_cpu_s": client_cpu,
        "receiver_cpu_s": receiver_cpu,
        "steal_pct": steal_pct(k0, k1),
        "prefault_seconds": prefault_s,
        "md5_checked": md5 is not None,
    }


def one_run(i: int, path: Path, md5: str) -> dict[str, dict[str, Any]]:
    cluster = Cluster(DATA, [("node1", "a"), ("node2", "b")], {"PYARCHIVE_REPLICAS": "2"})
    local_dir = Path(tempfile.mkdtemp(prefix="pyarchive-bench-rsync-", dir=DATA))
    try:
        assert cluster.proxy is not None
        d = {"ours": ours(cluster, path, md5)}
        d["rsync-local"] = plain_rsync(
            [f"{local_dir}/"], local_dir / path.name, path, md5 if i == 0 else None
        )
        node = cluster.nodes[0]
        env = {**os.environ, "RSYNC_PASSWORD": node.keys.rsync_password}
        d["rsync-daemon"] = plain_rsync(
            [f"{node.rsync_url}/bench-plain-{path.name}"],
            node.data_dir / "incoming" / f"bench-plain-{path.name}",
            path,
            md5 if i == 0 else None,
            env,
            node.daemon_pid,
        )
    finally:
        remove(local_dir)
        cluster.stop()
    o, lo, da = d["ours"], d["rsync-local"], d["rsync-daemon"]
    o["ratio_to_rsync_daemon"] = o["seconds"] / da["seconds"]
    retried = (
        f" [a copy failed and was retried: {', '.join(o['failed_copies_seen'])}]"
        if o["failed_copies_seen"]
        else ""
    )
    log(
        f"  run {i + 1}: ours {o['seconds']:.2f} s ({o['mb_s']:.0f} MB/s){retried}, "
        f"rsync local {lo['seconds']:.2f} s ({lo['mb_s']:.0f} MB/s), rsync to daemon "
        f"{da['seconds']:.2f} s ({da['mb_s']:.0f} MB/s); ours/daemon "
        f"{o['ratio_to_rsync_daemon']:.2f}x; CPU s while replicating: {o['cpu_s']}"
    )
    return d


def replicate(args: argparse.Namespace) -> dict[str, Any]:
    path = DATA / "test-1g.bin"
    size = require_test_file(path)
    md5, md5_from = known_md5(path)
    log(
        f"== {NAME}: 1 GiB to two nodes vs plain rsync, {args.runs} runs, "
        f"prefault {PREFAULT_GIB:g} GiB"
    )
    warm(path)
    la0, t_start = os.getloadavg(), time.time()
    det: list[dict[str, dict[str, Any]]] = []
    for i in range(args.runs):
        try:
            det.append(one_run(i, path, md5))
        except BenchError as exc:
            raise BenchError(f"run {i + 1}: {exc}") from exc
        settle(False)  # the deleted run's writeback must not leak into the next timing
    tool = f"{project_version()}, {tool_version(['rsync', '--version'])}"
    what = {
        "ours": (
            "pyarchive replicate 1 GiB to 2 nodes, completion answer -> 2 confirmed",
            "two rsync --partial --inplace pushes in parallel + node confirm (md5+sha256 "
            "re-read, fsync, rename); polled every 20 ms",
        ),
        "rsync-local": (
            "plain rsync --partial --inplace 1 GiB, local dir -> fresh local dir",
            "same disk, no daemon, no fsync",
        ),
        "rsync-daemon": (
            "plain rsync --partial --inplace 1 GiB -> a node's rsync daemon (loopback)",
            "rsync://pyarchive@127.0.0.1:PORT/incoming/NAME, no fsync",
        ),
    }
    rows = []
    for key, (label, notes) in what.items():
        runs = [d[key] for d in det]
        rows.append(row(f"{label}: time", [r["seconds"] for r in runs], "s", runs, tool, notes))
        rows.append(row(label, [r["mb_s"] for r in runs], "MB/s", [], tool, notes))
    ratio = statistics.median(d["ours"]["seconds"] for d in det) / statistics.median(
        d["rsync-daemon"]["seconds"] for d in det
    )
    rows.append(
        row(
            "pyarchive replicate / plain rsync to a node's daemon: time ratio",
            [d["ours"]["ratio_to_rsync_daemon"] for d in det],
            "x",
            [],
            tool,
            f"per run; ratio of the medians: {ratio:.2f}",
        )
    )
    retried = [i + 1 for i, d in enumerate(det) if d["ours"]["failed_copies_seen"]]
    out = {
        "measurement": NAME,
        "description": "time from upload completion to two confirmed replicas of the 1 GiB "
        "test file, beside plain rsync --partial --inplace to a local dir and to a node's daemon",
        "runs": args.runs,
        **sitting(t_start, la0),
        "file": str(path),
        "size": size,
        "md5": md5,
        "md5_from": md5_from,
        "poll_interval_s": POLL_S,
        "ratio_of_medians": ratio,
        "runs_with_a_retried_copy": retried,
        "proxy_env": tuning_env(_SET_HERE),
        "rows": rows,
    }
    write_result(NAME, out)
    for r in rows:
        print_result(r, 2 if r["unit"] in ("s", "x") else 1)
    print(
        f"RESULT pyarchive replicate / plain rsync to a node's daemon (ratio of median times): "
        f"{ratio:.2f}x",
        flush=True,
    )
    if retried:
        print(
            f"NOTE runs {retried}: a copy failed and was retried (rsync again after the "
            f"proxy's back-off), which is in those times; see {LOGS / 'pyarchive-proxy.log'}",
            flush=True,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["replicate"])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "5")))
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be positive")
    sigterm_exits()
    return main_wrapper("replicate", lambda: replicate(args))


if __name__ == "__main__":
    raise SystemExit(main())
