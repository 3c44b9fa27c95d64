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
import datetime
import hashlib
import http.client
import json
import mmap
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BENCH_SHARED", str(ROOT.parent / "shared" / "bench")))
DATA = Path(os.environ.get("BENCH_DATA", "/var/tmp/uploadbench"))
BENCH_VENV = Path(os.environ.get("BENCH_VENV", str(DATA / "venv")))
RESULTS = Path(os.environ.get("BENCH_RESULTS", str(DATA / "results")))
LOGS = DATA / "logs"
PREFAULT_GIB = float(os.environ.get("BENCH_PREFAULT_GIB", "3"))  # as bench.py; 0 = off
RUN_TIMEOUT = float(os.environ.get("BENCH_RUN_TIMEOUT", "300"))  # seconds, as bench.py
PROXY = ROOT / ".venv" / "bin" / "pyarchive-proxy"
NAME = "pyarchive-upload"
MB = 1e6
GIB = 1 << 30
STATUS_COMPLETE = 2
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


class BenchError(Exception):
    """A failed run: printed as one line, exit status 1."""


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


# ---------------------------------------------------------------- machine


def run(argv: list[str], timeout: float = RUN_TIMEOUT) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise BenchError(f"{argv[0]} exited {p.returncode}: {p.stderr.strip()[-300:]}")


def prefault_python() -> str:
    """bench.py runs prefault.py with the anchors' venv python; the same one if it is there."""
    py = BENCH_VENV / "bin" / "python"
    return str(py) if py.exists() else sys.executable


def settle(prefault: bool = True) -> float:
    """bench.py's settle(): sync, 1 s pause, then touch PREFAULT_GIB GiB (see prefault.py).

    Returns the prefault's seconds (recorded: ~0.4 s/GiB when the host still backs the
    memory, several s/GiB when it has taken it back).
    """
    run(["sync"])
    time.sleep(1)
    if not prefault or PREFAULT_GIB <= 0:
        return 0.0
    t0 = time.perf_counter()
    run([prefault_python(), str(SHARED / "prefault.py"), str(PREFAULT_GIB)], timeout=120)
    return time.perf_counter() - t0


def warm(path: Path) -> None:
    """Read the file once so that it sits in the page cache (bench.py's warm())."""
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True, timeout=120)


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def known_md5(path: Path) -> tuple[str, str]:
    """The file's md5 and where it came from: PATH.md5 if present, else computed (untimed)."""
    sidecar = Path(str(path) + ".md5")
    if sidecar.exists():
        return sidecar.read_text().split()[0].lower(), str(sidecar)
    return md5_file(path), "computed"


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of the process (all its threads), seconds, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def steal_pct(a: list[int], b: list[int]) -> float:
    d = [y - x for x, y in zip(a, b, strict=True)]
    return round(100.0 * d[7] / (sum(d[:8]) or 1), 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def size_label(n: int) -> str:
    for unit, div in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------- the proxy


class Proxy:
    """A fresh pyarchive-proxy on a free port with its own data dir, stopped by its PID."""

    def __init__(self, data_root: Path) -> None:
        data_root.mkdir(parents=True, exist_ok=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(tempfile.mkdtemp(prefix="pyarchive-bench-", dir=data_root))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = LOGS / "pyarchive-proxy.log"
        env = {k: v for k, v in os.environ.items() if k not in _CONTROLLED_ENV}
        env["PYARCHIVE_SECRET_KEY"] = secrets.token_urlsafe(32)
        self.logf = open(self.log_path, "ab")  # closed in stop()
        self.logf.write(f"--- {datetime.datetime.now().isoformat()} port {self.port}\n".encode())
        self.logf.flush()
        try:
            self.proc = subprocess.Popen(
                [
                    str(PROXY),
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    f"tcp:{self.port}:interface=127.0.0.1",
                ],
                stdout=self.logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.logf.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise BenchError(f"cannot start {PROXY}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def died(self) -> str | None:
        """Why the proxy is gone, or None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return f"the proxy {how} (log: {self.log_path})"

    def wait_healthy(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (why := self.died()) is not None:
                raise BenchError(f"{why} before answering /health")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise BenchError(f"the proxy did not answer GET /health within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.logf.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


# The benchmark sets these itself (SQLite default, its own dir, port and public URL).
_CONTROLLED_ENV = frozenset(
    {"PYARCHIVE_DATABASE", "PYARCHIVE_DATA_DIR", "PYARCHIVE_LISTEN", "PYARCHIVE_PUBLIC_URL"}
)


# ---------------------------------------------------------------- raw http.client


class Conn:
    """One keep-alive http.client connection; counts how many TCP connections it needed."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=RUN_TIMEOUT)
        self.connects = 0
        self.headers = {"User-Agent": "pyarchive-bench", "Accept": "application/json"}

    def request(
        self, method: str, target: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        if self.http.sock is None:
            self.connects += 1
        self.http.request(method, target, body=body, headers={**self.headers, **(headers or {})})
        r = self.http.getresponse()
        data = r.read()
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {"detail": data[:200].decode("utf-8", "replace")}
        return r.status, answer

    def json(self, method: str, target: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(fields).encode()
        return self.request(method, target, body, {"Content-Type": "application/json"})

    def close(self) -> None:
        self.http.close()


def expect(what: str, status: int, answer: dict[str, Any], ok: tuple[int, ...] = (200,)) -> None:
    if status not in ok:
        raise BenchError(f"{what} answered HTTP {status}: {answer.get('detail', answer)!r:.200}")


def login_raw(conn: Conn) -> None:
    user = {"username": "bench", "password": secrets.token_urlsafe(16)}
    expect("register", *conn.json("POST", "/api/auth/register", user), ok=(200, 201))
    status, answer = conn.json("POST", "/api-token-auth/", user)
    expect("login", status, answer)
    conn.headers["Authorization"] = f"JWT {answer['token']}"


def upload_raw(conn: Conn, path: Path, chunk: int, md5: str) -> tuple[dict[str, Any], float]:
    """Timed part: every chunk PUT, then the completion POST. Returns (answer, chunks_seconds)."""
    name = urlencode({"filename": path.name})
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        view = memoryview(m)
        try:
            total = len(view)
            t0 = time.perf_counter()
            target = f"/storage/tmp-upload/?{name}"
            for start in range(0, total, chunk):
                stop = min(start + chunk, total)
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"bytes {start}-{stop - 1}/{total}",
                }
                with view[start:stop] as body:
                    status, answer = conn.request("PUT", target, body, headers)
                expect(f"chunk PUT at offset {start}", status, answer)
                if answer.get("offset") != stop:
                    raise BenchError(
                        f"after the chunk at {start} the offset is "
                        f"{answer.get('offset')!r}, not {stop}"
                    )
                if start == 0:
                    target = urlsplit(answer["url"]).path
            t_chunks = time.perf_counter() - t0
            status, answer = conn.json("POST", target, {"md5": md5})
            expect("completion POST", status, answer)
            return answer, t_chunks
        finally:
            view.release()


def file_md5_raw(conn: Conn, file_id: Any) -> tuple[str, int]:
    status, answer = conn.request("GET", f"/storage/files/{file_id}/")
    expect("GET of the stored file", status, answer)
    return answer["md5"], answer["size"]


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


def row(
    name: str, values: list[float], unit: str, runs: list[dict[str, Any]], tool: str, notes: str
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "row": name,
        "unit": unit,
        "values": values,
        "runs": runs,
        "tool": tool,
        "notes": notes,
    }
    r.update(median=statistics.median(values), min=min(values), max=max(values))
    return r


def project_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        rev = ""
    return f"pyarchive {rev or '?'}, CPython {sys.version.split()[0]}"


def upload(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.file)
    if not path.is_file() or path.stat().st_size == 0:
        raise BenchError(f"no test file {path}: run ../shared/bench/setup.sh (or gen_testfile.sh)")
    if not PROXY.exists():
        raise BenchError(f"{PROXY} is missing: run scripts/bench (it installs .venv)")
    size = path.stat().st_size
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
        "started": datetime.datetime.fromtimestamp(t_start).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - t_start, 1),
        "loadavg_before": la0,
        "loadavg_after": os.getloadavg(),
        "prefault_gib": PREFAULT_GIB,
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
        note = ""
        if other.get("prefault_gib") != ours.get("prefault_gib"):
            note += f"  (!) prefault differs: {other.get('prefault_gib')} GiB"
        apart = abs(
            datetime.datetime.fromisoformat(ours["started"])
            - datetime.datetime.fromisoformat(other["started"])
        ).total_seconds()
        if apart > 3600:
            note += f"  (!) not the same sitting: {apart / 3600:.1f} h apart"
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
