"""``pyarchive sync`` (issue 13) as its console script, two "devices" (two configuration
directories and two folders) on one account, against a real cluster (a proxy and two storage
nodes with rsync): they converge after changes on each side; a conflict keeps both; deletions
go across only with --delete and stay recoverable; an emptied or missing folder is refused, and
so is deleting most of a side; --dry-run changes nothing; --watch brings the other device's
change; 10,000 small files, then a second sync that hashes nothing unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clusterkit import Cluster, eventually
from tests.proc import BIN, ProxyProcess
from tests.test_cli_client import PASSWORD, Device, Run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cli-sync")
    running = Cluster(root, f"sqlite:///{root / 'meta.db'}", 2).start()
    try:
        yield running
    finally:
        running.stop()


def devices(root: Path, server: str, name: str) -> tuple[Device, Device]:
    """One account on two devices: ``a`` signed up, ``b`` logged in to the same account."""
    a, b = Device(root / "config-a"), Device(root / "config-b")
    for device in (a, b):
        assert device("config", "set", "server", server).code == 0
    assert a("signup", name, "--password-stdin", stdin=PASSWORD + "\n").code == 0
    assert b("login", name, "--password-stdin", stdin=PASSWORD + "\n").code == 0
    return a, b


def sync(device: Device, folder: Path, *args: str, timeout: float = 60) -> Run:
    name = device.config.name.removeprefix("config-")
    return device("sync", str(folder), "--to", "shared", "--device", name, *args, timeout=timeout)


def contents(folder: Path) -> dict[str, bytes]:
    """Every file of a synced folder, by relative path (not the sync's own state)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not relative.startswith(".pyarchive/"):
            found[relative] = path.read_bytes()
    return found


def write(folder: Path, relative: str, data: bytes) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_two_devices_converge_and_a_conflict_keeps_both(cluster: Cluster, tmp_path: Path) -> None:
    a, b = devices(tmp_path, cluster.proxy.url, "sofia")
    here, there = tmp_path / "laptop", tmp_path / "desktop"
    write(here, "notes.txt", b"first notes")
    write(here, "photos/cat.jpg", b"\xff\xd8 a cat")
    write(here, "photos/dog.jpg", b"\xff\xd8 a dog")
    first = sync(a, here)
    assert first.code == 0, first.err
    assert sync(b, there).code == 0
    assert contents(there) == contents(here)

    write(there, "photos/dog.jpg", b"\xff\xd8 a better dog")  # changed on b
    write(there, "todo.txt", b"buy milk")  # new on b
    write(here, "notes.txt", b"more notes")  # changed on a
    for device, folder in ((b, there), (a, here), (b, there)):
        done = sync(device, folder)
        assert done.code == 0, done.err
    assert contents(here) == contents(there)
    assert contents(here)["photos/dog.jpg"] == b"\xff\xd8 a better dog"
    assert contents(there)["notes.txt"] == b"more notes"

    write(here, "notes.txt", b"a's version")  # changed on both sides
    write(there, "notes.txt", b"b's version")
    assert sync(a, here).code == 0
    clash = sync(b, there)
    assert clash.code == 0, clash.err
    assert "conflict notes.txt: yours kept as notes.conflict-" in clash.out
    assert sync(a, here).code == 0
    assert contents(here) == contents(there)
    kept = [name for name in contents(there) if name.startswith("notes.conflict-")]
    assert len(kept) == 1 and kept[0].endswith("-b.txt")
    assert contents(there)["notes.txt"] == b"a's version"  # the server's came down
    assert contents(there)[kept[0]] == b"b's version"  # and b's is kept beside it


def test_deletions_go_across_only_with_delete_and_stay_recoverable(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = devices(tmp_path, cluster.proxy.url, "tomas")
    here, there = tmp_path / "one", tmp_path / "two"
    for index in range(4):
        write(here, f"f{index}.txt", f"file {index}".encode())
    assert sync(a, here).code == 0 and sync(b, there).code == 0

    (here / "f0.txt").unlink()
    assert sync(a, here).code == 0  # without --delete: brought back
    assert (here / "f0.txt").read_bytes() == b"file 0"

    (here / "f0.txt").unlink()
    gone = sync(a, here, "--delete")
    assert gone.code == 0, gone.err
    assert "deleted f0.txt on the server (kept in shared/.pyarchive-trash/" in gone.out
    assert sync(b, there, "--delete").code == 0
    assert sorted(contents(there)) == ["f1.txt", "f2.txt", "f3.txt"]
    trashed = list((there / ".pyarchive" / "trash").rglob("f0.txt"))
    assert len(trashed) == 1 and trashed[0].read_bytes() == b"file 0"
    listed = a("ls", "shared/.pyarchive-trash/")
    assert listed.code == 0 and "f0.txt" in listed.out  # on the server, with its versions

    for index in (1, 2):  # most of a side at once: refused, nothing changed
        (here / f"f{index}.txt").unlink()
    refused = sync(a, here, "--delete")
    assert refused.code == 5
    assert "refusing to delete 2 of 3 files on the server" in refused.err
    assert sorted(contents(there)) == ["f1.txt", "f2.txt", "f3.txt"]
    planned = sync(a, here, "--delete", "--max-delete", "100%", "--dry-run")
    assert planned.code == 0 and planned.out.count("would delete on the server") == 2
    assert sync(b, there).code == 0 and len(contents(there)) == 3  # the dry run did nothing


def test_an_emptied_or_missing_folder_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    a, _ = devices(tmp_path, cluster.proxy.url, "uma")
    folder = tmp_path / "disk"
    write(folder, "a.txt", b"a")
    write(folder, "b.txt", b"b")
    assert sync(a, folder).code == 0
    moved = tmp_path / "disk-elsewhere"
    folder.rename(moved)  # the disk is not mounted
    missing = sync(a, folder, "--delete")
    assert missing.code == 5 and "is missing, but the last sync saw 2 files" in missing.err
    assert not folder.exists()
    folder.mkdir()  # an empty mount point
    empty = sync(a, folder, "--delete")
    assert empty.code == 5 and "is empty, but the last sync saw 2 files" in empty.err
    shutil.rmtree(folder)
    moved.rename(folder)
    assert sync(a, folder).code == 0
    listed = [json.loads(line)["path"] for line in a("ls", "shared/", "--json").out.splitlines()]
    assert listed == ["shared/a.txt", "shared/b.txt"]  # nothing was deleted


def test_sync_watch_brings_the_other_devices_change(cluster: Cluster, tmp_path: Path) -> None:
    a, b = devices(tmp_path, cluster.proxy.url, "vito")
    here, there = tmp_path / "watched", tmp_path / "other"
    write(here, "start.txt", b"start")
    assert sync(a, here).code == 0
    watcher = subprocess.Popen(
        [str(BIN / "pyarchive"), "--config-dir", str(a.config), "sync", str(here),
         "--to", "shared", "--watch"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2)  # its first pass, and its stream connected
        write(there, "from-b.txt", b"hello from b")
        assert sync(b, there).code == 0
        eventually(lambda: (here / "from-b.txt").exists(), 15, "b's file on a")
        assert (here / "from-b.txt").read_bytes() == b"hello from b"
        write(here, "from-a.txt", b"hello from a")  # and the other way, from the folder
        eventually(
            lambda: "shared/from-a.txt" in b("ls", "shared/").out, 15, "a's file on the server"
        )
    finally:
        watcher.terminate()
        watcher.wait(10)


def test_ten_thousand_small_files_then_a_second_sync_that_hashes_nothing_unchanged(
    tmp_path: Path,
) -> None:
    proxy = ProxyProcess(tmp_path / "proxy", f"sqlite:///{tmp_path / 'meta.db'}").start()
    try:
        a, _ = devices(tmp_path, proxy.url, "wren")
        folder = tmp_path / "photos"
        for index in range(10_000):
            write(folder, f"{index // 500:02d}/{index:05d}.jpg", f"photo {index:05d}".encode())
        started = time.monotonic()
        first = sync(a, folder, "--jobs", "4", timeout=600)
        took = time.monotonic() - started
        assert first.code == 0, first.err[-2000:]
        assert first.out.count("uploaded ") == 10_000, took
        # Same size and time, other bytes: only a sync that hashed it would see the change.
        secret = folder / "00" / "00007.jpg"
        status = secret.stat()
        secret.write_bytes(b"PHOTO 00007")
        os.utime(secret, ns=(status.st_atime_ns, status.st_mtime_ns))
        started = time.monotonic()
        second = sync(a, folder)
        again = time.monotonic() - started
        assert second.code == 0, second.err
        assert "uploaded" not in second.out and "sync: 0 of 0 steps done" in second.out
        assert again < 30, again
        print(f"10,000 files: first sync {took:.1f} s, second {again:.1f} s")
    finally:
        proxy.stop()
