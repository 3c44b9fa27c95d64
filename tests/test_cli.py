"""The operator's side: configuration, create-admin, the secret file, and scripts/run-local."""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from common.config import ConfigError, load
from proxy.cli import config_sample
from proxy.config import ProxyConfig
from tests.proc import BIN, ProxyProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def test_the_sample_config_file_documents_every_setting_with_its_default() -> None:
    stale = "etc/proxy.conf-sample is stale: run pyarchive-proxy print-config-sample > it"
    assert (ROOT / "etc" / "proxy.conf-sample").read_text() == config_sample(), stale


def test_the_sample_with_every_line_uncommented_loads_as_the_defaults(tmp_path: Path) -> None:
    lines = []
    for line in config_sample().splitlines():
        if re.match(r"# \w+ =", line):
            lines.append(line[2:])
        elif not line.startswith("#"):
            lines.append(line)
    path = tmp_path / "proxy.conf"
    path.write_text("\n".join(lines))
    assert load(ProxyConfig, "proxy", config_file=str(path), environ={}) == ProxyConfig()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PYARCHIVE_REPLICATION_BATCH_FILES", "1001"),
        ("PYARCHIVE_REPLICATION_BATCH_FILES", "0"),
        ("PYARCHIVE_REPLICATION_BATCH_BYTES", "0"),
        ("PYARCHIVE_REPLICATION_SMALL_FILE", "0"),
    ],
)
def test_replication_batch_settings_out_of_range_name_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(ProxyConfig, "proxy", environ={name: value})
    good = load(ProxyConfig, "proxy", environ={"PYARCHIVE_REPLICATION_BATCH_FILES": "1000"})
    assert good.replication_batch_files == 1000


def test_environment_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    path = tmp_path / "proxy.conf"
    path.write_text("[proxy]\nmax_chunk_size = 8MiB\nupload_expiry = 2h\n")
    config = load(
        ProxyConfig, "proxy", config_file=str(path),
        environ={"PYARCHIVE_MAX_CHUNK_SIZE": "16MiB"}, overrides={"upload_expiry": 60.0},
    )  # fmt: skip
    assert (config.max_chunk_size, config.upload_expiry) == (16 << 20, 60.0)
    with pytest.raises(ConfigError, match="PYARCHIVE_PAGE_SIZE"):
        load(ProxyConfig, "proxy", environ={"PYARCHIVE_PAGE_SIZE": "many"})


def _proxy_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "pyarchive-proxy"), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_create_admin_makes_a_staff_user_who_can_log_in(database_url: str, tmp_path: Path) -> None:
    data = tmp_path / "proxy"
    done = _proxy_cli(
        "--data-dir", str(data), "--database", database_url, "create-admin", "boss",
        env={"PYARCHIVE_ADMIN_PASSWORD": "Very-Secret-42"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "created staff user boss" in done.stdout
    proxy = ProxyProcess(data, database_url, env={"PYARCHIVE_SECRET_KEY": ""}).start()
    try:
        body = json.dumps({"username": "boss", "password": "Very-Secret-42"})
        status, answer = proxy.request(
            "POST", "/api-token-auth/", body, {"Content-Type": "application/json"}
        )
        assert status == 200
        import jwt

        assert jwt.decode(answer["token"], options={"verify_signature": False})["staff"] is True
    finally:
        proxy.stop()
    secret = data / "secret_key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_create_admin_refuses_a_weak_password_with_one_clear_line(tmp_path: Path) -> None:
    done = _proxy_cli(
        "--data-dir", str(tmp_path), "create-admin", "boss",
        env={"PYARCHIVE_ADMIN_PASSWORD": "123"},
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "Error: password is too short: at least 8 characters"
    ]


def test_a_token_outlives_a_restart_because_the_generated_secret_is_kept(tmp_path: Path) -> None:
    proxy = ProxyProcess(
        tmp_path / "proxy", f"sqlite:///{tmp_path}/m.sqlite3", env={"PYARCHIVE_SECRET_KEY": ""}
    ).start()
    try:
        token = proxy.login()
        proxy.stop()
        proxy.start()
        status, _ = proxy.request(
            "GET", "/storage/files/", headers={"Authorization": f"JWT {token}"}
        )
        assert status == 200
    finally:
        proxy.stop()


def test_a_bad_database_url_stops_the_proxy_with_one_clear_line(tmp_path: Path) -> None:
    done = _proxy_cli("--data-dir", str(tmp_path), "--database", "mysql://x/y")
    assert done.returncode != 0
    assert "unsupported database URL" in done.stderr


@pytest.mark.slow
def test_run_local_serves_prints_the_ready_line_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYARCHIVE_ADMIN_PASSWORD"}
    command = [sys.executable, str(ROOT / "scripts" / "run_local.py"), "--port", str(port),
               "--data-dir", str(tmp_path / "local")]  # fmt: skip
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert runner.stdout is not None
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = runner.stdout.readline()
            lines.append(line)
            if line.startswith("PyArchive is ready at") or not line:
                break
        assert lines[-1].strip() == f"PyArchive is ready at http://127.0.0.1:{port}/", lines
        created = [line for line in lines if line.startswith("Staff user 'admin' created")]
        assert len(created) == 1, lines
        assert any(line.startswith("Local S3 endpoint at http://127.0.0.1:") and "STAND-IN"
                   in line for line in lines), lines  # fmt: skip
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as answer:
            assert json.load(answer) == {"status": "ok"}
        the_whole_cycle_works(f"http://127.0.0.1:{port}", created[0].split(": ", 1)[1].strip(),
                              tmp_path)  # fmt: skip
    finally:
        runner.send_signal(signal.SIGTERM)
        remaining, _ = runner.communicate(timeout=30)
    assert runner.returncode == 0, remaining
    assert "PyArchive stopped." in remaining
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def the_whole_cycle_works(url: str, password: str, tmp_path: Path) -> None:
    """Out of the box: upload -> two replicas -> mirrored to the local S3 endpoint ->
    uncache -> cache -> the same bytes downloaded."""
    from client import PyArchiveClient
    from tests.clusterkit import eventually

    port = int(url.rsplit(":", 1)[1])
    proxy = ProxyProcess(tmp_path, "", port=port)
    _, body = proxy.request(
        "POST", "/api-token-auth/", json.dumps({"username": "admin", "password": password}),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    auth = {"Authorization": f"JWT {body['token']}"}
    _, connections = proxy.request("GET", "/api/s3-connections/", headers=auth)
    assert [(c["name"], c["active"], c["validation_ok"]) for c in connections] == [
        ("local", True, True)
    ]
    data = os.urandom(3 * 2**20 + 5)
    (tmp_path / "cycle.bin").write_bytes(data)
    with PyArchiveClient(url, body["token"]) as client:
        file_id = client.upload(tmp_path / "cycle.bin")["file_id"]

    def detail() -> dict[str, Any]:
        return proxy.request("GET", f"/storage/files/{file_id}/", headers=auth)[1]  # type: ignore[no-any-return]

    def both_replicas() -> bool:
        return [r["state"] for r in detail()["replicas"]] == ["confirmed", "confirmed"]

    eventually(lambda: detail()["remote_state"] == "mirrored" and both_replicas(), 60, "mirrored")
    # Refused (409) while the proxy still holds its own copy, which it lets go of once both
    # replicas are confirmed on its next replication pass.
    eventually(
        lambda: proxy.request("POST", f"/storage/files/{file_id}/uncache", headers=auth)[0] == 200,
        30,
        "uncache accepted",
    )
    assert detail()["remote_state"] == "remote"
    assert proxy.request("POST", f"/storage/files/{file_id}/cache", headers=auth)[0] == 202
    eventually(both_replicas, 60, "cached back on two nodes")
    with urllib.request.urlopen(
        urllib.request.Request(f"{url}/storage/download/{file_id}/", headers=auth)
    ) as answer:
        assert answer.read() == data


def test_operators_add_list_drain_update_and_remove_nodes_from_the_command_line(
    tmp_path: Path,
) -> None:
    data = str(tmp_path / "proxy")

    def nodes(*args: str) -> subprocess.CompletedProcess[str]:
        return _proxy_cli("--data-dir", data, "nodes", *args)

    added = nodes("add", "n1", "http://127.0.0.1:9101", "rsync://pyarchive@127.0.0.1:9102/incoming",
                  "--zone", "a")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added node n1 (http://127.0.0.1:9101, zone a)"
    again = nodes("add", "n1", "http://127.0.0.1:9101", "rsync://pyarchive@127.0.0.1:9102/x")
    assert again.returncode != 0
    assert again.stderr.strip() == "Error: A node named 'n1' exists already"
    bad = nodes("add", "n2", "ftp://somewhere", "rsync://pyarchive@127.0.0.1:9102/x")
    assert bad.returncode != 0 and "url must look like" in bad.stderr
    listed = nodes("list").stdout.strip().split("\t")
    assert listed[:3] == ["n1", "down", "a"] and listed[-1] == "http://127.0.0.1:9101"
    assert nodes("drain", "n1").stdout.strip() == "node n1 is draining"
    assert nodes("list").stdout.split("\t")[1] == "draining"
    moved = nodes("update", "n1", "--url", "http://127.0.0.1:9201", "--active")
    assert "http://127.0.0.1:9201" in moved.stdout and "active" in moved.stdout
    assert nodes("remove", "n1").stdout.strip() == "node n1 removed"
    assert nodes("list").stdout == ""


def _tree(pid: int) -> dict[int, list[str]]:
    """Every live descendant of ``pid`` and its command line."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found[child.pid] = child.cmdline()
        except psutil.NoSuchProcess:
            continue
    return found


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.mark.slow
def test_run_local_restarts_a_killed_node_and_proxy_while_the_rest_serves(tmp_path: Path) -> None:
    from tests.clusterkit import eventually

    port, password = free_port(), "Sturdy-Kettle-77"
    env = {**os.environ, "PYARCHIVE_ADMIN_PASSWORD": password,
           "PYARCHIVE_NODE_PING_INTERVAL": "1s"}  # fmt: skip
    command = [sys.executable, str(ROOT / "scripts" / "run_local.py"), "--port", str(port),
               "--data-dir", str(tmp_path / "local")]  # fmt: skip
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert runner.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(runner.stdout or ()), daemon=True)
    reader.start()
    proxy_url = f"http://127.0.0.1:{port}"
    seen: dict[int, list[str]] = {}
    try:

        def ready() -> bool:
            return any(ln.startswith("PyArchive is ready") for ln in lines)

        eventually(lambda: ready() or runner.poll() is not None, 90, "ready")
        assert ready(), lines
        nodes = dict(re.findall(r"^Storage node (\w+) at (\S+)/ ", "".join(lines), re.M))
        tree = _tree(runner.pid)
        seen.update(tree)

        def pid_of(words: str) -> int:
            [pid] = [p for p, cmd in tree.items() if words in " ".join(cmd)]
            return pid

        node1 = pid_of("--name node1 ")
        daemon = [p for p in psutil.Process(node1).children() if "--daemon" in p.cmdline()]
        assert len(daemon) == 1, tree
        os.kill(node1, signal.SIGKILL)
        killed_at = time.time()
        assert _answers(f"{proxy_url}/health") and _answers(f"{nodes['node2']}/health")
        eventually(lambda: _gone(daemon[0].pid), 5, "the killed node's rsync daemon gone")
        eventually(lambda: _answers(f"{nodes['node1']}/health"), 30, "node1 back")
        assert any(ln.startswith("node1 exited with status -9; restarting in 1 s") for ln in lines)
        _, body = ProxyProcess(tmp_path, "", port=port).request(
            "POST", "/api-token-auth/", json.dumps({"username": "admin", "password": password}),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        auth = {"Authorization": f"JWT {body['token']}"}

        def proxy_sees_node1_up() -> bool:
            _, listed = ProxyProcess(tmp_path, "", port=port).request(
                "GET", "/api/nodes/", headers=auth
            )
            [node] = [n for n in listed if n["name"] == "node1"]
            last_seen = node["last_seen"] and datetime.fromisoformat(node["last_seen"])
            return bool(node["status"] == "up" and last_seen and
                        last_seen.timestamp() > killed_at + 1)  # fmt: skip

        eventually(proxy_sees_node1_up, 30, "the proxy sees node1 up again")
        assert not _gone(pid_of("--name node2 ")), "node2 was restarted too"

        proxy = pid_of("bin/pyarchive-proxy --data-dir")
        os.kill(proxy, signal.SIGKILL)
        eventually(lambda: not _answers(f"{proxy_url}/health"), 5, "the proxy down")
        assert _answers(f"{nodes['node1']}/health") and _answers(f"{nodes['node2']}/health")
        eventually(lambda: _answers(f"{proxy_url}/health"), 30, "the proxy back")
        assert any(ln.startswith("proxy exited with status -9; restarting in") for ln in lines)
        s3 = pid_of("moto_server")
        os.kill(s3, signal.SIGKILL)
        eventually(lambda: any(ln.startswith("s3 is back") for ln in lines), 30, "S3 back")
        s3_url = re.search(r"^Local S3 endpoint at (\S+),", "".join(lines), re.M)
        assert s3_url is not None
        with urllib.request.urlopen(f"{s3_url[1]}/pyarchive-local") as answer:
            assert answer.status == 200  # the bucket is there again
        seen.update(_tree(runner.pid))
        assert len([cmd for cmd in seen.values() if "--daemon" in cmd]) == 3, seen
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(60)
        reader.join(10)
    assert runner.returncode == 0, lines
    assert lines[-1].strip() == "PyArchive stopped.", lines
    left = {pid: cmd for pid, cmd in seen.items() if not _gone(pid)}
    assert left == {}, "children left running"


def test_run_locals_restart_delays_double_up_to_30_s_and_start_over_after_a_long_run() -> None:
    spec = importlib.util.spec_from_file_location(
        "local_supervisor", ROOT / "scripts" / "local_supervisor.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_supervisor"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    results = doctest.testmod(module)
    assert results.attempted >= 2 and results.failed == 0
