"""A real node trusts less: only what was made with its own key, and nothing about a request's
body before its signature headers check out."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import psutil
import pytest

from common.signing import NODE, NodeKeys, node_key
from tests.nodeproc import SECRET, NodeProcess, expected, key_for
from tests.proc import BIN

MiB = 2**20
ANNOUNCED = 200 * MiB


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    running = NodeProcess(tmp_path_factory.mktemp("node") / "data").start()
    try:
        yield running
    finally:
        running.stop()


OTHER = NodeKeys.for_node(SECRET, "node2")  # what a compromised node2 holds


def test_a_node_refuses_what_another_nodes_key_made(node: NodeProcess, tmp_path: Path) -> None:
    path = "/internal/replicas"
    from_node2 = node.signed_headers("GET", path, keys=OTHER)
    refused = node.request("GET", path, headers=from_node2)
    assert (refused.status, refused.json()) == (403, {"detail": "Request is for another node"})
    relabelled = {**node.signed_headers("GET", path, keys=OTHER), NODE: node.name}
    refused = node.request("GET", path, headers=relabelled)
    assert (refused.status, refused.json()) == (403, {"detail": "Request signature does not match"})
    assert node.request("GET", path, headers=node.signed_headers("GET", path)).status == 200

    content = b"held by node1"
    source = tmp_path / "f.bin"
    source.write_bytes(content)
    key = key_for(content)
    assert node.push(source, key).returncode == 0
    assert node.confirm(key, content).status == 200
    minted = jwt.encode({"r": key, "n": node.name, "f": "f", "exp": int(time.time() + 60)},
                        OTHER.download, algorithm="HS256")  # fmt: skip
    assert node.request("GET", f"/download/{minted}").status == 403
    assert node.request("GET", f"/download/{node.token(key)}").body == content

    other = tmp_path / "g.bin"
    other.write_bytes(b"from node2")
    pushed = node.push(other, key_for(b"from node2"), password=OTHER.rsync_password)
    assert pushed.returncode != 0 and "auth failed" in pushed.stderr


def test_a_node_given_the_cluster_secret_derives_its_key_and_keeps_the_secret_from_rsync(
    tmp_path: Path,
) -> None:
    started = NodeProcess(tmp_path / "data", env={"PYARCHIVE_CLUSTER_SECRET": SECRET}).start()
    try:
        assert started.signed("GET", "/internal/replicas").status == 200
        daemon = started.rsyncd_pid()
        assert daemon is not None
        environment = psutil.Process(daemon).environ()
        assert "PYARCHIVE_CLUSTER_SECRET" not in environment
        assert "PYARCHIVE_NODE_KEY" not in environment
        secrets_file = (started.data_dir / "rsyncd.secrets").read_text()
        assert secrets_file == f"pyarchive:{started.keys.rsync_password}\n"
    finally:
        started.stop()
    keyed = NodeProcess(tmp_path / "keyed", name="n9", env={"PYARCHIVE_NODE_KEY": "0" * 64})
    keyed.start()
    try:  # a node key made for another name (or cluster) signs nothing here
        assert keyed.signed("GET", "/internal/replicas").status == 403
        assert node_key(SECRET, "n9") != "0" * 64
    finally:
        keyed.stop()


# ---------------------------------------------------------------- before the body


def _rss(node: NodeProcess) -> int:
    assert node.process is not None
    return int(psutil.Process(node.process.pid).memory_info().rss)


def _post_slowly(node: NodeProcess, path: str, headers: dict[str, str]) -> tuple[bytes, int]:
    """POST announcing a 200 MiB body, sending 64 KiB, then waiting for an answer; then keep
    sending 1 MiB at a time. Returns (what the node answered, bytes of body sent in all)."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {ANNOUNCED}",
            "Content-Type: application/json"]  # fmt: skip
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        conn.sendall(b" " * 64 * 1024)
        sent = 64 * 1024
        answer = conn.recv(65536)  # waits (up to the timeout) for the node to answer
        conn.settimeout(2)
        try:
            while sent < ANNOUNCED:
                conn.sendall(b" " * MiB)
                sent += MiB
                time.sleep(0.01)
        except OSError:
            pass  # the node closed the connection
        return answer, sent


def _answered(raw: bytes) -> tuple[int, dict[str, str], object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), fields, json.loads(body)


@pytest.mark.parametrize(
    ("signing", "status", "detail"),
    [
        ("unsigned", 403, "Request is not signed"),
        ("stale", 403, "Request signature has expired"),
        ("other node", 403, "Request is for another node"),
        ("signed", 413, f"request body is larger than {64 * 1024} bytes"),
    ],
)
def test_a_huge_post_is_refused_at_its_headers_before_its_body_is_sent(
    node: NodeProcess, signing: str, status: int, detail: str
) -> None:
    key = key_for(b"never sent")
    path = f"/internal/replicas/{key}/confirm"
    headers = {
        "unsigned": {},
        "stale": node.signed_headers("POST", path, at=time.time() - 120),
        "other node": node.signed_headers("POST", path, keys=OTHER),
        "signed": node.signed_headers("POST", path, json.dumps(expected(b"x")).encode()),
    }[signing]
    before = _rss(node)
    answer, sent = _post_slowly(node, path, headers)
    assert answer, "the node did not answer while the body was still being sent"
    code, fields, body = _answered(answer)
    assert (code, body) == (status, {"detail": detail})
    assert fields["Connection"] == "close" and fields["Content-Type"] == "application/json"
    assert sent < 32 * MiB  # the node stopped reading: the rest was never sent
    assert _rss(node) - before < 16 * MiB


def test_an_unsigned_post_expecting_100_continue_gets_only_the_refusal(node: NodeProcess) -> None:
    head = ["POST /internal/mirror/sync HTTP/1.1", "Host: 127.0.0.1",
            f"Content-Length: {ANNOUNCED}", "Expect: 100-continue"]  # fmt: skip
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"100 Continue" not in answer
    assert _answered(answer)[2] == {"detail": "Request is not signed"}


def test_an_unsigned_chunked_post_is_refused_after_its_first_chunk(node: NodeProcess) -> None:
    head = ["POST /internal/mirror/sync HTTP/1.1", "Host: 127.0.0.1",
            "Transfer-Encoding: chunked"]  # fmt: skip
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        conn.sendall(b"10000\r\n" + b" " * 0x10000 + b"\r\n")  # and no end of body
        answer = conn.recv(65536)
    code, fields, body = _answered(answer)
    assert (code, body) == (403, {"detail": "Request is not signed"})
    assert fields["Connection"] == "close"


def test_a_signed_body_past_64_kib_is_spooled_and_its_signature_checked(
    node: NodeProcess,
) -> None:
    want = json.dumps({"connection": None, "mirror_interval": None, "mirror": [], "restore": []})
    body = (want + " " * 300 * 1024).encode()  # JSON may end in whitespace
    path = "/internal/mirror/sync"
    headers = {**node.signed_headers("POST", path, body), "Content-Type": "application/json"}
    assert node.request("POST", path, body, headers).status == 200
    tampered = body[:-1] + b"\n"
    headers = {**node.signed_headers("POST", path, body), "Content-Type": "application/json"}
    refused = node.request("POST", path, tampered, headers)
    assert (refused.status, refused.json()) == (403, {"detail": "Request signature does not match"})


def test_a_signed_body_is_still_taken_whole(node: NodeProcess, tmp_path: Path) -> None:
    content = os.urandom(1000)
    source = tmp_path / "ok.bin"
    source.write_bytes(content)
    key = key_for(content)
    assert node.push(source, key).returncode == 0
    assert node.confirm(key, content).json() == {"key": key, "size": 1000}


# ---------------------------------------------------------------- the operator's side


def _proxy(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "pyarchive-proxy"), *args], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYARCHIVE_")} | env,
    )  # fmt: skip


def test_the_proxy_prints_each_nodes_key_from_its_cluster_secret(tmp_path: Path) -> None:
    given = _proxy("--data-dir", str(tmp_path / "a"), "nodes", "key", "node1",
                   env={"PYARCHIVE_CLUSTER_SECRET": SECRET})  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert given.stdout == node_key(SECRET, "node1") + "\n"
    # Without one set, the secret the proxy generated and kept in its data directory.
    kept = _proxy("--data-dir", str(tmp_path / "b"), "nodes", "key", "node2", env={})
    secret = (tmp_path / "b" / "cluster_secret").read_text().strip()
    assert kept.stdout == node_key(secret, "node2") + "\n"
    refused = _proxy("--data-dir", str(tmp_path / "b"), "nodes", "key", "../x", env={})
    assert refused.returncode != 0 and "not a node name" in refused.stderr
