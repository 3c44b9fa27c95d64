"""What PyArchive's benchmarks share: bench.py's machine helpers, servers stopped by PID, the
raw upload client and bench.py's result format (see ../shared/bench/README.md).

Imported by ``scripts/bench_upload.py``, ``scripts/bench_download.py``,
``scripts/bench_replicate.py`` and ``scripts/bench_scale.py`` (run through ``scripts/bench``).
"""

from __future__ import annotations

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
from collections.abc import Callable, Mapping
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
NODE = ROOT / ".venv" / "bin" / "pyarchive-node"
MB = 1e6
GIB = 1 << 30
STATUS_COMPLETE = 2


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


def digest_file(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file, read in 8 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def md5_file(path: Path) -> str:
    return digest_file(path, "md5")


def require_test_file(path: Path) -> int:
    """The test file's size; a clear error if it has not been made."""
    if not path.is_file() or path.stat().st_size == 0:
        raise BenchError(f"no test file {path}: run ../shared/bench/setup.sh (or gen_testfile.sh)")
    return path.stat().st_size


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


def proc_children_cpu_s(pid: int) -> float | None:
    """cutime + cstime: CPU seconds of the process's children it has waited for."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (``clear_refs`` 5); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu_s() -> float:
    """user+system CPU seconds of this process's waited-for children (bench.py's child_cpu)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
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


def timed_command(
    argv: list[str], env: Mapping[str, str] | None = None, timeout: float = RUN_TIMEOUT
) -> tuple[float, subprocess.CompletedProcess[str], float]:
    """bench.py's timed(): wall seconds of the whole command, the result and its CPU seconds."""
    c0 = children_cpu_s()
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} did not finish within {timeout:g} s") from exc
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"{argv[0]} exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return secs, p, children_cpu_s() - c0


def remove(path: Path) -> None:
    """bench.py's rm(): a file or a directory tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def stop_pid(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a child by its PID, SIGKILL after 15 s (as bench.py's Server.stop)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def sigterm_exits() -> None:
    """Make SIGTERM raise SystemExit, so that the ``finally`` blocks stop the servers."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------- the proxy


class Proxy:
    """A fresh pyarchive-proxy on a free port with its own data dir, stopped by its PID.

    ``env`` adds settings; with ``start=False`` it is only prepared (``cli`` can then set up
    its database, e.g. register nodes) until ``start()``.
    """

    def __init__(
        self, data_root: Path, env: Mapping[str, str] | None = None, start: bool = True
    ) -> None:
        data_root.mkdir(parents=True, exist_ok=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(tempfile.mkdtemp(prefix="pyarchive-bench-", dir=data_root))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = LOGS / "pyarchive-proxy.log"
        self.env = {k: v for k, v in os.environ.items() if k not in _CONTROLLED_ENV}
        self.env["PYARCHIVE_SECRET_KEY"] = secrets.token_urlsafe(32)
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.logf = open(self.log_path, "ab")  # closed in stop()
        self.logf.write(f"--- {datetime.datetime.now().isoformat()} port {self.port}\n".encode())
        self.logf.flush()
        if start:
            self.start()

    def start(self) -> None:
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
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            self.logf.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise BenchError(f"cannot start {PROXY}: {exc}") from exc

    def cli(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """``pyarchive-proxy --data-dir DIR ARGS`` (its admin commands) with the proxy's env."""
        argv = [str(PROXY), "--data-dir", str(self.data_dir), *args]
        p = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
        )
        if p.returncode != 0:
            raise BenchError(f"pyarchive-proxy {' '.join(args[:2])} exited {p.returncode}: "
                             f"{(p.stderr or p.stdout).strip()[-300:]}")  # fmt: skip
        return p.stdout

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the proxy was not started"
        return self.proc.pid

    def died(self) -> str | None:
        """Why the proxy is gone, or None while it runs."""
        if self.proc is None:
            return "the proxy was not started"
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
        if self.proc is not None and self.proc.poll() is None:
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


# ---------------------------------------------------------------- storage nodes


class Node:
    """A fresh pyarchive-node (HTTP API + its rsync daemon) on free ports, with its own data
    dir under ``data_root``; stopped by its PID, then its rsync daemon by the daemon's PID if
    that outlived the node."""

    def __init__(self, data_root: Path, name: str, zone: str, cluster_secret: str) -> None:
        data_root.mkdir(parents=True, exist_ok=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        from common.signing import NodeKeys, node_key

        self.name, self.zone, self.secret = name, zone, cluster_secret
        self.keys = NodeKeys.for_node(cluster_secret, name)  # what the proxy uses with it
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"pyarchive-bench-{name}-", dir=data_root))
        self.port, self.rsync_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rsync_url = f"rsync://pyarchive@127.0.0.1:{self.rsync_port}/incoming"
        self.log_path = LOGS / f"pyarchive-node-{name}.log"
        self.daemon_pid: int | None = None
        env = {k: v for k, v in os.environ.items() if k not in _CONTROLLED_ENV}
        env.pop("PYARCHIVE_CLUSTER_SECRET", None)
        env["PYARCHIVE_NODE_KEY"] = node_key(cluster_secret, name)  # its own key, not the secret
        self.logf = open(self.log_path, "ab")  # closed in stop()
        self.logf.write(
            f"--- {datetime.datetime.now().isoformat()} port {self.port} rsync "
            f"{self.rsync_port}\n".encode()
        )
        self.logf.flush()
        try:
            self.proc = subprocess.Popen(
                [str(NODE), "--name", name, "--zone", zone, "--data-dir", str(self.data_dir),
                 "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                 "--rsync-port", str(self.rsync_port)],
                stdout=self.logf, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            self.logf.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise BenchError(f"cannot start {NODE}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def died(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return f"node {self.name} {how} (log: {self.log_path})"

    def wait_ready(self, timeout: float = 30) -> None:
        """Until ``/health`` says ``ok`` (its rsync daemon accepts connections)."""
        end = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < end:
            if (why := self.died()) is not None:
                raise BenchError(f"{why} before it was ready")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/health")
                r = conn.getresponse()
                seen = json.loads(r.read() or b"{}").get("status")
                if r.status == 200 and seen == "ok":
                    self.daemon_pid = self._read_daemon_pid()
                    return
            except (OSError, ValueError):
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        raise BenchError(f"node {self.name} was not ready within {timeout:.0f} s (health {seen})")

    def _read_daemon_pid(self) -> int | None:
        try:
            return int((self.data_dir / "rsyncd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def replica_files(self) -> list[Path]:
        return sorted((self.data_dir / "replicas").glob("*/*"))

    def stop(self) -> None:
        stop_pid(self.proc)
        daemon = self.daemon_pid
        if daemon is not None and _is_our_daemon(daemon, self.data_dir):
            os.kill(daemon, signal.SIGTERM)
            end = time.monotonic() + 5
            while _is_our_daemon(daemon, self.data_dir) and time.monotonic() < end:
                time.sleep(0.05)
            if _is_our_daemon(daemon, self.data_dir):
                os.kill(daemon, signal.SIGKILL)
        self.logf.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _is_our_daemon(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is still the rsync daemon of the node in ``data_dir`` (not a zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    conf = str(data_dir.resolve() / "rsyncd.conf").encode()
    return state != "Z" and b"--daemon" in cmdline and conf in cmdline


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
        for attempt in (1, 2):
            if self.http.sock is None:
                self.connects += 1
            try:
                self.http.request(
                    method, target, body=body, headers={**self.headers, **(headers or {})}
                )
                r = self.http.getresponse()
                break
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # The server closed the connection while it sat idle (its idle timeout, say
                # during a long ingest on other connections): the request never got to it.
                self.http.close()
                if attempt == 2:
                    raise
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


# ---------------------------------------------------------------- a proxy with nodes

STAFF_USER = "benchadmin"


class Cluster:
    """A fresh proxy (SQLite) and fresh nodes sharing a cluster secret; the nodes registered
    with ``pyarchive-proxy nodes add`` before the proxy starts (as scripts/run_local.py does),
    a staff user logged in on one keep-alive connection, every node seen ``up``.
    ``prepare(proxy)``, if given, runs just before the proxy starts (e.g. ``s3 add``);
    ``before_start(cluster)`` runs after it (e.g. to build a catalogue)."""

    def __init__(
        self,
        data_root: Path,
        nodes: list[tuple[str, str]],
        proxy_env: Mapping[str, str],
        prepare: Callable[[Proxy], None] | None = None,
        before_start: Callable[[Cluster], None] | None = None,
    ) -> None:
        """``before_start``, if given, runs once the nodes are ready and registered (the
        proxy's database migrated) and before the proxy starts: to build a catalogue."""
        self.secret = secrets.token_urlsafe(32)
        self.nodes: list[Node] = []
        self.proxy: Proxy | None = None
        self.conn: Conn | None = None
        try:
            for name, zone in nodes:
                self.nodes.append(Node(data_root, name, zone, self.secret))
            self.proxy = Proxy(
                data_root, env={**proxy_env, "PYARCHIVE_CLUSTER_SECRET": self.secret}, start=False
            )
            for node in self.nodes:
                node.wait_ready()
                self.proxy.cli("nodes", "add", node.name, node.url, node.rsync_url,
                               "--zone", node.zone)  # fmt: skip
            password = secrets.token_urlsafe(16)
            self.proxy.cli("create-admin", STAFF_USER, env={"PYARCHIVE_ADMIN_PASSWORD": password})
            if prepare is not None:
                prepare(self.proxy)
            if before_start is not None:
                before_start(self)
            self.proxy.start()
            self.proxy.wait_healthy()
            self.conn = Conn(self.proxy.port)
            status, answer = self.conn.json(
                "POST", "/api-token-auth/", {"username": STAFF_USER, "password": password}
            )
            expect("login", status, answer)
            self.token = str(answer["token"])
            self.conn.headers["Authorization"] = f"JWT {self.token}"
            self.wait_nodes_up()
        except BaseException:
            self.stop()
            raise

    def wait_nodes_up(self, timeout: float = 30) -> None:
        """Until the proxy's node monitor has seen every node up (GET /api/nodes/)."""
        assert self.conn is not None
        end = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while time.monotonic() < end:
            self.check_alive()
            status, answer = self.conn.request("GET", "/api/nodes/")
            expect("GET /api/nodes/", status, answer)
            listed: Any = answer
            seen = {n["name"]: n["status"] for n in listed}
            if len(seen) == len(self.nodes) and all(s == "up" for s in seen.values()):
                return
            time.sleep(0.1)
        raise BenchError(f"the proxy did not see every node up within {timeout:.0f} s: {seen}")

    def check_alive(self) -> None:
        for part in [self.proxy, *self.nodes]:
            if part is not None and (why := part.died()) is not None:
                raise BenchError(why)

    def replicas(self, file_id: Any) -> list[dict[str, Any]]:
        assert self.conn is not None
        status, answer = self.conn.request("GET", f"/storage/files/{file_id}/")
        expect("GET of the stored file", status, answer)
        return list(answer.get("replicas", []))

    def stop(self) -> None:
        """Everything, by PID, whatever state it is in: the proxy first, then the nodes."""
        problems: list[str] = []
        if self.conn is not None:
            self.conn.close()
        for part in [self.proxy, *self.nodes]:
            if part is None:
                continue
            try:
                part.stop()
            except Exception as exc:  # stop the others all the same
                problems.append(f"{type(exc).__name__}: {exc}")
        if problems:
            raise BenchError(f"stopping the servers: {'; '.join(problems)}")


def wait_confirmed(
    cluster: Cluster,
    file_id: Any,
    count: int,
    timeout: float,
    interval: float = 0.05,
    since: float | None = None,
) -> dict[str, Any]:
    """Poll ``GET /storage/files/<id>/`` until ``count`` replicas are ``confirmed``.

    A ``failed`` replica is noted, not fatal: the proxy retries it (after 5 s, doubling).
    Returns the seconds since ``since`` (a perf_counter value; default: now) until the poll
    that saw them, the polls made and the nodes seen with a failed copy.
    """
    t0 = time.perf_counter() if since is None else since
    end = t0 + timeout
    polls, failed = 0, set[str]()
    while True:
        replicas = cluster.replicas(file_id)
        polls += 1
        done = sum(r.get("state") == "confirmed" for r in replicas)
        if done >= count:
            return {"seconds": time.perf_counter() - t0, "polls": polls, "failed": sorted(failed)}
        for r in replicas:
            if r.get("state") == "quarantined":
                raise BenchError(f"a replica was quarantined: {r}")
            if r.get("state") == "failed":
                failed.add(str(r.get("node")))
        cluster.check_alive()
        if time.perf_counter() > end:
            raise BenchError(
                f"{done} of {count} replicas confirmed after {timeout:g} s: {replicas} "
                f"(logs: {LOGS})"
            )
        time.sleep(interval)


def upload_file(cluster: Cluster, path: Path, chunk: int, md5: str) -> dict[str, Any]:
    """Upload ``path`` (raw chunks + md5 completion, as bench_upload); the completion answer."""
    assert cluster.conn is not None and cluster.proxy is not None
    try:
        answer, _ = upload_raw(cluster.conn, path, chunk, md5)
    except (OSError, http.client.HTTPException) as exc:
        why = cluster.proxy.died() or f"{type(exc).__name__}: {exc}"
        raise BenchError(f"upload failed: {why}") from exc
    if answer.get("status") != STATUS_COMPLETE:
        raise BenchError(f"completion left status {answer.get('status')!r}, not 2")
    return answer


# ---------------------------------------------------------------- results


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


def print_result(r: dict[str, Any], digits: int = 1) -> None:
    """bench.py's RESULT line for a row."""
    print(
        f"RESULT {r['row']}: median {r['median']:.{digits}f} {r['unit']} "
        f"(min {r['min']:.{digits}f}, max {r['max']:.{digits}f}, n={len(r['values'])})",
        flush=True,
    )


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


def tool_version(argv: list[str]) -> str:
    """The first line a tool prints about its version, or '?'."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (p.stdout + p.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def tuning_env(exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """PYARCHIVE_* settings passed through to the proxy (recorded in the JSON)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith("PYARCHIVE_")
        and k not in _CONTROLLED_ENV
        and k != "PYARCHIVE_SECRET_KEY"
        and k not in exclude
    }


def load_result(name: str, hint: str) -> dict[str, Any]:
    f = RESULTS / f"{name}.json"
    if not f.exists():
        raise BenchError(f"no {f}: {hint}")
    return dict(json.loads(f.read_text()))


def sitting_notes(ours: dict[str, Any], other: dict[str, Any]) -> str:
    """Warnings when two results were not taken alike (prefault) or not in one sitting."""
    note = ""
    if other.get("prefault_gib") != ours.get("prefault_gib"):
        note += f"  (!) prefault differs: {other.get('prefault_gib')} GiB"
    apart = abs(
        datetime.datetime.fromisoformat(ours["started"])
        - datetime.datetime.fromisoformat(other["started"])
    ).total_seconds()
    if apart > 3600:
        note += f"  (!) not the same sitting: {apart / 3600:.1f} h apart"
    return note


def sitting(t_start: float, loadavg_before: tuple[float, float, float]) -> dict[str, Any]:
    """The fields every result records about when and how it was taken."""
    return {
        "started": datetime.datetime.fromtimestamp(t_start).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - t_start, 1),
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "prefault_gib": PREFAULT_GIB,
    }


def write_result(name: str, out: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1))


def main_wrapper(what: str, work: Any) -> int:
    """bench_upload's error handling: one FAILED line, exit 1; BENCH_DEBUG=1 for tracebacks."""
    sys.path.insert(0, str(ROOT))
    try:
        work()
    except BenchError as exc:
        print(f"scripts/bench {what}: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"scripts/bench {what}: interrupted", file=sys.stderr, flush=True)
        return 130
    except SystemExit as exc:
        print(f"scripts/bench {what}: stopped ({exc.code})", file=sys.stderr, flush=True)
        return int(exc.code) if isinstance(exc.code, int) else 1
    except Exception as exc:
        if os.environ.get("BENCH_DEBUG"):
            raise
        print(f"scripts/bench {what}: FAILED: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    return 0
