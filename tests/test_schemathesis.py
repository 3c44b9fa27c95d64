"""Property-based tests of the whole HTTP API: schemathesis against a live proxy.

Schemathesis reads the proxy's own /openapi.json, sends requests that fit it and requests that
do not, and holds every answer to it with all of its checks: no 5xx, every status, header and
body as documented, what fits accepted, what does not refused, 405 with ``Allow``, no route
that ignores its token. It runs once as a user and once as staff, so that the staff routes are
reached too. What one schema cannot say is in ``schemathesis.toml`` at the top of the tree,
each exception explained there.

Bounded and reproducible: a fixed seed and a few examples per operation keep both runs near
two minutes on two cores.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proc import BIN, ROOT, ProxyProcess

SEED = 1
EXAMPLES = 35  # per operation and phase (50 before: the suite has a 20-minute budget)
STAFF = ("boss", "Staff-Horse-99")
# boto3 would try AWS itself for an S3 connection without an endpoint (validate, the
# metadata-backup job): send every such request to a closed local port instead.
OFFLINE = {
    name: "http://127.0.0.1:9"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
} | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    where = tmp_path_factory.mktemp("schemathesis-proxy")
    process = ProxyProcess(where / "proxy", f"sqlite:///{where}/proxy.sqlite3", env=OFFLINE)
    try:
        yield process.start()
    finally:
        process.stop()  # by its PID: SIGTERM, then SIGKILL after 15 s


def staff_token(proxy: ProxyProcess) -> str:
    username, password = STAFF
    env = {**os.environ, "PYARCHIVE_SECRET_KEY": "process-test-secret"}
    subprocess.run(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(proxy.data_dir),
         "--database", proxy.database_url, "create-admin", username],
        env={**env, "PYARCHIVE_ADMIN_PASSWORD": password},
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return proxy.login(username, password)


def schemathesis(
    proxy: ProxyProcess, token: str, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """One run over every operation; its caches and reports stay in ``workdir``."""
    workdir.mkdir()
    return subprocess.run(
        [str(BIN / "schemathesis"), "--config-file", str(ROOT / "schemathesis.toml"),
         "run", f"{proxy.url}/openapi.json",
         "--checks", "all",
         "--header", f"Authorization: JWT {token}",
         "--seed", str(SEED), "--max-examples", str(EXAMPLES),
         # One worker: hypothesis parses lambdas' source with ast from every worker thread,
         # which CPython 3.11 does not make thread-safe ("AST constructor recursion depth
         # mismatch"); and the proxy has the other core.
         "--workers", "1",
         "--request-timeout", "30", "--no-color"],
        cwd=workdir, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def summary(run: subprocess.CompletedProcess[str]) -> str:
    """What schemathesis says went wrong: its failures and errors, then its summary."""
    out = run.stdout + run.stderr
    start = min(
        (out.find(banner) for banner in (" FAILURES ", " ERRORS ") if banner in out),
        default=max(0, len(out) - 5000),
    )
    return out[max(0, out.rfind("\n", 0, start)) :][-20000:]


@pytest.mark.slow
@pytest.mark.parametrize("who", ["user", "staff"])
def test_schemathesis_finds_nothing_the_document_does_not_say(
    proxy: ProxyProcess, who: str, tmp_path: Path
) -> None:
    token = proxy.login() if who == "user" else staff_token(proxy)
    run = schemathesis(proxy, token, tmp_path / "schemathesis")
    assert run.returncode == 0, summary(run)
