"""``pyarchive download`` (issue 13) as its console script against a real cluster (a proxy,
two storage nodes with rsync, moto's S3 server): four ranges at once straight from a node;
a SIGKILL midway, then again, fetching only the rest; a damaged partial file caught block by
block; what the user had at the destination never replaced by something unverified; a full
disk; a file kept only in S3 restored on request."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import PyArchiveClient
from client.cli.download import BLOCK, PART_SUFFIX
from common.s3 import S3Settings
from tests.clusterkit import RemoteCluster, eventually, remote_cluster
from tests.proc import BIN
from tests.relay import Relay
from tests.s3server import S3Server
from tests.test_cli_client import PASSWORD, Device
from tests.test_cli_upload import MiB, write_random

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteCluster]:
    root = tmp_path_factory.mktemp("cli-download")
    server = S3Server().start()
    s3: S3Settings = server.bucket(name="cli", prefix="pa")
    try:
        with remote_cluster(root, f"sqlite:///{root / 'meta.db'}", s3) as running:
            yield running
    finally:
        server.close()


@pytest.fixture(scope="module")
def stored(
    cluster: RemoteCluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Device, str, Path, str]:
    """One person with a 60 MiB file on two nodes: (device, file id, the source, sha256)."""
    root = tmp_path_factory.mktemp("cli-download-person")
    me = Device(root / "config")
    me("config", "set", "server", cluster.proxy.url)
    assert me("signup", "dana", "--password-stdin", stdin=PASSWORD + "\n").code == 0
    source = root / "film.mkv"
    digest = write_random(source, 60 * MiB + 12345, seed=7)
    with PyArchiveClient(cluster.proxy.url, token(me)) as client:
        file_id = str(client.upload(source, chunk_size=8 * MiB)["file_id"])
    cluster.token = token(me)
    eventually(lambda: cluster.confirmed(file_id, 2), 60, "two replicas")
    return me, file_id, source, digest


def listed_state(device: Device) -> str:
    """The state column ``pyarchive ls`` shows for the film (size, versions, state, path)."""
    line = next(line for line in device("ls").out.splitlines() if line.endswith("film.mkv"))
    return line.split()[-2]


def token(device: Device) -> str:
    return device.config.joinpath("token").read_text().strip()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while piece := data.read(MiB):
            digest.update(piece)
    return digest.hexdigest()


def test_four_ranges_at_once_land_verified_under_the_file_name(
    stored: tuple[Device, str, Path, str], tmp_path: Path
) -> None:
    me, file_id, _, digest = stored
    os.chdir(tmp_path)
    done = me("download", file_id, "--connections", "4")
    assert done.code == 0, done.err
    assert done.out.strip() == f"downloaded film.mkv ({60 * MiB + 12345} bytes, sha256 verified)"
    assert sha256_of(tmp_path / "film.mkv") == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["film.mkv"]  # no partial left


def test_killed_midway_it_resumes_and_a_damaged_block_is_fetched_again(
    stored: tuple[Device, str, Path, str], cluster: RemoteCluster, tmp_path: Path
) -> None:
    me, file_id, _, digest = stored
    dest = tmp_path / "copy.mkv"
    dest.write_bytes(b"what the user had here before")
    # Ranges come from the nodes once the proxy has redirected there: put a slow link in
    # front of each node (the redirect names the node's registered URL) to catch it midway.
    with contextlib.ExitStack() as stack:
        for node in cluster.nodes:
            relay = stack.enter_context(Relay(node.port, down_rate=15 * MiB))
            moved = cluster.staff(
                "PATCH", f"/api/nodes/{node.name}/", {"url": f"http://127.0.0.1:{relay.port}"}
            )
            assert moved[0] == 200, moved
            stack.callback(cluster.staff, "PATCH", f"/api/nodes/{node.name}/", {"url": node.url})
        process = subprocess.Popen(
            [str(BIN / "pyarchive"), "--config-dir", str(me.config), "download", file_id,
             "-o", str(dest), "--connections", "4"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        meta = dest.with_name(dest.name + PART_SUFFIX + ".json")

        def some_blocks_done() -> int | None:
            assert process.poll() is None, process.communicate()
            try:
                done = json.loads(meta.read_text())["done"]
            except (FileNotFoundError, ValueError):
                return None
            return len(done) if 2 <= len(done) < 7 else None

        eventually(some_blocks_done, 120, "a few blocks on disk")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert dest.read_bytes() == b"what the user had here before"  # untouched so far
    done_blocks = sorted(int(k) for k in json.loads(meta.read_text())["done"])
    partial = dest.with_name(dest.name + PART_SUFFIX)
    with partial.open("r+b") as data:  # damage one block recorded as done
        data.seek(done_blocks[0] * BLOCK + 100)
        data.write(b"\x00garbage\x00")
    again = me("download", file_id, "-o", str(dest), "--connections", "4")
    assert again.code == 0, again.err
    total = -(-(60 * MiB + 12345) // BLOCK)
    assert f"resumed: kept {len(done_blocks) - 1} of {total} blocks" in again.out  # not the bad one
    assert "fetching it again" not in again.out
    assert sha256_of(dest) == digest
    assert not partial.exists() and not meta.exists()


def test_a_full_disk_fails_with_one_line_and_leaves_the_destination_alone(
    stored: tuple[Device, str, Path, str], tmp_path: Path
) -> None:
    me, file_id, _, _ = stored
    dest = tmp_path / "keep.mkv"
    dest.write_bytes(b"precious")

    def small_disk() -> None:  # writes past 1 MiB fail (EFBIG), as a full disk would (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, MiB))

    done = subprocess.run(
        [str(BIN / "pyarchive"), "--config-dir", str(me.config), "download", file_id,
         "-o", str(dest)],
        capture_output=True, text=True, preexec_fn=small_disk, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("pyarchive: ") and "File too large" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert dest.read_bytes() == b"precious"


def test_a_file_kept_only_in_s3_is_restored_when_asked(
    stored: tuple[Device, str, Path, str], cluster: RemoteCluster, tmp_path: Path
) -> None:
    me, file_id, _, digest = stored

    def mirrored() -> dict[str, Any] | None:
        return cluster.remote_state(file_id, "mirrored")

    eventually(mirrored, 120, "mirrored to S3")
    assert listed_state(me) == "backed-up"
    assert me("uncache", file_id).code == 0
    assert listed_state(me) == "remote"
    refused = me("download", file_id, "-o", str(tmp_path / "x"))
    assert refused.code == 5 and "--restore" in refused.err
    done = me("download", file_id, "-o", str(tmp_path / "back.mkv"), "--restore")
    assert done.code == 0, done.err
    assert sha256_of(tmp_path / "back.mkv") == digest
