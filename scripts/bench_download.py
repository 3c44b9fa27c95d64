"""PyArchive's download benchmark, measured like the anchors in ../shared/bench (see its README).

Run through ``scripts/bench`` (which makes sure .venv exists):

    scripts/bench download [--runs N]    N runs of three downloads from one node
    scripts/bench compare-download [--runs N]
        ../shared/bench/bench.sh nginx-get-file, nginx-range and aria2c, then download, then
        the ratios of the medians
    scripts/bench download-ratios        the ratios of the stored results only

Set up once, untimed: a fresh ``pyarchive-proxy`` (SQLite, a temporary data dir under
$BENCH_DATA, PYARCHIVE_REPLICAS=1 so that one confirmed replica suffices) and ONE fresh
``pyarchive-node`` (registered with ``pyarchive-proxy nodes add``, cluster secret shared); the
1 GiB test file is uploaded (raw 8 MiB Content-Range chunks + the md5 completion, as
``scripts/bench upload``) and ``GET /storage/files/<id>/`` is polled until its replica is
``confirmed``; the node's copy is then read once into the page cache (bench.py's warm()).

Each run then times three commands, each right after bench.py's settle() (sync, 1 s pause,
prefault), as bench.py's wall time of the whole command (process start included):

    curl-file   curl -sS --fail -L -H "Authorization: JWT ..." -o $BENCH_DATA/dl/FILE URL
                (the proxy answers 307 to the node's signed /download/<token> URL)
    curl-range  the same with -r 536870912- -o /dev/null: the second half (512 MiB), 206
    aria2c      aria2c -x4 -s4 --header "Authorization: JWT ..." with bench.py's options

Checked every run: HTTP status, bytes (``-w %{size_download}``, the file's size); on the first
run the md5 of the curl and aria2c files. Output files are deleted before the settle() and
after each run. Measured per command: MB/s (1 MB = 10^6 bytes), the node's peak RSS (VmHWM,
reset to the current RSS before each command with /proc/PID/clear_refs) and the node's CPU
seconds (utime+stime, all its threads) per GiB sent. The proxy and the node are stopped by
their PIDs at the end (the node's rsync daemon too), even on error.
Per-run data: $BENCH_DATA/results/pyarchive-download.json, in bench.py's format.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import (
    DATA,
    GIB,
    MB,
    PREFAULT_GIB,
    RUN_TIMEOUT,
    SHARED,
    BenchError,
    Cluster,
    Node,
    cpu_times,
    known_md5,
    load_result,
    log,
    main_wrapper,
    md5_file,
    print_result,
    proc_cpu_s,
    proc_status_kb,
    project_version,
    remove,
    require_test_file,
    reset_peak_rss,
    row,
    settle,
    sigterm_exits,
    sitting,
    sitting_notes,
    steal_pct,
    timed_command,
    tool_version,
    tuning_env,
    upload_file,
    wait_confirmed,
    warm,
    write_result,
)

NAME = "pyarchive-download"
CHUNK = 8 << 20
DL = DATA / "dl"
# The "Benchmark" section: whole-file download >= 0.9x nginx's curl -o file.
TARGET_GET_FILE = 0.9
_SET_HERE = frozenset({"PYARCHIVE_CLUSTER_SECRET", "PYARCHIVE_REPLICAS"})


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    anchor: str  # the bench.py measurement it is compared with
    notes: str


MEASURES = (
    Measure(
        "curl-file",
        "pyarchive download 1 GiB through the redirect, curl -L -o file (no fsync)",
        "nginx-get-file",
        "307 from the proxy, then the node's signed URL; written to page cache, like aria2c",
    ),
    Measure(
        "curl-range",
        "pyarchive download Range 2nd half (512 MiB) through the redirect, curl -L -o /dev/null",
        "nginx-range",
        "206 Partial Content; MB/s over 512 MiB",
    ),
    Measure(
        "aria2c",
        "pyarchive download 1 GiB through the redirect, aria2c -x4 -s4",
        "aria2c",
        "written to file (falloc, page cache, no fsync); --header carries the JWT",
    ),
)


def curl_argv(token: str, url: str, out: str, extra: list[str]) -> list[str]:
    return [
        "curl", "-sS", "--fail", "-L", "-H", f"Authorization: JWT {token}", *extra,
        "-o", out, "-w",
        "%{http_code} %{size_download} %{num_redirects} %{time_redirect} %{time_starttransfer} "
        "%{url_effective}", url,
    ]  # fmt: skip


def aria2c_argv(token: str, url: str, out: Path) -> list[str]:
    """bench.py's aria2c command (-x4 -s4), plus the proxy's Authorization header."""
    return [
        "aria2c", "--no-conf", "-x4", "-s4", "--file-allocation=falloc",
        "--allow-overwrite=true", "--auto-file-renaming=false", "--summary-interval=0",
        "--console-log-level=warn", "--download-result=hide", "-q",
        f"--header=Authorization: JWT {token}", "-d", str(out.parent), "-o", out.name, url,
    ]  # fmt: skip


def curl_check(p: subprocess.CompletedProcess[str], code: str, size: int) -> dict[str, Any]:
    try:
        got_code, got_size, redirects, redirect_s, first_byte_s, effective = p.stdout.split(" ", 5)
        before_body = {
            "redirect_ms": float(redirect_s) * 1000,
            "first_byte_ms": float(first_byte_s) * 1000,
        }
    except ValueError:
        raise BenchError(f"unexpected curl -w output {p.stdout!r:.200}") from None
    if got_code != code or int(got_size) != size:
        raise BenchError(f"curl got HTTP {got_code} with {got_size} bytes, not {code}, {size}")
    if redirects != "1" or "/download/" not in effective:
        raise BenchError(f"curl was not redirected to a node ({redirects} redirects: {effective})")
    return {
        "http": got_code,
        "bytes": int(got_size),
        "redirected_to": effective.split("/download/")[0],  # without the token
        **before_body,  # the proxy's 307 and the node's first byte, counted from curl's start
    }


def one_measure(
    m: Measure, i: int, cluster: Cluster, node: Node, url: str, size: int, md5: str
) -> dict[str, Any]:
    assert cluster.proxy is not None
    token = cluster.token
    out = DL / ("pyarchive-aria2.bin" if m.key == "aria2c" else "pyarchive-curl.bin")
    remove(out)
    remove(Path(str(out) + ".aria2"))
    prefault_s = settle()
    cluster.check_alive()
    hwm_reset = reset_peak_rss(node.pid)
    rss0 = proc_status_kb(node.pid, "VmRSS") or 0
    s0, p0 = proc_cpu_s(node.pid), proc_cpu_s(cluster.proxy.pid)
    k0 = cpu_times()
    if m.key == "curl-file":
        nbytes = size
        secs, p, client_cpu = timed_command(curl_argv(token, url, str(out), []))
    elif m.key == "curl-range":
        nbytes = size - size // 2
        secs, p, client_cpu = timed_command(
            curl_argv(token, url, "/dev/null", ["-r", f"{size // 2}-"])
        )
    else:
        nbytes = size
        secs, p, client_cpu = timed_command(aria2c_argv(token, url, out))
    s1, p1 = proc_cpu_s(node.pid), proc_cpu_s(cluster.proxy.pid)
    hwm = proc_status_kb(node.pid, "VmHWM")
    k1 = cpu_times()
    if s0 is None or s1 is None or p0 is None or p1 is None or hwm is None:
        cluster.check_alive()
        raise BenchError("could not read /proc of the node or the proxy")
    d: dict[str, Any] = {}
    if m.key == "aria2c":
        got = out.stat().st_size if out.exists() else -1
        if got != size:
            raise BenchError(f"aria2c left {got} bytes, not {size}")
    else:
        d.update(curl_check(p, "206" if m.key == "curl-range" else "200", nbytes))
        if m.key == "curl-file" and out.stat().st_size != size:
            raise BenchError(f"curl wrote {out.stat().st_size} bytes, not {size}")
    if i == 0 and m.key != "curl-range":
        got_md5 = md5_file(out)
        if got_md5 != md5:
            raise BenchError(f"{m.key}: md5 of the download is {got_md5}, not {md5}")
        d["md5_ok"] = True
    remove(out)
    d.update(
        seconds=secs,
        mb_s=nbytes / secs / MB,
        bytes=nbytes,
        peak_rss_mib=hwm / 1024,
        peak_rss_reset=hwm_reset,
        rss_start_mib=rss0 / 1024,
        server_cpu_s=s1 - s0,
        proxy_cpu_s=p1 - p0,
        client_cpu_s=client_cpu,
        steal_pct=steal_pct(k0, k1),
        prefault_seconds=prefault_s,
    )
    log(
        f"  run {i + 1} {m.key:10s}: {d['mb_s']:.0f} MB/s, "
        f"node peak RSS {d['peak_rss_mib']:.0f} MiB "
        f"(start {d['rss_start_mib']:.0f}), CPU s: node {d['server_cpu_s']:.2f}, "
        f"proxy {d['proxy_cpu_s']:.2f}, {m.key.split('-')[0]} {client_cpu:.2f}"
        + (
            f"; 307 done at {d['redirect_ms']:.1f} ms, first byte at {d['first_byte_ms']:.1f} ms"
            if "first_byte_ms" in d
            else ""
        )
    )
    return d


def download(args: argparse.Namespace) -> dict[str, Any]:
    path = DATA / "test-1g.bin"
    size = require_test_file(path)
    md5, md5_from = known_md5(path)
    log(f"== {NAME}: 1 GiB from one node through the proxy's redirect, {args.runs} runs, "
        f"prefault {PREFAULT_GIB:g} GiB")  # fmt: skip
    DL.mkdir(parents=True, exist_ok=True)
    la0, t_start = os.getloadavg(), time.time()
    det: dict[str, list[dict[str, Any]]] = {m.key: [] for m in MEASURES}
    cluster = Cluster(DATA, [("node1", "a")], {"PYARCHIVE_REPLICAS": "1"})
    try:
        (node,) = cluster.nodes
        assert cluster.proxy is not None
        log(f"  set-up: proxy pid {cluster.proxy.pid} at {cluster.proxy.base}, node pid "
            f"{node.pid} at {node.url}; uploading {path.name} (untimed)")  # fmt: skip
        warm(path)
        t0 = time.perf_counter()
        answer = upload_file(cluster, path, CHUNK, md5)
        file_id = answer["file_id"]
        t1 = time.perf_counter()
        waited = wait_confirmed(cluster, file_id, 1, RUN_TIMEOUT)
        t2 = time.perf_counter()
        (replica,) = node.replica_files()
        if replica.stat().st_size != size:
            raise BenchError(f"the node holds {replica.stat().st_size} bytes, not {size}")
        warm(replica)
        retried = f" (after a failed copy to {', '.join(waited['failed'])}, retried)"
        log(f"  set-up: upload {t1 - t0:.1f} s, replica confirmed {t2 - t1:.1f} s later"
            f"{retried if waited['failed'] else ''}")  # fmt: skip
        setup = {
            "upload_seconds": t1 - t0,
            "confirm_wait_seconds": t2 - t1,
            "failed_copies_seen": waited["failed"],
        }
        url = f"{cluster.proxy.base}/storage/download/{file_id}/"
        for i in range(args.runs):
            for m in MEASURES:
                try:
                    det[m.key].append(one_measure(m, i, cluster, node, url, size, md5))
                except BenchError as exc:
                    raise BenchError(f"run {i + 1}, {m.key}: {exc}") from exc
        node_hwm_total = (proc_status_kb(node.pid, "VmHWM") or 0) / 1024
    finally:
        cluster.stop()
        for name in ("pyarchive-curl.bin", "pyarchive-aria2.bin", "pyarchive-aria2.bin.aria2"):
            remove(DL / name)
    settle(False)  # the deleted runs' writeback must not leak into what follows
    version = project_version()
    tools = {"curl": tool_version(["curl", "--version"]), "aria2c": tool_version(["aria2c", "-v"])}
    rows = []
    for m in MEASURES:
        runs = det[m.key]
        t = f"{version}, {tools['aria2c' if m.key == 'aria2c' else 'curl']}"
        nbytes = runs[0]["bytes"]
        for r in (
            row(m.label, [d["mb_s"] for d in runs], "MB/s", runs, t, m.notes),
            row(
                f"{m.label}: node peak RSS",
                [d["peak_rss_mib"] for d in runs],
                "MiB",
                [],
                t,
                "VmHWM of the pyarchive-node process, reset before the command (clear_refs)",
            ),
            row(
                f"{m.label}: server CPU per GiB",
                [d["server_cpu_s"] * GIB / nbytes for d in runs],
                "CPU s/GiB",
                [],
                t,
                "utime+stime of the pyarchive-node process over the command; proxy_cpu_s "
                "(the redirect) and client_cpu_s per run in the first row's runs",
            ),
        ):
            r.update(measure=m.key, anchor=m.anchor)
            rows.append(r)
    out = {
        "measurement": NAME,
        "description": "downloads of the 1 GiB test file from one pyarchive-node through the "
        "proxy's 307 redirect: curl -L -o file, curl -L -r 536870912- -o /dev/null, "
        "aria2c -x4 -s4",
        "runs": args.runs,
        **sitting(t_start, la0),
        "file": str(path),
        "size": size,
        "md5": md5,
        "md5_from": md5_from,
        "setup": setup,
        "node_peak_rss_mib_since_start": node_hwm_total,
        "proxy_env": tuning_env(_SET_HERE),
        "rows": rows,
    }
    write_result(NAME, out)
    for r in rows:
        print_result(r)
    return out


# ---------------------------------------------------------------- anchors and ratios


def first(result: dict[str, Any], unit: str, measure: str | None = None) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in result["rows"]
            if r["unit"] == unit and (measure is None or r.get("measure") == measure)
        ),
        None,
    )


def ratios() -> None:
    """Ours / each anchor: medians of MB/s, and of server CPU s/GiB where the anchor has it."""
    hint = "run scripts/bench compare-download (or the anchors and scripts/bench download)"
    ours = load_result(NAME, hint)
    print(
        f"COMPARE medians; ours: {ours['started']}, {ours['runs']} runs, "
        f"prefault {ours.get('prefault_gib'):g} GiB"
    )
    for m in MEASURES:
        other = load_result(m.anchor, hint)
        print(f"  {m.key} vs {m.anchor} ({other['started']}, {other['runs']} runs)"
              f"{sitting_notes(ours, other)}")  # fmt: skip
        for unit, what in (("MB/s", "throughput"), ("CPU s/GiB", "server CPU")):
            a, b = first(ours, unit, m.key), first(other, unit)
            if a is None or b is None:
                continue
            r = a["median"] / b["median"]
            verdict = ""
            if unit == "MB/s" and m.key == "curl-file":
                ok = r >= TARGET_GET_FILE
                verdict = f" (target >= {TARGET_GET_FILE:g}x){' ok' if ok else ' BELOW TARGET'}"
            elif unit == "CPU s/GiB":
                verdict = " (lower is better)"
            print(
                f"    {what}: ours {a['median']:.2f} / {b['median']:.2f} {unit} = {r:.2f}x{verdict}"
            )


def compare(args: argparse.Namespace) -> None:
    for m in MEASURES:
        p = subprocess.run([str(SHARED / "bench.sh"), m.anchor, "--runs", str(args.runs)])
        if p.returncode != 0:
            raise BenchError(f"../shared/bench/bench.sh {m.anchor} exited {p.returncode}")
    download(args)
    ratios()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["download", "compare", "ratios"])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "5")))
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be positive")
    sigterm_exits()
    work = {"download": lambda: download(args), "compare": lambda: compare(args), "ratios": ratios}
    label = {"download": "download", "compare": "compare-download", "ratios": "download-ratios"}
    return main_wrapper(label[args.what], work[args.what])


if __name__ == "__main__":
    raise SystemExit(main())
