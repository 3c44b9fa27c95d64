"""A real node trusts less: only what was made with its own key."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import psutil
import pytest

from common.signing import NODE, NodeKeys, node_key
from tests.nodeproc import SECRET, NodeProcess, key_for
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
