"""PyArchive's small-file ingest and replication drain, beside tuspyserver in the same sitting.

Run through ``scripts/bench`` (which makes sure .venv exists):

    scripts/bench small-files [--files N] [--jobs J]

One sitting, set up the way ``scripts/run-local`` is (untimed): moto's S3 server on a loopback
port with an empty bucket, configured as the proxy's active S3 connection (``pyarchive-proxy s3
add ... --activate``), two fresh ``pyarchive-node``s (zones a and b, real rsync daemons) and a
fresh ``pyarchive-proxy`` (SQLite, PYARCHIVE_REPLICAS=2, PYARCHIVE_MIRROR_SYNC_INTERVAL=1s so
that the mirror-sync job runs every second instead of every 5 s). Three sets of N 1 KiB files
of distinct random content (N = --files, default 20000) are written under $BENCH_DATA. Then,
each set through J threads (--jobs, default 4; ``pyarchive sync``/``upload`` run 2 by default,
``--jobs`` up to 32), each thread with a client of its own, one after the other:

    put      set 1 through the seed API with the project's client library, the way it sends a
             file larger than 256 KiB or one chunk: its ``ChunkedUpload`` (one Content-Range PUT,
             then the md5 completion POST), on a ``PyArchiveClient``'s connection.
    drain    from the same first request: polling the proxy's SQLite database (read-only, the
             confirmed replicas every 0.1 s, the mirrored blobs every 0.5 s) until every blob
             has two ``confirmed`` replicas, and until every one is ``mirrored`` (and
             verified) in S3. Drain rate = N / (first upload .. the poll that
             saw the last second replica); ratio drain / ingest.
    tus      set 2 over tus 1.0 at /files/ with tuspy's ``TusClient`` (``uploader(path,
             chunk_size=8 MiB, retries=0).upload()``: creation POST + one PATCH per file); then
             its drain, as above.
    post     set 3 through ``PyArchiveClient.upload()`` itself, which sends a file this small in
             one ``POST /storage/tmp-upload/?filename=NAME&md5=MD5`` (what ``pyarchive sync``
             sends for small files). Its drain is not waited for.
    backlog  the replication's own pace, with no ingest beside it: a second fresh proxy (S3 the
             same way, its own bucket) with no node takes set 3 by ``post`` (nothing can be
             replicated, so every file waits); then two fresh nodes are registered through
             ``POST /api/nodes/`` and, from the moment the proxy sees both up, its database is
             polled every 0.1 s until it records 2 N confirmed replicas. Backlog drain rate =
             N / that time; it is set beside the fastest of the live ingests above (target:
             at least that, and at least 200 files/s).
    alone    tus again, set 2 with the same tuspy client and J threads, to a third fresh proxy
             with no node and no S3 connection: what the anchor below is, a server alone on the
             machine (the tus phase above shares the two cores with replication, the mirror and
             moto).
    anchor   the proxy and nodes stopped, tuspyserver (../shared/bench/tus_app.py under uvicorn
             --http httptools --loop uvloop, one worker, from $BENCH_VENV, as bench.py's ``tus``
             anchor) creating and finishing set 2 with the same tuspy client and J threads.

Ingest rate = N / (first request .. last answer). The clients run in this process (the same
tuspy for ours and the anchor). Checked: every seed answer is complete, every tus upload ends
at offset 1024, the proxy holds one blob per file, the anchor's directory N finished files.
Reported: files/s of the five ingests, the drains' seconds and files/s, drain / ingest and
how long after the last upload's answer the last copy was seen, the backlog's drain and its
ratio to the fastest live ingest, tus to a proxy alone beside tuspyserver, CPU seconds of
the servers. A run of --files 500 takes about two minutes.
Per-run data: $BENCH_DATA/results/pyarchive-smallfiles.json, in bench.py's format.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import mmap
import os
import queue
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import (
    BENCH_VENV,
    DATA,
    LOGS,
    RUN_TIMEOUT,
    SHARED,
    BenchError,
    Cluster,
    Node,
    cpu_times,
    expect,
    free_port,
    log,
    main_wrapper,
    print_result,
    proc_cpu_s,
    project_version,
    remove,
    row,
    sigterm_exits,
    sitting,
    steal_pct,
    stop_pid,
    tuning_env,
    write_result,
)
from bench_mirror import Moto

NAME = "pyarchive-smallfiles"
SIZE = 1024
CHUNK = 8 << 20
POLL_S = 0.5
BUCKET = "bench-smallfiles"
BACKLOG_BUCKET = "bench-smallfiles-backlog"
REPLICAS_POLL_S = 0.1
PROXY_ENV = {"PYARCHIVE_REPLICAS": "2", "PYARCHIVE_MIRROR_SYNC_INTERVAL": "1s"}
_SET_HERE = frozenset({"PYARCHIVE_CLUSTER_SECRET", *PROXY_ENV})
# Our three ways in, in the order they run, each with a set of its own.
WAYS = {
    "put": "seed API, PUT + completion",
    "tus": "tus",
    "post": "seed API, single POST",
}
# The last set's drain is not waited for (nothing runs after it on the proxy): it keeps a
# --files 500 run within a couple of minutes.
DRAINED = ("put", "tus")
WAY_NOTES = {
    "put": "client library's ChunkedUpload: one Content-Range PUT, then the md5 completion POST",
    "post": "PyArchiveClient.upload(): one POST ?filename=&md5= with the file (what sync sends)",
    "tus": "tuspy TusClient: creation POST + one PATCH per file",
}


def make_files(root: Path, prefix: str, n: int) -> list[Path]:
    """``n`` files of ``SIZE`` random bytes each (distinct content: no two share a blob)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"{prefix}{i:06d}.bin"
        p.write_bytes(os.urandom(SIZE))
        paths.append(p)
    return paths


def in_threads(paths: list[Path], jobs: int, make: Callable[[], Callable[[Path], None]]) -> float:
    """Send every path with ``jobs`` threads, each with its own sender from ``make()``.

    Returns the wall seconds from the first request to the last answer; the first failure
    stops the others and is raised.
    """
    work: queue.Queue[Path] = queue.Queue()
    for p in paths:
        work.put(p)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            send = make()
            while not failures:
                try:
                    p = work.get_nowait()
                except queue.Empty:
                    return
                send(p)
        except BaseException as exc:  # reported by the caller
            failures.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(jobs)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    end = t0 + max(RUN_TIMEOUT, len(paths) * 0.2)
    for t in threads:
        t.join(max(0.0, end - time.perf_counter()))
        if t.is_alive():
            failures.append(BenchError(f"the uploads did not finish in {end - t0:.0f} s"))
            break
    secs = time.perf_counter() - t0
    if failures:
        exc = failures[0]
        raise BenchError(f"an upload failed: {type(exc).__name__}: {exc}") from exc
    return secs


def seed_sender(base: str, token: str, chunked: bool) -> Callable[[], Callable[[Path], None]]:
    """The client library's upload: ``PyArchiveClient.upload()`` (one POST with the md5 for a
    file this small) or, ``chunked``, the library's resumable upload that ``upload()`` runs for
    a file over one chunk or 256 KiB (one Content-Range PUT, then the md5 completion POST)."""
    from client import PyArchiveClient
    from client._upload import ChunkedUpload

    def make() -> Callable[[Path], None]:
        c = PyArchiveClient(base, token, timeout=RUN_TIMEOUT)

        def chunked_upload(p: Path) -> dict[str, Any]:
            start = c._url("/storage/tmp-upload/", {"filename": p.name})
            with (
                open(p, "rb") as f,
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
                memoryview(mapped) as view,
            ):
                return ChunkedUpload(
                    c._send, c._sleep, view, start, resume_url=None, chunk_size=CHUNK,
                    retries=0, on_progress=None, on_started=None,
                ).run()  # fmt: skip

        def send(p: Path) -> None:
            if chunked:
                answer = chunked_upload(p)
            else:
                answer = c.upload(p, chunk_size=CHUNK, retries=0)
            if answer.get("status") != 2:
                raise BenchError(f"{p.name}: the upload ended with status {answer.get('status')}")

        return send

    return make


def tus_sender(url: str, headers: dict[str, str]) -> Callable[[], Callable[[Path], None]]:
    from tusclient.client import TusClient

    def make() -> Callable[[Path], None]:
        tus = TusClient(url, headers=headers)

        def send(p: Path) -> None:
            up = tus.uploader(
                str(p),
                chunk_size=CHUNK,
                metadata={"filename": p.name, "filetype": "application/octet-stream"},
                retries=0,
            )
            up.upload()
            if up.offset != SIZE:
                raise BenchError(f"{p.name}: tuspy stopped at offset {up.offset}, not {SIZE}")

        return send

    return make


def counts(db: Path) -> tuple[int, int, int]:
    """(blobs, blobs with >= 2 confirmed replicas, blobs mirrored and verified) in the DB."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        blobs = con.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
        two = con.execute(
            "SELECT COUNT(*) FROM (SELECT blob_id FROM replicas WHERE state = 'confirmed'"
            " GROUP BY blob_id HAVING COUNT(*) >= 2)"
        ).fetchone()[0]
        mirrored = con.execute(
            "SELECT COUNT(*) FROM blobs WHERE remote_state = 'mirrored' AND remote_verified = 1"
        ).fetchone()[0]
    finally:
        con.close()
    return int(blobs), int(two), int(mirrored)


def drain(cluster: Cluster, n: int, t0: float, timeout: float) -> dict[str, Any]:
    """Poll until ``n`` blobs have two confirmed replicas and are mirrored; seconds since t0.

    The confirmed replica rows are counted every ``REPLICAS_POLL_S`` (a cheap count) until
    there are ``2 n`` of them (two per blob: no blob gets more), the blobs and the mirrored
    ones every ``POLL_S``."""
    assert cluster.proxy is not None
    db = cluster.proxy.data_dir / "pyarchive.sqlite3"
    replicated_s = mirrored_s = None
    last = (0, 0, 0)
    end = time.perf_counter() + timeout
    next_count = 0.0
    while replicated_s is None or mirrored_s is None:
        cluster.check_alive()
        now = time.perf_counter()
        try:
            if replicated_s is None and confirmed(db) >= 2 * n:
                replicated_s = now - t0
                log(f"  every file has two confirmed replicas after {replicated_s:.1f} s")
            if now >= next_count or replicated_s is not None:
                last, next_count = counts(db), now + POLL_S
        except sqlite3.OperationalError as exc:  # locked for longer than 10 s: try again
            log(f"  (poll: {exc})")
        if mirrored_s is None and last[2] >= n:
            mirrored_s = now - t0
            log(f"  every file is mirrored to S3 after {mirrored_s:.1f} s")
        if now > end:
            raise BenchError(
                f"after {timeout:.0f} s: {last[1]} of {n} blobs with two confirmed replicas, "
                f"{last[2]} mirrored (logs: {LOGS})"
            )
        time.sleep(REPLICAS_POLL_S if replicated_s is None else POLL_S)
    if last[1] < n:
        raise BenchError(f"{2 * n} replicas confirmed but only {last[1]} blobs have two")
    return {"replicated_s": replicated_s, "mirrored_s": mirrored_s, "blobs": last[0]}


def confirmed(db: Path) -> int:
    """Confirmed replica rows in the proxy's database (cheaper than ``counts`` to poll)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT COUNT(*) FROM replicas WHERE state = 'confirmed'")
                   .fetchone()[0])  # fmt: skip
    finally:
        con.close()


def server_ingest(
    pid: int, paths: list[Path], jobs: int, make: Callable[[], Callable[[Path], None]]
) -> tuple[float, float, float]:
    """``in_threads`` timed with one server's CPU: (seconds, its CPU seconds, steal %)."""
    c0, k0 = proc_cpu_s(pid) or 0.0, cpu_times()
    secs = in_threads(paths, jobs, make)
    c1, k1 = proc_cpu_s(pid) or 0.0, cpu_times()
    return secs, round(c1 - c0, 2), steal_pct(k0, k1)


def alone(paths: list[Path], jobs: int) -> dict[str, Any]:
    """tus to a fresh proxy with no node and no S3: files/s and the proxy's CPU."""
    n = len(paths)
    cluster = Cluster(DATA, [], {})
    try:
        assert cluster.proxy is not None
        proxy = cluster.proxy
        send = tus_sender(f"{proxy.base}/files/", {"Authorization": f"JWT {cluster.token}"})
        secs, cpu, steal = server_ingest(proxy.pid, paths, jobs, send)
        if (blobs := counts(proxy.data_dir / "pyarchive.sqlite3")[0]) != n:
            raise BenchError(f"the proxy alone holds {blobs} blobs, not {n}")
    finally:
        cluster.stop()
    return {"seconds": secs, "files_s": n / secs, "cpu_s": {"proxy": cpu}, "steal_pct": steal}


def backlog(paths: list[Path], jobs: int, moto: Moto, timeout: float) -> dict[str, Any]:
    """A node-less proxy takes ``paths``; then two nodes join: seconds until all are copied."""
    n = len(paths)
    cluster = Cluster(DATA, [], PROXY_ENV, prepare=moto.active_connection(BACKLOG_BUCKET))
    try:
        assert cluster.proxy is not None and cluster.conn is not None
        db = cluster.proxy.data_dir / "pyarchive.sqlite3"
        ingest_s = in_threads(paths, jobs, seed_sender(cluster.proxy.base, cluster.token, False))
        if (blobs := counts(db)[0]) != n:
            raise BenchError(f"the backlog proxy holds {blobs} blobs, not {n}")
        log(f"  {n / ingest_s:.0f} files/s with no node; two nodes join")
        for name, zone in (("node1", "a"), ("node2", "b")):
            cluster.nodes.append(Node(DATA, name, zone, cluster.secret))  # stopped with it
        for node in cluster.nodes:
            node.wait_ready()
            status, answer = cluster.conn.json("POST", "/api/nodes/", {
                "name": node.name, "url": node.url, "zone": node.zone,
                "rsync_url": node.rsync_url,
            })  # fmt: skip
            expect(f"adding {node.name}", status, answer, ok=(201,))
        cluster.wait_nodes_up()
        c0 = {"proxy": proc_cpu_s(cluster.proxy.pid) or 0.0}
        c0.update((node.name, proc_cpu_s(node.pid) or 0.0) for node in cluster.nodes)
        t0 = time.perf_counter()
        while (done := confirmed(db)) < 2 * n:
            cluster.check_alive()
            if time.perf_counter() - t0 > timeout:
                raise BenchError(f"after {timeout:.0f} s: {done} of {2 * n} replicas confirmed")
            time.sleep(REPLICAS_POLL_S)
        drain_s = time.perf_counter() - t0
        cpu = {"proxy": round((proc_cpu_s(cluster.proxy.pid) or 0.0) - c0["proxy"], 2)}
        cpu.update(
            (node.name, round((proc_cpu_s(node.pid) or 0.0) - c0[node.name], 2))
            for node in cluster.nodes
        )
    finally:
        cluster.stop()
    log(f"  the backlog of {n} files has two confirmed replicas after {drain_s:.1f} s")
    return {
        "ingest_s": ingest_s, "ingest_files_s": n / ingest_s, "drain_s": drain_s,
        "drain_files_s": n / drain_s, "cpu_s_drain": cpu,
    }  # fmt: skip


class TusServer:
    """tuspyserver as bench.py's ``tus`` anchor starts it, on a free port, stopped by PID."""

    def __init__(self, files_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/files/"
        self.logf = open(LOGS / "tuspyserver-smallfiles.log", "ab")
        self.proc = subprocess.Popen(
            [str(BENCH_VENV / "bin" / "python"), "-m", "uvicorn", "tus_app:app",
             "--app-dir", str(SHARED), "--host", "127.0.0.1", "--port", str(self.port),
             "--http", "httptools", "--loop", "uvloop", "--no-access-log",
             "--log-level", "warning", "--workers", "1"],
            stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "TUS_FILES_DIR": str(files_dir)},
        )  # fmt: skip
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BenchError(f"tuspyserver exited ({self.proc.returncode}), see its log")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise BenchError("tuspyserver did not accept connections within 30 s")

    def stop(self) -> None:
        stop_pid(self.proc)
        self.logf.close()


def anchor(paths: list[Path], jobs: int, root: Path) -> dict[str, Any]:
    files_dir = root / "tus-files"
    files_dir.mkdir()
    srv = TusServer(files_dir)
    try:
        secs, cpu, steal = server_ingest(srv.proc.pid, paths, jobs, tus_sender(srv.url, {}))
    finally:
        srv.stop()
    done = [f for f in files_dir.iterdir() if f.suffix != ".info" and f.stat().st_size == SIZE]
    if len(done) != len(paths):
        raise BenchError(f"tuspyserver holds {len(done)} finished files, not {len(paths)}")
    return {"seconds": secs, "files_s": len(paths) / secs, "server_cpu_s": cpu, "steal_pct": steal}


def smallfiles(args: argparse.Namespace) -> dict[str, Any]:
    n, jobs = args.files, args.jobs
    log(f"== {NAME}: {n} files of 1 KiB, {jobs} concurrent uploads, two nodes + S3 (moto)")
    la0, t_start = os.getloadavg(), time.time()
    LOGS.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pyarchive-bench-small-", dir=DATA))
    moto = cluster = None
    ours: dict[str, dict[str, Any]] = {}
    try:
        sets = {way: make_files(root / way, f"{way}-", n) for way in WAYS}
        moto = Moto()
        zones = [("node1", "a"), ("node2", "b")]
        cluster = Cluster(DATA, zones, PROXY_ENV, prepare=moto.active_connection(BUCKET))
        assert cluster.proxy is not None
        proxy, nodes = cluster.proxy, cluster.nodes

        def cpu() -> dict[str, float]:
            snap = {"proxy": proc_cpu_s(proxy.pid) or 0.0}
            snap.update((node.name, proc_cpu_s(node.pid) or 0.0) for node in nodes)
            return snap

        def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {k: round(b[k] - a[k], 2) for k in a}

        auth = {"Authorization": f"JWT {cluster.token}"}
        senders = {
            "put": seed_sender(proxy.base, cluster.token, chunked=True),
            "post": seed_sender(proxy.base, cluster.token, chunked=False),
            "tus": tus_sender(f"{proxy.base}/files/", auth),
        }
        for k, way in enumerate(WAYS, start=1):
            log(f"  {WAYS[way]}: {n} files, {jobs} threads")
            c0, k0 = cpu(), cpu_times()
            t0 = time.perf_counter()
            secs = in_threads(sets[way], jobs, senders[way])
            c1, k1 = cpu(), cpu_times()
            ours[way] = {
                "seconds": secs, "files_s": n / secs, "cpu_s": delta(c0, c1),
                "steal_pct": steal_pct(k0, k1),
            }  # fmt: skip
            if way not in DRAINED:
                log(f"  {n / secs:.0f} files/s")
                blobs = counts(proxy.data_dir / "pyarchive.sqlite3")[0]
                if blobs != k * n:
                    raise BenchError(f"the proxy holds {blobs} blobs, not {k * n}")
                continue
            log(f"  {n / secs:.0f} files/s; waiting for two replicas and S3")
            waited = drain(cluster, k * n, t0, args.drain_timeout)
            if waited["blobs"] != k * n:
                raise BenchError(f"the proxy holds {waited['blobs']} blobs, not {k * n}")
            rep_s, mir_s = float(waited["replicated_s"]), float(waited["mirrored_s"])
            ours[way].update(
                replicated_s=rep_s, mirrored_s=mir_s, drain_files_s=n / rep_s,
                last_copy_after_last_upload_s=rep_s - secs,
                mirror_files_s=n / mir_s, ratio_drain_to_ingest=(n / rep_s) / (n / secs),
                cpu_s_upload_to_mirrored=delta(c0, cpu()),
            )  # fmt: skip
        cluster.stop()
        cluster = None
        log(f"  backlog: {n} files by single POST to a proxy with no node, then two nodes")
        waiting = backlog(sets["post"], jobs, moto, args.drain_timeout)
        log(f"  tus to a proxy alone (no node, no S3): {n} files, {jobs} threads")
        bare = alone(sets["tus"], jobs)
        log(f"  {bare['files_s']:.0f} files/s")
        log(f"  tuspyserver: {n} files, {jobs} threads")
        anc = anchor(sets["tus"], jobs, root)
    finally:
        problems = []
        for part in (cluster, moto):
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:
                    problems.append(str(exc))
        remove(root)
        if problems:
            raise BenchError("; ".join(problems))

    tusv = importlib.metadata.version("tuspy")
    tool = f"{project_version()}, client library, tuspy {tusv}"
    what = f"{n} x 1 KiB, {jobs} threads"
    rows = []
    for way, label in WAYS.items():
        o = ours[way]
        rows.append(
            row(f"pyarchive small-file ingest, {label} ({what})", [o["files_s"]], "files/s",
                [o], tool, WAY_NOTES[way])
        )  # fmt: skip
        if way not in DRAINED:
            continue
        rows += [
            row(f"pyarchive replication drain after {label}, first upload -> 2 confirmed "
                f"replicas ({what})", [o["drain_files_s"]], "files/s", [], tool,
                f"polled in the SQLite DB every {REPLICAS_POLL_S:g} s"),
            row(f"pyarchive S3 mirror drain after {label}, first upload -> all mirrored "
                f"({what})", [o["mirror_files_s"]], "files/s", [], tool,
                "PYARCHIVE_MIRROR_SYNC_INTERVAL=1s; moto server"),
            row(f"pyarchive replication drain / ingest, {label}",
                [o["ratio_drain_to_ingest"]], "x", [], tool, "files/s over files/s"),
        ]  # fmt: skip
    fastest = max(WAYS, key=lambda way: ours[way]["files_s"])
    backlog_ratio = waiting["drain_files_s"] / ours[fastest]["files_s"]
    rows += [
        row(f"pyarchive small-file ingest, {WAYS['post']}, no node registered ({what})",
            [waiting["ingest_files_s"]], "files/s", [waiting], tool,
            "the backlog set: nothing replicates while it goes in"),
        row(f"pyarchive replication drain of a backlog, two nodes join -> 2 confirmed replicas "
            f"({what})", [waiting["drain_files_s"]], "files/s", [], tool,
            f"polled in the SQLite DB every {REPLICAS_POLL_S:g} s; target >= 200"),
        row(f"pyarchive backlog drain / fastest live ingest ({WAYS[fastest]})",
            [backlog_ratio], "x", [], tool, "files/s over files/s; target >= 1.0"),
    ]  # fmt: skip
    rows.append(
        row(f"pyarchive small-file ingest, tus, a proxy alone: no node, no S3 ({what})",
            [bare["files_s"]], "files/s", [bare], tool, WAY_NOTES["tus"])
    )  # fmt: skip
    rows.append(
        row(f"tuspyserver small-file ingest, same tuspy ({what})", [anc["files_s"]], "files/s",
            [anc], f"tuspyserver (uvicorn httptools/uvloop), tuspy {tusv}",
            "bench.py's tus anchor: no hashing, no fsync, no replication")
    )  # fmt: skip
    out = {
        "measurement": NAME,
        "description": f"ingest of {n} 1 KiB files (seed API PUT + completion, seed API single "
        "POST, tus; tuspyserver as the anchor), and for each of ours the time until every file "
        "has two confirmed replicas and is mirrored to S3; then a backlog of the same files "
        "drained by two nodes that join a node-less proxy",
        "runs": 1,
        **sitting(t_start, la0),
        "files": n,
        "file_size": SIZE,
        "jobs": jobs,
        "poll_interval_s": POLL_S,
        "proxy_env_set_here": PROXY_ENV,
        "proxy_env": tuning_env(_SET_HERE),
        "rows": rows,
    }
    write_result(NAME, out)
    for r in rows:
        print_result(r, 2 if r["unit"] == "x" else 0)
    print(f"RESULT small files, {WAYS['post']}: ingest {ours['post']['files_s']:.0f} files/s")
    for way in DRAINED:
        label, o = WAYS[way], ours[way]
        print(
            f"RESULT small files, {label}: ingest {o['files_s']:.0f} files/s; drain "
            f"{o['drain_files_s']:.0f} files/s (two replicas after {o['replicated_s']:.1f} s, "
            f"S3 after {o['mirrored_s']:.1f} s, the last copy "
            f"{o['last_copy_after_last_upload_s']:.1f} s after the last upload); drain / ingest "
            f"{o['ratio_drain_to_ingest']:.2f}x",
            flush=True,
        )
    print(
        f"RESULT small files, backlog: {n} files taken at {waiting['ingest_files_s']:.0f} files/s "
        f"with no node; two nodes copied them all in {waiting['drain_s']:.1f} s = "
        f"{waiting['drain_files_s']:.0f} files/s (target >= 200); / the fastest live ingest "
        f"({WAYS[fastest]}, {ours[fastest]['files_s']:.0f} files/s) {backlog_ratio:.2f}x "
        "(target >= 1.0)",
        flush=True,
    )
    print(
        f"RESULT small files, tus: ours {ours['tus']['files_s']:.0f} files/s, tuspyserver "
        f"{anc['files_s']:.0f} files/s (same tuspy client, {jobs} threads): ours / tuspyserver "
        f"{ours['tus']['files_s'] / anc['files_s']:.2f}x; a proxy alone (no node, no S3, as "
        f"tuspyserver runs) {bare['files_s']:.0f} files/s = "
        f"{bare['files_s'] / anc['files_s']:.2f}x",
        flush=True,
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["small-files"])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument(
        "--drain-timeout", type=float, default=3600, help="seconds to wait for replicas and S3"
    )
    args = ap.parse_args()
    if args.files < 1 or args.jobs < 1:
        ap.error("--files and --jobs must be positive")
    sigterm_exits()
    return main_wrapper("small-files", lambda: smallfiles(args))


if __name__ == "__main__":
    raise SystemExit(main())
