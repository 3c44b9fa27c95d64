"""Third-party JavaScript upload clients (tests/js/, run under Node.js) for the tests.

``run_tus_js`` drives the real tus-js-client through ``tests/js/tus_upload.mjs``; see that
script for what it prints and its exit codes (0 done, 1 error, 2 bad arguments, 3 stopped).
Blocking on purpose, like ``tests/proc.py``.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parent / "js"
TUS_UPLOAD = JS_DIR / "tus_upload.mjs"
MIN_NODE_MAJOR = 20
NPM_TIMEOUT = 600.0

_ready = False


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name!r} is not on PATH: the JavaScript client tests need Node.js "
            f">= {MIN_NODE_MAJOR} with npm (Debian: apt-get install nodejs npm)"
        )
    return path


def _check_node_version(node: str) -> None:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.match(r"v(\d+)\.", out.strip())
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        raise RuntimeError(f"Node.js >= {MIN_NODE_MAJOR} is needed, {node} is {out.strip()!r}")


def ensure_node_clients() -> Path:
    """Install tests/js's locked npm packages if needed; returns tests/js.

    Runs ``npm ci`` when node_modules is missing or older than package-lock.json. npm writes
    node_modules/.package-lock.json last, so its mtime is what is compared (a half-done
    install has none). Checked once per process; concurrent processes wait on a lock.
    """
    global _ready
    if _ready:
        return JS_DIR
    _check_node_version(_tool("node"))
    npm = _tool("npm")
    lock = JS_DIR / "package-lock.json"
    marker = JS_DIR / "node_modules" / ".package-lock.json"
    with lock.open("rb") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=JS_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"npm ci in {JS_DIR} exited {result.returncode}:\n{result.stderr[-4000:]}"
                )
    _ready = True
    return JS_DIR


def run_tus_js(
    endpoint: str,
    file: Path,
    *,
    token: str | None = None,
    chunk_size: int | None = None,
    parallel: int | None = None,
    metadata: dict[str, str] | None = None,
    stop_after: int | None = None,
    store: Path | None = None,
    timeout: float = 120,
) -> tuple[int, dict[str, Any]]:
    """Upload ``file`` to the tus ``endpoint`` with tus-js-client.

    Returns the script's exit code and its last stdout line parsed as JSON. Raises
    TimeoutError (after killing the process) past ``timeout`` seconds, and RuntimeError
    if the script printed no JSON object.
    """
    js_dir = ensure_node_clients()
    argv = [_tool("node"), str(TUS_UPLOAD), "--endpoint", endpoint, "--file", str(file)]
    if token is not None:
        argv += ["--token", token]
    if chunk_size is not None:
        argv += ["--chunk-size", str(chunk_size)]
    if parallel is not None:
        argv += ["--parallel", str(parallel)]
    for key, value in (metadata or {}).items():
        argv += ["--metadata", f"{key}={value}"]
    if stop_after is not None:
        argv += ["--stop-after", str(stop_after)]
    if store is not None:
        argv += ["--store", str(store)]

    proc = subprocess.Popen(
        argv,
        cwd=js_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL to proc.pid; the finally below reaps it
        stdout, stderr = proc.communicate()
        raise TimeoutError(
            f"tus_upload.mjs (pid {proc.pid}) still running after {timeout}s; killed.\n"
            f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}"
        ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        raise RuntimeError(
            f"tus_upload.mjs exited {proc.returncode} without a JSON object on stdout.\n"
            f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}"
        )
    return proc.returncode, result
