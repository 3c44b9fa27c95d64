"""``pyarchive upload`` (issue 13) as its console script against a real cluster (a proxy and
two storage nodes with their rsync daemons): folders with their relative paths and ignore
rules; a SIGKILL midway, then the same command again, sending only the rest; a slow link that
resets every few MiB; a link that stalls; a file changed since it was interrupted; bad input,
an unreadable file and a quota."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clusterkit import Cluster, eventually
from tests.proc import BIN
from tests.relay import Relay
from tests.test_cli_client import PASSWORD, Device, Run

MiB = 2**20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cli-upload")
    running = Cluster(root, f"sqlite:///{root / 'meta.db'}", 2).start()
    try:
        yield running
    finally:
        running.stop()


def person(root: Path, server: str, name: str) -> Device:
    device = Device(root / f"config-{name}")
    assert device("config", "set", "server", server).code == 0
    done = device("signup", name, "--password-stdin", stdin=PASSWORD + "\n")
    assert done.code == 0, done.err
    return device


def token_of(device: Device) -> str:
    return device.config.joinpath("token").read_text().strip()


def stored(cluster: Cluster, device: Device) -> dict[str, dict[str, Any]]:
    """The person's files by path, as the server lists them."""
    status, body = cluster.proxy.request(
        "GET",
        "/storage/files/?page_size=1000",
        headers={"Authorization": f"JWT {token_of(device)}"},
    )
    assert status == 200, body
    return {item["path"]: item for item in body["results"]}


def write_random(path: Path, size: int, seed: int) -> str:
    """``size`` bytes that do not compress, quickly; their sha256."""
    digest = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with path.open("wb") as out:
        for index in range(0, size, MiB):
            piece = (index.to_bytes(8, "big") + block)[: min(MiB, size - index)]
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def test_a_folder_goes_up_with_its_relative_paths_minus_what_is_ignored(
    cluster: Cluster, tmp_path: Path
) -> None:
    me = person(tmp_path, cluster.proxy.url, "ulla")
    tree = tmp_path / "pictures"
    (tree / "2024" / "summer").mkdir(parents=True)
    (tree / "cache").mkdir()
    (tree / "a.jpg").write_bytes(b"a" * 1000)
    (tree / "2024" / "summer" / "b.jpg").write_bytes(b"b" * 5000)
    (tree / "2024" / "notes.tmp").write_bytes(b"scratch")
    (tree / "cache" / "thumb.bin").write_bytes(b"t")
    (tree / "empty.txt").write_bytes(b"")
    (tree / ".pyarchiveignore").write_text("*.tmp\ncache/\n")
    done = me("upload", str(tree), "--to", "backup")
    assert done.code == 0, done.err
    lines = sorted(done.out.splitlines())
    assert [line.split(":")[0] for line in lines] == [
        "uploaded backup/pictures/2024/summer/b.jpg",
        "uploaded backup/pictures/a.jpg",
        "uploaded backup/pictures/empty.txt",
    ]
    assert all("verified" in line for line in lines)
    files = stored(cluster, me)
    assert sorted(files) == [
        "backup/pictures/2024/summer/b.jpg", "backup/pictures/a.jpg", "backup/pictures/empty.txt",
    ]  # fmt: skip
    assert files["backup/pictures/2024/summer/b.jpg"]["filename"] == "b.jpg"
    # Again, unchanged: passed over (the server still has it as it is here), not a new version
    again = me("upload", str(tree / "a.jpg"), "--to", "backup/pictures")
    assert again.code == 0 and again.out.startswith(
        "uploaded backup/pictures/a.jpg: 1000 bytes, unchanged since it was sent"
    ), again.out
    assert len(stored(cluster, me)["backup/pictures/a.jpg"]["versions"]) == 1
    (tree / "a.jpg").write_bytes(b"A" * 1000)  # changed: a second version
    assert me("upload", str(tree / "a.jpg"), "--to", "backup/pictures").code == 0
    assert len(stored(cluster, me)["backup/pictures/a.jpg"]["versions"]) == 2
    status, _ = cluster.proxy.request(
        "DELETE", f"/storage/files/{stored(cluster, me)['backup/pictures/a.jpg']['id']}/",
        headers={"Authorization": f"JWT {token_of(me)}"},
    )  # fmt: skip
    assert status == 204
    assert me("upload", str(tree / "a.jpg"), "--to", "backup/pictures").code == 0  # deleted: sent
    assert len(stored(cluster, me)["backup/pictures/a.jpg"]["versions"]) == 1


def upload_process(device: Device, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "pyarchive"), "--config-dir", str(device.config), "upload", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def journal_url(device: Device) -> str | None:
    """The upload the journal says its one file is going into (None once it is up)."""
    try:
        with sqlite3.connect(device.config / "uploads.sqlite") as db:
            row = db.execute("SELECT url FROM uploads").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None or not row[0] else str(row[0])


def server_offset(cluster: Cluster, device: Device, url: str) -> int:
    path = "/" + url.split("/", 3)[3]
    status, body = cluster.proxy.request(
        "GET", path, headers={"Authorization": f"JWT {token_of(device)}"}
    )
    assert status == 200, body
    return int(body["offset"])


def kill_between(
    cluster: Cluster, device: Device, process: subprocess.Popen[str], size: int, low: float,
    high: float,
) -> int:  # fmt: skip
    """SIGKILL the client once the server's offset is between ``low`` and ``high`` of
    ``size``; the offset then."""

    def midway() -> int | None:
        assert process.poll() is None, "the upload ended before it could be interrupted"
        url = journal_url(device)
        offset = server_offset(cluster, device, url) if url else 0
        assert offset <= high * size, f"went past {high:.0%} before the kill: {offset}"
        return offset if offset >= low * size else None

    offset = eventually(midway, timeout=120, what="the upload midway")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return offset


@pytest.mark.slow
def test_killed_midway_the_same_command_again_sends_only_the_rest(
    cluster: Cluster, tmp_path: Path
) -> None:
    size = 300 * MiB
    source = tmp_path / "video.mkv"
    digest = write_random(source, size, seed=1)
    with Relay(cluster.proxy.port, rate=40 * MiB) as relay:
        me = person(tmp_path, f"http://127.0.0.1:{relay.port}", "vera")
        first = upload_process(me, str(source), "--chunk-size", "4M")
        offset = kill_between(cluster, me, first, size, 0.3, 0.7)
        relay.rate = None
        before = relay.sent
        again = me("upload", str(source), "--chunk-size", "4M")
        second = relay.sent - before
    assert again.code == 0, again.err
    assert "resumed at" in again.out and "verified" in again.out
    assert second < size - offset + 8 * MiB, (second, offset)  # the rest, and a chunk or two
    assert stored(cluster, me)["video.mkv"]["sha256"] == digest
    assert journal_url(me) is None  # done: nothing left to resume
    rerun = me("upload", str(source), "--chunk-size", "4M")  # after the interruption, again
    assert rerun.code == 0 and "unchanged since it was sent" in rerun.out, rerun.out
    assert len(stored(cluster, me)["video.mkv"]["versions"]) == 1  # not sent again


@pytest.mark.slow
def test_a_slow_link_that_breaks_every_few_mib_still_delivers_a_verified_file(
    cluster: Cluster, tmp_path: Path
) -> None:
    size = 24 * MiB
    source = tmp_path / "backup.tar"
    digest = write_random(source, size, seed=2)
    with Relay(cluster.proxy.port, rate=12 * MiB, reset_every=3 * MiB) as relay:
        me = person(tmp_path, f"http://127.0.0.1:{relay.port}", "wade")
        relay.resets = 0
        done = me("upload", str(source), "--chunk-size", "1M")
    assert done.code == 0, done.err
    assert relay.resets >= 7  # 24 MiB through a link that drops every 3 MiB
    assert stored(cluster, me)["backup.tar"]["sha256"] == digest


def test_a_link_that_stalls_is_dropped_after_the_stall_time_and_the_upload_goes_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    size = 7 * MiB
    source = tmp_path / "scan.pdf"
    digest = write_random(source, size, seed=5)
    with Relay(cluster.proxy.port, stall_after=3 * MiB) as relay:
        me = person(tmp_path, f"http://127.0.0.1:{relay.port}", "sami")
        started = time.monotonic()
        done = me("upload", str(source), "--chunk-size", "1M", "--stall", "2", timeout=120)
        took = time.monotonic() - started
    assert done.code == 0, done.err
    assert relay.stalls >= 2  # every connection hangs after 3 MiB: 7 MiB needs three
    assert took < 45, took  # each hang cost a couple of seconds, not the default minute
    assert stored(cluster, me)["scan.pdf"]["sha256"] == digest


def test_a_file_changed_since_it_was_interrupted_is_sent_afresh(
    cluster: Cluster, tmp_path: Path
) -> None:
    size = 40 * MiB
    source = tmp_path / "log.db"
    write_random(source, size, seed=3)
    with Relay(cluster.proxy.port, rate=8 * MiB) as relay:
        me = person(tmp_path, f"http://127.0.0.1:{relay.port}", "xena")
        first = upload_process(me, str(source), "--chunk-size", "1M")
        kill_between(cluster, me, first, size, 0.1, 0.9)
        relay.rate = None
        old_url = journal_url(me)
        changed = write_random(source, size + 123, seed=4)
        again = me("upload", str(source), "--chunk-size", "1M")
    assert again.code == 0, again.err
    assert "resumed" not in again.out
    assert stored(cluster, me)["log.db"]["sha256"] == changed
    assert old_url is not None and server_status(cluster, me, old_url) == 404  # abandoned


def server_status(cluster: Cluster, device: Device, url: str) -> int:
    path = "/" + url.split("/", 3)[3]
    status, _ = cluster.proxy.request(
        "GET", path, headers={"Authorization": f"JWT {token_of(device)}"}
    )
    return status


def test_bad_input_and_a_quota_each_give_one_line_and_their_exit_code(
    cluster: Cluster, tmp_path: Path
) -> None:
    me = person(tmp_path, cluster.proxy.url, "yuri")
    missing = me("upload", str(tmp_path / "nowhere"))
    assert missing.code == 3
    assert missing.err.strip() == f"pyarchive: {tmp_path / 'nowhere'}: no such file or directory"
    status, _ = cluster.staff("PATCH", "/api/users/yuri/", {"quota": 10_000})
    assert status == 200
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 20_000)
    refused: Run = me("upload", str(big))
    assert refused.code == 5, refused.err
    assert "quota exceeded" in refused.out and refused.err.strip().endswith("1 of 1 files failed")
    assert stored(cluster, me) == {}
    usage = json.loads(me("usage", "--json").out)
    assert usage == {"used": 0, "quota": 10_000}


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, capability.h


def without_reading_everything() -> None:
    """In the child, before it runs the command: root loses the power to read any file (its
    bounding set drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, which exec then takes from
    its effective set), so file modes hold for it as for anyone."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_file_fails_alone_in_one_line_and_the_rest_go_up(
    cluster: Cluster, tmp_path: Path
) -> None:
    me = person(tmp_path, cluster.proxy.url, "zora")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "fine.txt").write_bytes(b"readable")
    secret = folder / "secret.txt"
    secret.write_bytes(b"not for you")
    secret.chmod(0)
    done = me("upload", str(folder), preexec=without_reading_everything)
    assert done.code == 1, (done.out, done.err)
    assert f"FAILED docs/secret.txt: {secret}: Permission denied" in done.out
    assert "uploaded docs/fine.txt" in done.out
    assert done.err.strip() == "pyarchive: 1 of 2 files failed"
    assert set(stored(cluster, me)) == {"docs/fine.txt"}
    assert secret.stat().st_mode & 0o777 == 0  # left as it was
