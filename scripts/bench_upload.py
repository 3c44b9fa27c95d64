"""PyArchive's upload benchmark, measured like the anchors in ../shared/bench (see its README).

Run through ``scripts/bench`` (which makes sure .venv exists):

    scripts/bench upload [--runs N] [--chunk-mib 8] [--file PATH] [--client raw|library|requests]
    scripts/bench upload --tus [--runs N] [--chunk-mib 8] [--file PATH]
    scripts/bench compare [--runs N] [--client C]  anchors, then upload (client C), then ratios
    scripts/bench ratios                the ratios of the stored results only
    scripts/bench compare-tus [--runs N]  bench.sh tus, upload, upload --tus, then tus-ratios
    scripts/bench tus-ratios            tus / seed API and tus / tuspyserver, stored results only

Every run starts a fresh ``pyarchive-proxy`` (SQLite, a temporary data dir under $BENCH_DATA,
a free port on 127.0.0.1), registers and logs in a user, then - right after the same
``sync``/1 s pause/prefault step as bench.py's ``settle()`` - times the upload: from the first
chunk PUT to the answer of the completion POST with the file's md5, over one keep-alive
connection. The proxy's peak RSS (VmHWM) and CPU seconds (utime+stime, all its threads) are
read from /proc right after the completion, then the stored file's md5 is checked (untimed) and
the proxy is stopped by its PID (SIGTERM, SIGKILL after 15 s), even on error.
``--client requests`` sends the same requests with a plain ``requests.Session``, each chunk
read from the file into ``bytes`` (as tuspy sends them) instead of mmap slices. Before the
runs, the hashing floor is measured right there: CPU seconds of md5 + sha256 over 1 GiB in
1 MiB blocks on one core (hashlib), printed beside the proxy's CPU s/GiB.

With ``--tus`` the timed upload is tuspy's, as bench.py's ``tus`` anchor makes it
(``TusClient(.../files/).uploader(path, chunk_size=8 MiB).upload()``, in this process): from
the creation POST to the last PATCH's answer - the upload becomes a file at its last byte, there
is no completion request. tuspy 1.1.0 opens a new TCP connection per request (``requests.post``
and ``requests.patch`` without a session) and has no timeout of its own: the whole upload gets
BENCH_RUN_TIMEOUT. Each run then checks (untimed) that ``GET /storage/tmp-upload/<id>/`` is
complete and that its file has the test file's size, md5 and sha256 (computed once, untimed).

MB/s with 1 MB = 10^6 bytes. Per-run data: $BENCH_DATA/results/pyarchive-upload.json
(``--tus``: pyarchive-upload-tus.json), in bench.py's format (rows with values, median, min,
max).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.metadata
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode, urlsplit

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
    digest_file,
    expect,
    file_md5_raw,
    known_md5,
    load_result,
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
    "requests": "a plain requests.Session (one keep-alive connection), each chunk read from "
    "the file into bytes as tuspy sends them, md5 known beforehand",
}
# Chosen by client CPU, one 1 GiB run each (2026-11-22): raw 0.45 CPU s, the library 2.33 CPU s
# (its md5 thread alone is ~1.5 s/GiB; the raw client knows the md5 beforehand).
DEFAULT_CLIENT = "raw"

# upload --tus: tus 1.0 at /files/ with tuspy, as the tuspyserver anchor ("tus") is measured.
TUS_NAME = "pyarchive-upload-tus"
TUS_CLIENT = (
    "tuspy (TusClient.uploader(path, chunk_size).upload(), retries=0, in this process; "
    "a new TCP connection per request: requests.post/patch without a session)"
)
# Targets of tus-ratios: tus / the seed API's upload >= 0.9, tus / tuspyserver >= 0.8.
TUS_TARGETS = {NAME: 0.9, "tus": 0.8}


# ---------------------------------------------------------------- one run


def one_run(i: int, args: argparse.Namespace, path: Path, md5: str) -> dict[str, Any]:
    size = path.stat().st_size
    proxy = Proxy(DATA)
    conn = None
    client = None
    try:
        proxy.wait_healthy()
        if args.client in ("raw", "requests"):
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
            if args.client == "requests":
                assert conn is not None
                conn.close()  # idle during the upload; reopened for the check
                answer, t_chunks = upload_requests(proxy.base, conn.headers, path, args.chunk, md5)
            elif conn is not None:
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


def upload_requests(
    base: str, headers: dict[str, str], path: Path, chunk: int, md5: str
) -> tuple[dict[str, Any], float]:
    """``upload_raw`` with a plain ``requests.Session``: every chunk read into ``bytes`` (as
    tuspy sends them) and PUT with its Content-Range, then the md5 completion POST."""
    import requests

    total = path.stat().st_size
    name = urlencode({"filename": path.name})
    with requests.Session() as session, open(path, "rb") as f:
        session.headers.update(headers)
        target = f"{base}/storage/tmp-upload/?{name}"
        t0 = time.perf_counter()
        start = 0
        while start < total:
            body = f.read(chunk)
            stop = start + len(body)
            r = session.put(
                target,
                data=body,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"bytes {start}-{stop - 1}/{total}",
                },
                timeout=RUN_TIMEOUT,
            )
            answer = _json_of(r)
            expect(f"chunk PUT at offset {start}", r.status_code, answer)
            if answer.get("offset") != stop:
                raise BenchError(
                    f"after the chunk at {start} the offset is {answer.get('offset')!r}, not {stop}"
                )
            if start == 0:
                target = base + urlsplit(answer["url"]).path
            start = stop
        t_chunks = time.perf_counter() - t0
        r = session.post(target, json={"md5": md5}, timeout=RUN_TIMEOUT)
        answer = _json_of(r)
        expect("completion POST", r.status_code, answer)
        return answer, t_chunks


def _json_of(r: Any) -> dict[str, Any]:
    try:
        return dict(r.json()) if r.content else {}
    except ValueError:
        return {"detail": r.text[:200]}


def hashing_floor(size: int = GIB, block: int = 1 << 20) -> float:
    """CPU seconds per GiB of md5 + sha256 over ``size`` bytes in ``block`` blocks, on this
    core (hashlib, one thread): the least an upload that hashes every byte twice can cost."""
    data = os.urandom(block)
    md5, sha = hashlib.md5(), hashlib.sha256()
    c0 = time.process_time()
    for _ in range(size // block):
        md5.update(data)
        sha.update(data)
    return (time.process_time() - c0) * GIB / size


class DeadlinePassed(Exception):
    """Not an OSError: urllib3 would take a TimeoutError for its own socket timeout."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """DeadlinePassed in the main thread after ``seconds`` (tuspy's requests have no timeout)."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise DeadlinePassed(f"not done within {seconds:g} s")

    before = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def one_tus_run(
    i: int, args: argparse.Namespace, path: Path, md5: str, sha256: str
) -> dict[str, Any]:
    from tusclient.client import TusClient
    from tusclient.exceptions import TusCommunicationError

    size = path.stat().st_size
    proxy = Proxy(DATA)
    conn = None
    try:
        proxy.wait_healthy()
        conn = Conn(proxy.port)
        login_raw(conn)
        conn.close()  # reopened for the checks: tuspy makes connections of its own
        tus = TusClient(
            f"{proxy.base}/files/", headers={"Authorization": conn.headers["Authorization"]}
        )
        uploader = tus.uploader(
            str(path), chunk_size=args.chunk, metadata={"filename": path.name}, retries=0
        )  # no request yet: the creation POST is the first thing upload() does
        rss0 = proc_status_kb(proxy.pid, "VmRSS") or 0
        prefault_s = settle()
        s0 = proc_cpu_s(proxy.pid)
        c0, k0 = own_cpu_s(), cpu_times()
        t0 = time.perf_counter()
        try:
            with deadline(RUN_TIMEOUT):
                uploader.upload()
        except DeadlinePassed as exc:
            raise BenchError(f"tus upload failed: {proxy.died() or exc}") from exc
        except (OSError, TusCommunicationError) as exc:
            why = proxy.died() or f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TusCommunicationError) and exc.response_content:
                why += f" {exc.response_content!r:.200}"
            raise BenchError(f"tus upload failed: {why}") from exc
        except Exception as exc:  # tuspy's own: e.g. an answer without Upload-Offset
            why = proxy.died() or f"{type(exc).__name__}: {exc}"
            raise BenchError(f"tus upload failed: {why}") from exc
        t1 = time.perf_counter()
        s1 = proc_cpu_s(proxy.pid)
        hwm = proc_status_kb(proxy.pid, "VmHWM")
        client_cpu, k1 = own_cpu_s() - c0, cpu_times()
        if s0 is None or s1 is None or hwm is None:
            raise BenchError(f"could not read /proc of the proxy: {proxy.died() or 'gone'}")
        last = uploader.request.status_code if uploader.request is not None else None
        if uploader.offset != size or uploader.url is None:
            raise BenchError(f"tuspy stopped at offset {uploader.offset}, not {size}")
        upload_id = str(uploader.url).rstrip("/").rsplit("/", 1)[1]
        status, answer = conn.request("GET", f"/storage/tmp-upload/{upload_id}/")
        expect("GET of the tus upload", status, answer)
        if answer.get("status") != STATUS_COMPLETE:
            raise BenchError(f"the last PATCH left status {answer.get('status')!r}, not 2")
        status, found = conn.request("GET", f"/storage/files/{answer['file_id']}/")
        expect("GET of the stored file", status, found)
        got = (found.get("size"), found.get("md5"), found.get("sha256"))
        if got != (size, md5, sha256):
            raise BenchError(
                f"digest mismatch: the proxy stored {got[0]} bytes with md5 {got[1]}, sha256 "
                f"{got[2]}; expected {size} bytes with md5 {md5}, sha256 {sha256}"
            )
    finally:
        if conn is not None:
            conn.close()
        proxy.stop()
    secs = t1 - t0
    d = {
        "seconds": secs,
        "chunks_seconds": None,
        "complete_seconds": None,
        "mb_s": size / secs / MB,
        "peak_rss_mib": hwm / 1024,
        "rss_start_mib": rss0 / 1024,
        "server_cpu_s": s1 - s0,
        "server_cpu_s_total": s1,
        "client_cpu_s": client_cpu,
        "steal_pct": steal_pct(k0, k1),
        "prefault_seconds": prefault_s,
        "tcp_connections": None,
        "last_patch_status": last,
        "md5_ok": True,
        "sha256_ok": True,
    }
    log(
        f"  run {i + 1}: {d['mb_s']:.0f} MB/s, proxy peak RSS {d['peak_rss_mib']:.0f} MiB "
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
    if args.tus:
        try:
            client = f"tuspy {importlib.metadata.version('tuspy')}"
        except importlib.metadata.PackageNotFoundError:
            raise BenchError(
                "tuspy is missing from .venv: .venv/bin/pip install tuspy "
                "(it is in the test extras: pip install -e '.[test]')"
            ) from None
        name, api, described = TUS_NAME, "pyarchive tus upload", TUS_CLIENT
        timed = (
            "timed from the creation POST to the last PATCH's answer (the upload completes "
            "at its last byte: no completion request)"
        )
        how = (
            "tus 1.0 at /files/: creation POST, then application/offset+octet-stream PATCHes; "
            "the last byte makes it a file"
        )
    else:
        name, api, described, client = NAME, "pyarchive upload", CLIENTS[args.client], args.client
        timed = "timed from the first chunk PUT to the completion answer"
        how = "raw application/octet-stream PUTs with Content-Range + md5 completion POST"
    label = f"{api} {size_label(size)}, {args.chunk_mib:g} MiB chunks"
    log(f"== {name}: {label}, {args.runs} runs, client: {described}, prefault {PREFAULT_GIB:g} GiB")
    md5, md5_from = known_md5(path)
    sha256 = None
    if args.tus:
        log(f"  sha256 of {path} (untimed, for the checks) ...")
        sha256 = digest_file(path, "sha256")
    warm(path)
    log("  hashing floor: md5 + sha256 of 1 GiB in 1 MiB blocks, one core ...")
    floor = hashing_floor()
    la0, t_start = os.getloadavg(), time.time()
    det = []
    for i in range(args.runs):
        try:
            if sha256 is not None:
                det.append(one_tus_run(i, args, path, md5, sha256))
            else:
                det.append(one_run(i, args, path, md5))
        except BenchError as exc:
            raise BenchError(f"run {i + 1}: {exc}") from exc
        settle(False)  # the deleted run's writeback must not leak into the next timing
    tool = f"{project_version()}, client {client}"
    per_gib = GIB / size
    notes = f"{described}; {timed}; fresh proxy per run, SQLite"
    which = "tus upload" if args.tus else "upload"
    rows = [
        row(label, [d["mb_s"] for d in det], "MB/s", det, tool, notes),
        row(
            f"pyarchive proxy peak RSS during that {which}",
            [d["peak_rss_mib"] for d in det],
            "MiB",
            det,
            tool,
            "VmHWM of the pyarchive-proxy process",
        ),
        row(
            "pyarchive tus: server CPU per GiB" if args.tus else "pyarchive: server CPU per GiB",
            [d["server_cpu_s"] * per_gib for d in det],
            "CPU s/GiB",
            [],
            tool,
            "utime+stime of the proxy over the timed upload; "
            "client CPU per run in the first row's runs (client_cpu_s)",
        ),
    ]
    out = {
        "measurement": name,
        "description": f"{label}, {how}",
        "runs": args.runs,
        **sitting(t_start, la0),
        "file": str(path),
        "size": size,
        "chunk": args.chunk,
        "md5": md5,
        "md5_from": md5_from,
        **({} if sha256 is None else {"sha256": sha256, "sha256_from": "computed"}),
        "client": client,
        "hashing_floor_cpu_s_per_gib": floor,
        "proxy_env": tuning_env(),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1))
    mbs, rss, cpu = rows
    print(f"client: {described}", flush=True)
    print(
        f"RESULT {label}: {mbs['median']:.0f} MB/s ({mbs['min']:.0f}–{mbs['max']:.0f}), "
        f"peak RSS {rss['median']:.1f} MiB, server CPU {cpu['median']:.2f} s/GiB "
        f"(hashing floor {floor:.2f} s/GiB: md5 + sha256, hashlib, 1 MiB blocks, one core, "
        f"measured now; above it {cpu['median'] - floor:.2f} s/GiB)",
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


def print_ratios(ours: dict[str, Any], other: dict[str, Any], target: float) -> None:
    """The lines of one comparison: ours / other for MB/s, peak RSS and server CPU s/GiB."""
    for unit, what, aim in (
        ("MB/s", "throughput", f"target >= {target:g}x"),
        ("MiB", "peak RSS  ", f"ours must stay < {RSS_LIMIT_MIB} MiB"),
        ("CPU s/GiB", "server CPU", "lower is better"),
    ):
        a, b = by_unit(ours, unit), by_unit(other, unit)
        if a is None or b is None:
            continue
        r = a["median"] / b["median"]
        verdict = ""
        if unit == "MB/s":
            verdict = " ok" if r >= target else " BELOW TARGET"
        elif unit == "MiB":
            verdict = " ok" if a["median"] < RSS_LIMIT_MIB else " OVER LIMIT"
        print(
            f"    {what}: ours {a['median']:.2f} / {b['median']:.2f} {unit} = {r:.2f}x "
            f"({aim}){verdict}"
        )


def ratios() -> None:
    """Ours / each anchor, for the medians of MB/s, peak RSS and server CPU s/GiB."""

    def load(name: str) -> dict[str, Any]:
        return load_result(name, "run scripts/bench compare (or anchors and upload)")

    ours = load(NAME)
    print(
        f"COMPARE medians; ours: {ours['started']}, {ours['runs']} runs, "
        f"prefault {ours.get('prefault_gib'):g} GiB, client {ours.get('client')}"
    )
    for name in ANCHORS:
        other = load(name)
        note = sitting_notes(ours, other)
        print(f"  vs {name} ({other['started']}, {other['runs']} runs){note}")
        print_ratios(ours, other, TARGETS[name])


def tus_ratios() -> None:
    """Our tus upload / the seed API's upload and / tuspyserver with the same tuspy client."""

    def load(name: str) -> dict[str, Any]:
        hint = "run scripts/bench compare-tus (or bench.sh tus, upload and upload --tus)"
        return load_result(name, hint)

    ours = load(TUS_NAME)
    print(
        f"COMPARE medians; ours (tus): {ours['started']}, {ours['runs']} runs, "
        f"prefault {ours.get('prefault_gib'):g} GiB, client {ours.get('client')}"
    )
    for name, what in ((NAME, "the seed API's upload"), ("tus", "tuspyserver, same tuspy")):
        other = load(name)
        note = sitting_notes(ours, other)
        client = f", client {other['client']}" if "client" in other else ""
        print(f"  vs {name}: {what} ({other['started']}, {other['runs']} runs{client}){note}")
        print_ratios(ours, other, TUS_TARGETS[name])


def same_as_anchors(args: argparse.Namespace, what: str) -> None:
    if args.chunk_mib != 8 or Path(args.file) != DATA / "test-1g.bin":
        raise BenchError(
            f"{what} measures what the anchors measure: 8 MiB chunks of "
            f"{DATA / 'test-1g.bin'}; leave --chunk-mib and --file alone"
        )


def run_anchor(name: str, runs: int) -> None:
    p = subprocess.run([str(SHARED / "bench.sh"), name, "--runs", str(runs)])
    if p.returncode != 0:
        raise BenchError(f"../shared/bench/bench.sh {name} exited {p.returncode}")


def compare(args: argparse.Namespace) -> None:
    same_as_anchors(args, "compare")
    for name in ANCHORS:
        run_anchor(name, args.runs)
    upload(args)
    ratios()


def compare_tus(args: argparse.Namespace) -> None:
    """bench.sh tus, then upload (the seed API), then upload --tus, back to back; the ratios."""
    same_as_anchors(args, "compare-tus")
    run_anchor("tus", args.runs)
    upload(argparse.Namespace(**{**vars(args), "tus": False}))
    upload(argparse.Namespace(**{**vars(args), "tus": True}))
    tus_ratios()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["upload", "compare", "ratios", "compare-tus", "tus-ratios"])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "5")))
    ap.add_argument("--chunk-mib", type=float, default=8)
    ap.add_argument("--file", default=str(DATA / "test-1g.bin"))
    ap.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        help=f"upload client (default {DEFAULT_CLIENT}: the lower client CPU)",
    )
    ap.add_argument(
        "--tus", action="store_true", help="upload: with tuspy to /files/ (tus 1.0) instead"
    )
    args = ap.parse_args()
    if args.runs < 1 or args.chunk_mib <= 0:
        ap.error("--runs and --chunk-mib must be positive")
    if args.tus and args.what != "upload":
        ap.error(f"--tus goes with upload ({args.what} knows which uploads it runs)")
    if args.tus and args.client is not None:
        ap.error("--client does not apply to --tus: the client is tuspy")
    args.client = args.client or DEFAULT_CLIENT
    sys.path.insert(0, str(ROOT))
    try:
        if args.what == "upload":
            upload(args)
        elif args.what == "compare":
            compare(args)
        elif args.what == "compare-tus":
            compare_tus(args)
        elif args.what == "tus-ratios":
            tus_ratios()
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
