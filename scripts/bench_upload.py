"""PyArchive's upload benchmark, measured like the anchors in ../shared/bench (see its README).

Run through ``scripts/bench`` (which makes sure .venv exists):

    scripts/bench upload [--runs N] [--chunk-mib 8] [--file PATH] [--client raw|library]
    scripts/bench compare [--runs N]    anchors (tus, django-chunked-upload), then upload, ratios
    scripts/bench ratios                the ratios of the stored results only

Every run starts a fresh ``pyarchive-proxy`` (SQLite, a temporary data dir under $BENCH_DATA,
a free port on 127.0.0.1), registers and logs in a user, then - right after the same
``sync``/1 s pause/prefault step as bench.py's ``settle()`` - times the upload: from the first
chunk PUT to the answer of the completion POST with the file's md5, over one keep-alive
connection. The proxy's peak RSS (VmHWM) and CPU seconds (utime+stime, all its threads) are
read from /proc right after the completion, then the stored file's md5 is checked (untimed) and
the proxy is stopped by its PID (SIGTERM, SIGKILL after 15 s), even on error.

MB/s with 1 MB = 10^6 bytes. Per-run data: $BENCH_DATA/results/pyarchive-upload.json, in
bench.py's format (rows with values, median, min, max).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import (
    _CONTROLLED_ENV,
    DATA,
    GIB,
    MB,
    PREFAULT_GIB,
    PROXY,
    RESULTS,
    ROOT,
    RUN_TIMEOUT,
    SHARED,
    STATUS_COMPLETE,
    BenchError,
    Conn,
    Proxy,
    cpu_times,
    file_md5_raw,
    known_md5,
    log,
    login_raw,
    own_cpu_s,
    proc_cpu_s,
    proc_status_kb,
    project_version,
    require_test_file,
    row,
    settle,
    sitting,
    sitting_notes,
    size_label,
    steal_pct,
    upload_raw,
    warm,
)

NAME = "pyarchive-upload"
ANCHORS = ("tus", "django-chunked-upload")
# From the "Benchmark" section: ours/tus >= 0.8, ours/dcu >= 3, peak RSS < 120 MiB.
TARGETS = {"tus": 0.8, "django-chunked-upload": 3.0}
RSS_LIMIT_MIB = 120
CLIENTS = {
    "raw": "raw http.client (one keep-alive connection, memoryview slices of an mmap, "
    "md5 known beforehand)",
    "library": "client.PyArchiveClient.upload (md5 computed by its thread during the upload)",
}
# Chosen by client CPU, one 1 GiB run each (2026-11-22): raw 0.45 CPU s, the library 2.33 CPU s
# (its md5 thread alone is ~1.5 s/GiB; the raw client knows the md5 beforehand).
DEFAULT_CLIENT = "raw"


# ---------------------------------------------------------------- one run


def one_run(i: int, args: argparse.Namespace, path: Path, md5: str) -> dict[str, Any]:
    size = path.stat().st_size
    proxy = Proxy(DATA)
    conn = None
    client = None
    try:
        proxy.wait_healthy()
        if args.client == "raw":
            conn = Conn(proxy.port)
            login_raw(conn)
        else:
            from client import PyArchiveClient

            client = PyArchiveClient(proxy.base, timeout=RUN_TIMEOUT)
            password = secrets.token_urlsafe(16)
            client.register("bench", password)
            client.login("bench", password)
        rss0 = proc_status_kb(proxy.pid, "VmRSS") or 0
        prefault_s = settle()
        s0 = proc_cpu_s(proxy.pid)
        c0, k0 = own_cpu_s(), cpu_times()
        t0 = time.perf_counter()
        try:
            if conn is not None:
                answer, t_chunks = upload_raw(conn, path, args.chunk, md5)
            else:
                assert client is not None
                answer, t_chunks = client.upload(path, chunk_size=args.chunk, retries=0), None
        except (OSError, http.client.HTTPException) as exc:
            why = proxy.died() or (
                f"no answer from the proxy within {RUN_TIMEOUT:g} s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            raise BenchError(f"upload failed: {why}") from exc
        except Exception as exc:
            if (gone := proxy.died()) is not None:
                raise BenchError(f"upload failed: {gone}") from exc
            if conn is None:  # the client library's ApiError, ProtocolError, ...
                raise BenchError(f"upload failed: {type(exc).__name__}: {exc}") from exc
            raise
        t1 = time.perf_counter()
        s1 = proc_cpu_s(proxy.pid)
        hwm = proc_status_kb(proxy.pid, "VmHWM")
        client_cpu, k1 = own_cpu_s() - c0, cpu_times()
        if s0 is None or s1 is None or hwm is None:
            raise BenchError(f"could not read /proc of the proxy: {proxy.died() or 'gone'}")
        if answer.get("status") != STATUS_COMPLETE:
            raise BenchError(f"completion left status {answer.get('status')!r}, not 2")
        if conn is not None:
            got_md5, got_size = file_md5_raw(conn, answer["file_id"])
        else:
            assert client is not None
            info = client.file_info(answer["file_id"])
            got_md5, got_size = info["md5"], info["size"]
        if got_md5 != md5 or got_size != size:
            raise BenchError(
                f"md5 mismatch: the proxy stored {got_size} bytes with md5 {got_md5}, "
                f"expected {size} bytes with md5 {md5}"
            )
    finally:
        if conn is not None:
            conn.close()
        if client is not None:
            client.close()
        proxy.stop()
    secs = t1 - t0
    d = {
        "seconds": secs,
        "chunks_seconds": t_chunks,
        "complete_seconds": None if t_chunks is None else secs - t_chunks,
        "mb_s": size / secs / MB,
        "peak_rss_mib": hwm / 1024,
        "rss_start_mib": rss0 / 1024,
        "server_cpu_s": s1 - s0,
        "server_cpu_s_total": s1,
        "client_cpu_s": client_cpu,
        "steal_pct": steal_pct(k0, k1),
        "prefault_seconds": prefault_s,
        "tcp_connections": None if conn is None else conn.connects,
        "md5_ok": True,
    }
    split = ""
    if conn is not None and conn.connects != 1:
        split += f" [{conn.connects} TCP connections: the proxy closed keep-alive]"
    if t_chunks is not None:
        split = f" (chunks {t_chunks:.2f} s, completion {secs - t_chunks:.2f} s)"
    log(
        f"  run {i + 1}: {d['mb_s']:.0f} MB/s{split}, proxy peak RSS {d['peak_rss_mib']:.0f} MiB "
        f"(start {d['rss_start_mib']:.0f}), CPU s: proxy {d['server_cpu_s']:.2f}, "
        f"client {client_cpu:.2f}"
    )
    return d


# ---------------------------------------------------------------- upload measurement


def upload(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.file)
    size = require_test_file(path)
    if not PROXY.exists():
        raise BenchError(f"{PROXY} is missing: run scripts/bench (it installs .venv)")
    args.chunk = int(args.chunk_mib * (1 << 20))
    label = f"pyarchive upload {size_label(size)}, {args.chunk_mib:g} MiB chunks"
    log(
        f"== {NAME}: {label}, {args.runs} runs, client: {CLIENTS[args.client]}, "
        f"prefault {PREFAULT_GIB:g} GiB"
    )
    md5, md5_from = known_md5(path)
    warm(path)
    la0, t_start = os.getloadavg(), time.time()
    det = []
    for i in range(args.runs):
        try:
            det.append(one_run(i, args, path, md5))
        except BenchError as exc:
            raise BenchError(f"run {i + 1}: {exc}") from exc
        settle(False)  # the deleted run's writeback must not leak into the next timing
    tool = f"{project_version()}, client {args.client}"
    per_gib = GIB / size
    notes = (
        f"{CLIENTS[args.client]}; timed from the first chunk PUT to the completion answer; "
        "fresh proxy per run, SQLite"
    )
    rows = [
        row(label, [d["mb_s"] for d in det], "MB/s", det, tool, notes),
        row(
            "pyarchive proxy peak RSS during that upload",
            [d["peak_rss_mib"] for d in det],
            "MiB",
            det,
            tool,
            "VmHWM of the pyarchive-proxy process",
        ),
        row(
            "pyarchive: server CPU per GiB",
            [d["server_cpu_s"] * per_gib for d in det],
            "CPU s/GiB",
            [],
            tool,
            "utime+stime of the proxy over the timed upload; "
            "client CPU per run in the first row's runs (client_cpu_s)",
        ),
    ]
    out = {
        "measurement": NAME,
        "description": f"{label}, raw application/octet-stream PUTs with Content-Range + md5 "
        "completion POST",
        "runs": args.runs,
        **sitting(t_start, la0),
        "file": str(path),
        "size": size,
        "chunk": args.chunk,
        "md5": md5,
        "md5_from": md5_from,
        "client": args.client,
        "proxy_env": tuning_env(),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(out, indent=1))
    mbs, rss, cpu = rows
    print(f"client: {CLIENTS[args.client]}", flush=True)
    print(
        f"RESULT {label}: {mbs['median']:.0f} MB/s ({mbs['min']:.0f}–{mbs['max']:.0f}), "
        f"peak RSS {rss['median']:.1f} MiB, server CPU {cpu['median']:.2f} s/GiB",
        flush=True,
    )
    return out


def tuning_env() -> dict[str, str]:
    """PYARCHIVE_* settings passed through to the proxy (recorded in the JSON)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith("PYARCHIVE_") and k not in _CONTROLLED_ENV and k != "PYARCHIVE_SECRET_KEY"
    }


# ---------------------------------------------------------------- anchors and ratios


def by_unit(result: dict[str, Any], unit: str) -> dict[str, Any] | None:
    return next((r for r in result["rows"] if r["unit"] == unit), None)


def ratios() -> None:
    """Ours / each anchor, for the medians of MB/s, peak RSS and server CPU s/GiB."""

    def load(name: str) -> dict[str, Any]:
        f = RESULTS / f"{name}.json"
        if not f.exists():
            raise BenchError(f"no {f}: run scripts/bench compare (or anchors and upload)")
        return dict(json.loads(f.read_text()))

    ours = load(NAME)
    print(
        f"COMPARE medians; ours: {ours['started']}, {ours['runs']} runs, "
        f"prefault {ours.get('prefault_gib'):g} GiB, client {ours.get('client')}"
    )
    for name in ANCHORS:
        other = load(name)
        note = sitting_notes(ours, other)
        print(f"  vs {name} ({other['started']}, {other['runs']} runs){note}")
        for unit, what, target in (
            ("MB/s", "throughput", f"target >= {TARGETS[name]:g}x"),
            ("MiB", "peak RSS  ", f"ours must stay < {RSS_LIMIT_MIB} MiB"),
            ("CPU s/GiB", "server CPU", "lower is better"),
        ):
            a, b = by_unit(ours, unit), by_unit(other, unit)
            if a is None or b is None:
                continue
            r = a["median"] / b["median"]
            verdict = ""
            if unit == "MB/s":
                verdict = " ok" if r >= TARGETS[name] else " BELOW TARGET"
            elif unit == "MiB":
                verdict = " ok" if a["median"] < RSS_LIMIT_MIB else " OVER LIMIT"
            print(
                f"    {what}: ours {a['median']:.2f} / {b['median']:.2f} {unit} = {r:.2f}x "
                f"({target}){verdict}"
            )


def compare(args: argparse.Namespace) -> None:
    if args.chunk_mib != 8 or Path(args.file) != DATA / "test-1g.bin":
        raise BenchError(
            "compare measures what the anchors measure: 8 MiB chunks of "
            f"{DATA / 'test-1g.bin'}; leave --chunk-mib and --file alone"
        )
    for name in ANCHORS:
        p = subprocess.run([str(SHARED / "bench.sh"), name, "--runs", str(args.runs)])
        if p.returncode != 0:
            raise BenchError(f"../shared/bench/bench.sh {name} exited {p.returncode}")
    upload(args)
    ratios()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["upload", "compare", "ratios"])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "5")))
    ap.add_argument("--chunk-mib", type=float, default=8)
    ap.add_argument("--file", default=str(DATA / "test-1g.bin"))
    ap.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default=DEFAULT_CLIENT,
        help=f"upload client (default {DEFAULT_CLIENT}: the lower client CPU)",
    )
    args = ap.parse_args()
    if args.runs < 1 or args.chunk_mib <= 0:
        ap.error("--runs and --chunk-mib must be positive")
    sys.path.insert(0, str(ROOT))
    try:
        if args.what == "upload":
            upload(args)
        elif args.what == "compare":
            compare(args)
        else:
            ratios()
    except BenchError as exc:
        print(f"scripts/bench {args.what}: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # one clear line; BENCH_DEBUG=1 for the traceback
        if os.environ.get("BENCH_DEBUG"):
            raise
        print(
            f"scripts/bench {args.what}: FAILED: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except KeyboardInterrupt:
        print(f"scripts/bench {args.what}: interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
