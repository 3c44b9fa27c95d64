"""A real storage node process: health, replicas pushed with the real rsync client, the signed
internal API, downloads by token (through curl), and the rsync daemon's supervision."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from common.signing import NodeKeys
from node.replicas.rsyncd import daemon_argv, stale_daemon_pid
from tests.nodeproc import SECRET, NodeProcess, expected, key_for
from tests.proc import BIN, free_port


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    running = NodeProcess(tmp_path_factory.mktemp("node") / "data").start()
    try:
        yield running
    finally:
        running.stop()


def pushed(node: NodeProcess, tmp_path: Path, size: int = 300_000) -> tuple[str, bytes]:
    """Random content pushed into the node's incoming/ with rsync; its key and bytes."""
    content = os.urandom(size)
    source = tmp_path / "source.bin"
    source.write_bytes(content)
    key = key_for(content)
    done = node.push(source, key)
    assert done.returncode == 0, done.stderr
    return key, content


def confirmed(node: NodeProcess, tmp_path: Path, size: int = 300_000) -> tuple[str, bytes]:
    key, content = pushed(node, tmp_path, size)
    response = node.confirm(key, content)
    assert response.status == 200, response.body
    return key, content


# ---------------------------------------------------------------- health


def test_health_names_the_node_and_reports_its_data_directorys_filesystem(
    node: NodeProcess,
) -> None:
    health = node.health()
    fs = os.statvfs(node.data_dir)
    assert {k: health[k] for k in ("name", "zone", "status")} == {
        "name": "node1",
        "zone": "a",
        "status": "ok",
    }
    assert health["total_bytes"] == fs.f_blocks * fs.f_frsize
    assert abs(health["free_bytes"] - fs.f_bavail * fs.f_frsize) < 256 * 2**20
    assert isinstance(health["files"], int) and health["version"]


# ---------------------------------------------------------------- replicas


def test_a_pushed_replica_is_confirmed_into_replicas_byte_identical(
    node: NodeProcess, tmp_path: Path
) -> None:
    files_before = node.health()["files"]
    key, content = pushed(node, tmp_path)
    assert (node.data_dir / "incoming" / key).exists()
    response = node.confirm(key, content)
    assert (response.status, response.json()) == (200, {"key": key, "size": len(content)})
    assert node.replica_path(key).read_bytes() == content
    assert not (node.data_dir / "incoming" / key).exists()
    assert node.health()["files"] == files_before + 1
    again = node.confirm(key, content)
    assert (again.status, again.json()) == (200, {"key": key, "size": len(content)})


@pytest.mark.parametrize(
    "wrong",
    [
        {"md5": "0" * 32},
        {"size": 299_999},
        {"size": 300_001},
    ],
)
def test_a_replica_whose_size_or_md5_does_not_match_is_deleted_with_409(
    node: NodeProcess, tmp_path: Path, wrong: dict[str, object]
) -> None:
    key, content = pushed(node, tmp_path)
    response = node.confirm(key, content, **wrong)
    assert response.status == 409, response.body
    assert "deleted" in response.json()["detail"]
    assert not (node.data_dir / "incoming" / key).exists()
    assert not node.replica_path(key).exists()


def test_content_that_does_not_hash_to_its_keys_sha256_is_deleted_with_409(
    node: NodeProcess, tmp_path: Path
) -> None:
    claimed, actual = os.urandom(1000), os.urandom(1000)
    source = tmp_path / "other.bin"
    source.write_bytes(actual)
    key = key_for(claimed)
    assert node.push(source, key).returncode == 0
    response = node.confirm(key, claimed, md5=hashlib.md5(actual).hexdigest())
    assert response.status == 409
    assert "sha256" in response.json()["detail"]
    assert not (node.data_dir / "incoming" / key).exists()


def test_a_confirm_whose_sha256_contradicts_the_key_is_refused_and_keeps_the_file(
    node: NodeProcess, tmp_path: Path
) -> None:
    key, content = pushed(node, tmp_path)
    response = node.confirm(key, content, sha256="e" * 64)
    assert response.status == 400
    assert (node.data_dir / "incoming" / key).exists()


def test_confirming_what_was_never_received_is_404(node: NodeProcess) -> None:
    response = node.confirm(key_for(b"never sent"), b"never sent")
    assert response.status == 404


@pytest.mark.parametrize("body", [b"", b"[]", b'{"size": 1}', b'{"size": -1, "md5": 1}'])
def test_a_confirm_body_that_is_not_the_expected_json_is_400(
    node: NodeProcess, body: bytes
) -> None:
    path = f"/internal/replicas/{key_for(b'x')}/confirm"
    response = node.request("POST", path, body, node.signed_headers("POST", path, body))
    assert response.status == 400


BATCH = "/internal/replicas/confirm-batch"


def test_a_batch_confirm_answers_each_key_on_its_own(node: NodeProcess, tmp_path: Path) -> None:
    key, content = pushed(node, tmp_path, 2000)
    never = b"never sent"
    response = node.signed("POST", BATCH, {"replicas": [
        {"key": key, **expected(content)}, {"key": key_for(never), **expected(never)},
    ]})  # fmt: skip
    assert response.status == 200, response.body
    first, second = response.json()["results"]
    assert first == {"key": key, "confirmed": True, "size": 2000}
    assert (second["key"], second["confirmed"], second["status"]) == (key_for(never), False, 404)
    assert node.replica_path(key).read_bytes() == content


def test_a_batch_confirm_must_be_signed_well_formed_and_within_its_size(
    node: NodeProcess,
) -> None:
    body = json.dumps({"replicas": [{"key": key_for(b"x"), **expected(b"x")}]}).encode()
    assert node.request("POST", BATCH, body).status == 403  # not signed
    other = NodeKeys.for_node(SECRET, "another-node")
    headers = node.signed_headers("POST", BATCH, body, keys=other)
    assert node.request("POST", BATCH, body, headers).status == 403
    assert node.signed("POST", BATCH, {"replicas": "all"}).status == 400
    huge = b"x" * (600 * 1024)
    assert node.request("POST", BATCH, huge, node.signed_headers("POST", BATCH)).status == 413


def test_an_oversized_internal_body_is_413(node: NodeProcess) -> None:
    path = f"/internal/replicas/{key_for(b'x')}/confirm"
    response = node.request("POST", path, b"x" * 100_000, node.signed_headers("POST", path))
    assert response.status == 413


def test_deleting_a_replica_is_idempotent_and_removes_a_partial_push(
    node: NodeProcess, tmp_path: Path
) -> None:
    key, _ = confirmed(node, tmp_path)
    (node.data_dir / "incoming" / key).write_bytes(b"a partial second push")
    for _ in range(2):
        response = node.signed("DELETE", f"/internal/replicas/{key}")
        assert (response.status, response.body) == (204, b"")
    assert not node.replica_path(key).exists()
    assert not (node.data_dir / "incoming" / key).exists()
    listed = node.signed("GET", "/internal/replicas").json()["replicas"]
    assert key not in {replica["key"] for replica in listed}


def test_the_list_holds_every_confirmed_replica_with_its_size(
    node: NodeProcess, tmp_path: Path
) -> None:
    first, one = confirmed(node, tmp_path, 1234)
    second, two = confirmed(node, tmp_path, 0)
    pending, _ = pushed(node, tmp_path, 99)
    response = node.signed("GET", "/internal/replicas")
    assert response.status == 200
    listed = {replica["key"]: replica["size"] for replica in response.json()["replicas"]}
    assert listed[first] == len(one) and listed[second] == len(two) == 0
    assert pending not in listed


def test_a_replica_that_changed_on_disk_fails_verify_and_is_quarantined(
    node: NodeProcess, tmp_path: Path
) -> None:
    key, content = confirmed(node, tmp_path)
    body = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    path = f"/internal/replicas/{key}/verify"
    good = node.signed("POST", path, body)
    assert (good.status, good.json()) == (200, {"ok": True})
    with open(node.replica_path(key), "r+b") as file:
        file.seek(1000)
        flipped = file.read(1)[0] ^ 0x01
        file.seek(1000)
        file.write(bytes([flipped]))
    bad = node.signed("POST", path, body)
    assert bad.status == 409
    assert bad.json()["ok"] is False and "quarantined" in bad.json()["detail"]
    assert not node.replica_path(key).exists()
    assert (node.data_dir / "quarantine" / key).exists()
    assert node.signed("POST", path, body).status == 404


@pytest.mark.parametrize("key", ["abc", "1-" + "A" * 64, "..", "1-" + "a" * 63, "%2e%2e"])
def test_a_key_that_is_not_a_replica_key_is_404_everywhere(node: NodeProcess, key: str) -> None:
    body = expected(b"x")
    assert node.signed("POST", f"/internal/replicas/{key}/confirm", body).status == 404
    assert node.signed("POST", f"/internal/replicas/{key}/verify", body).status == 404
    assert node.signed("DELETE", f"/internal/replicas/{key}").status == 404


# ---------------------------------------------------------------- signed requests


def test_internal_requests_must_be_signed_fresh_and_used_once(node: NodeProcess) -> None:
    path = "/internal/replicas"
    assert node.request("GET", path).status == 403
    wrong = node.signed_headers("GET", path, keys=NodeKeys.for_node("another", node.name))
    assert node.request("GET", path, headers=wrong).status == 403
    stale = node.signed_headers("GET", path, at=time.time() - 120)
    assert node.request("GET", path, headers=stale).status == 403
    elsewhere = node.signed_headers("GET", "/internal/replicas?all=1")
    assert node.request("GET", path, headers=elsewhere).status == 403
    fresh = node.signed_headers("GET", path)
    assert node.request("GET", path, headers=fresh).status == 200
    replayed = node.request("GET", path, headers=fresh)
    assert replayed.status == 403
    assert replayed.json() == {"detail": "Request was already used"}


def test_a_signature_covers_the_body(node: NodeProcess, tmp_path: Path) -> None:
    key, content = pushed(node, tmp_path)
    path = f"/internal/replicas/{key}/confirm"
    signed_for = b'{"size": 1, "md5": "' + b"0" * 32 + b'", "sha256": "' + b"0" * 64 + b'"}'
    headers = node.signed_headers("POST", path, signed_for)
    response = node.request("POST", path, json.dumps(expected(content)).encode(), headers)
    assert response.status == 403
    assert (node.data_dir / "incoming" / key).exists()


# ---------------------------------------------------------------- rsync


def test_a_push_with_the_wrong_password_is_refused(node: NodeProcess, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"intruder")
    key = key_for(b"intruder")
    done = node.push(source, key, password="not-the-password")
    assert done.returncode != 0
    assert "auth failed" in done.stderr
    assert not (node.data_dir / "incoming" / key).exists()


def test_the_incoming_module_cannot_be_read_or_listed(node: NodeProcess, tmp_path: Path) -> None:
    key, _ = pushed(node, tmp_path)
    env = {**os.environ, "RSYNC_PASSWORD": node.keys.rsync_password}
    base = f"rsync://pyarchive@127.0.0.1:{node.rsync_port}/"
    read = subprocess.run(
        ["rsync", "--timeout=30", f"{base}incoming/{key}", str(tmp_path / "back")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert read.returncode != 0 and "write only" in read.stderr
    assert not (tmp_path / "back").exists()
    modules = subprocess.run(
        ["rsync", "--timeout=30", base], capture_output=True, text=True, timeout=60, env=env
    )
    assert "incoming" not in modules.stdout


# ---------------------------------------------------------------- downloads


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-s", *args], capture_output=True, timeout=60)


def test_a_download_token_serves_the_replica_whole_and_by_ranges(
    node: NodeProcess, tmp_path: Path
) -> None:
    key, content = confirmed(node, tmp_path)
    url = f"{node.url}/download/{node.token(key, filename='Tax return 2025.pdf')}"
    whole = tmp_path / "whole.bin"
    assert curl("-o", str(whole), "-w", "%{http_code}", url).stdout == b"200"
    assert whole.read_bytes() == content
    part = curl("-r", "10-19", "-D", "-", url).stdout
    head, _, body = part.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206") and body == content[10:20]
    assert b"Content-Range: bytes 10-19/300000" in head
    headers = node.request("HEAD", url.removeprefix(node.url)).headers
    assert headers["ETag"] == f'"{key.partition("-")[2]}"'
    assert headers["Content-Disposition"].startswith("attachment;")
    assert "Tax return 2025.pdf" in headers["Content-Disposition"]
    assert headers["Last-Modified"] and headers["Content-Length"] == str(len(content))
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Content-Type-Options"] == "nosniff"
    typed = node.request("HEAD", f"/download/{node.token(key, content_type='image/jpeg')}")
    assert typed.headers["Content-Type"] == "image/jpeg"  # the type the grant carries


def test_a_download_answers_multiple_ranges_416_and_if_range(
    node: NodeProcess, tmp_path: Path
) -> None:
    key, content = confirmed(node, tmp_path, 5000)
    path = f"/download/{node.token(key)}"
    multi = node.request("GET", path, headers={"Range": "bytes=0-9,4990-"})
    assert multi.status == 206
    message = email.message_from_bytes(
        b"Content-Type: " + multi.headers["Content-Type"].encode() + b"\r\n\r\n" + multi.body,
        policy=email.policy.HTTP,
    )
    parts = [part.get_payload(decode=True) for part in message.iter_parts()]
    assert parts == [content[:10], content[4990:]]
    unsatisfiable = node.request("GET", path, headers={"Range": "bytes=5000-"})
    assert unsatisfiable.status == 416
    assert unsatisfiable.headers["Content-Range"] == "bytes */5000"
    etag = multi.headers["ETag"]
    matching = node.request("GET", path, headers={"Range": "bytes=0-0", "If-Range": etag})
    assert (matching.status, matching.body) == (206, content[:1])
    changed = node.request("GET", path, headers={"Range": "bytes=0-0", "If-Range": '"other"'})
    assert (changed.status, changed.body) == (200, content)


def test_tampered_expired_and_other_node_tokens_are_403(node: NodeProcess, tmp_path: Path) -> None:
    key, _ = confirmed(node, tmp_path, 100)
    token = node.token(key)
    head, _, signature = token.split(".")
    forged = node.token(key_for(b"another file"))
    bad = [
        f"{head}.{forged.split('.')[1]}.{signature}",
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        node.token(key, lifetime=-5),
        node.token(key, node="node2"),
        node.token(key, keys=NodeKeys.for_node("another cluster", node.name)),
        "not-a-token",
    ]
    for token in bad:
        response = node.request("GET", f"/download/{token}")
        assert response.status == 403, token
        assert "detail" in response.json()


def test_a_valid_token_for_a_replica_not_held_is_404(node: NodeProcess) -> None:
    response = node.request("GET", f"/download/{node.token(key_for(b'gone'))}")
    assert response.status == 404
    assert response.json()["detail"]


# ---------------------------------------------------------------- the rsync daemon's life


def test_a_killed_rsync_daemon_degrades_the_node_until_it_is_restarted(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", env={"PYARCHIVE_RSYNC_RESTART_DELAY": "0.5s"}).start()
    try:
        first = node.rsyncd_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        node.wait_for_status("degraded", timeout=5)
        node.wait_for_status("ok", timeout=10)
        assert node.rsyncd_pid() not in {None, first}
        key, content = confirmed(node, tmp_path)
        assert node.replica_path(key).read_bytes() == content
    finally:
        node.stop()


def test_stopping_the_node_stops_its_rsync_daemon_too(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data").start()
    daemon = node.rsyncd_pid()
    assert daemon is not None
    node.stop()
    assert node.process is not None and node.process.returncode == 0
    assert not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == "zombie"


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_killed_nodes_rsync_daemon_dies_with_it_and_the_node_starts_again_on_its_ports(
    tmp_path: Path,
) -> None:
    node = NodeProcess(tmp_path / "data").start()
    try:
        daemon = node.rsyncd_pid()
        assert daemon is not None
        node.kill()
        deadline = time.monotonic() + 5
        while not _gone(daemon) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(daemon), "the rsync daemon outlived its SIGKILLed node"
        node.start()  # the same HTTP and rsync ports: nothing holds them
        assert node.rsyncd_pid() not in {None, daemon}
        key, content = confirmed(node, tmp_path, 1000)
        assert node.replica_path(key).read_bytes() == content
    finally:
        node.stop()


def test_a_daemon_left_by_an_earlier_run_is_stopped_when_the_node_starts(tmp_path: Path) -> None:
    """A daemon that did not die with its node (started by an older version, or elsewhere
    than on Linux) is found by its pid file and stopped before the new one binds the port."""
    node = NodeProcess(tmp_path / "data").start()
    node.stop()
    conf = node.data_dir.resolve() / "rsyncd.conf"
    orphan = subprocess.Popen(
        daemon_argv("rsync", node.rsync_port, conf),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        (node.data_dir / "rsyncd.pid").write_text(f"{orphan.pid}\n")
        deadline = time.monotonic() + 10
        while stale_daemon_pid(node.data_dir / "rsyncd.pid", conf) != orphan.pid:
            assert time.monotonic() < deadline, "the stand-in orphan did not start"
            time.sleep(0.05)
        node.start()
        try:
            assert node.rsyncd_pid() not in {None, orphan.pid}
            assert orphan.wait(5) is not None
            key, content = confirmed(node, tmp_path, 1000)
            assert node.replica_path(key).read_bytes() == content
        finally:
            node.stop()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_a_node_without_a_key_refuses_to_start_with_one_clear_line(tmp_path: Path) -> None:
    secrets = {"PYARCHIVE_CLUSTER_SECRET", "PYARCHIVE_NODE_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    done = subprocess.run(
        [str(BIN / "pyarchive-node"), "--name", "n", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "Error: node_key is not set: give it as PYARCHIVE_NODE_KEY (from 'pyarchive-proxy "
        "nodes key NAME') or in the [node] section of the config file"
    ]
    assert not (tmp_path / "rsyncd.conf").exists()


def test_a_second_node_on_the_same_data_directory_refuses_to_start(node: NodeProcess) -> None:
    done = subprocess.run(
        [
            str(BIN / "pyarchive-node"), "--name", "intruder", "--data-dir", str(node.data_dir),
            "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
            "--rsync-port", str(free_port()),
        ],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYARCHIVE_CLUSTER_SECRET": SECRET},
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"Error: data_dir {node.data_dir} is in use by another pyarchive-node"
    ]
    assert node.health()["status"] == "ok"
    assert str(node.rsync_port) in psutil.Process(node.rsyncd_pid()).cmdline()
