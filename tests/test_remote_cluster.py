"""The remote tier with real processes: a proxy, two storage nodes with their rsync daemons,
and moto's S3 server over real HTTP (in this process, so a test can read the bucket).

Covered here: a multi-part file mirrored with every part checked against the bytes; uncache
refused until the mirror is verified, then allowed; 409 / 202 downloads of a file only in S3;
cache brings it back to two nodes byte for byte; a part corrupted in S3 fails the restore
loudly and nothing wrong is served; deleting a file removes its S3 object; and the full
disaster recovery: back up, delete the proxy's and every node's data, restore into a new
proxy with new nodes from the bucket alone, cache every file and compare every byte. No
S3 secret appears in any answer or log line.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from tusclient import client as tus_client

from client import PyArchiveClient
from common.s3 import S3Settings, make_client
from tests.clusterkit import (
    MIRROR_FAST,
    NODE_FAST,
    STAFF,
    RemoteCluster,
    eventually,
    remote_cluster,
)
from tests.conftest import _database_url
from tests.nodeproc import NodeProcess
from tests.proc import BIN, ProxyProcess
from tests.s3server import S3Server

pytestmark = pytest.mark.slow

S3_SECRET = "moto-secret-Vd93kQzLw0PaRtXu"
PART = 5 * 2**20


@pytest.fixture
def s3() -> Iterator[S3Settings]:
    server = S3Server().start()
    try:
        yield server.bucket(
            access_key="pyarchive-test", secret_key=S3_SECRET, prefix="pa", name="main"
        )
    finally:
        server.close()


@pytest.fixture
def cluster(tmp_path: Path, s3: S3Settings) -> Iterator[RemoteCluster]:
    with remote_cluster(tmp_path, f"sqlite:///{tmp_path}/meta.sqlite3", s3) as running:
        yield running


def content(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_bytes(s3: S3Settings, data_sha256: str) -> tuple[bytes, dict[str, str]]:
    answer = make_client(s3).get_object(Bucket=s3.bucket, Key=s3.object_key(data_sha256))
    return answer["Body"].read(), answer["Metadata"]


def mirrored(cluster: RemoteCluster, file_id: str, timeout: float = 60) -> dict[str, Any]:
    return eventually(
        lambda: cluster.remote_state(file_id, "mirrored"), timeout, f"{file_id} mirrored"
    )


def test_a_multi_part_file_is_mirrored_uncached_cached_and_served_intact(
    cluster: RemoteCluster,
) -> None:
    data = content(1, 3 * PART + 123_457)
    upload = cluster.upload(data, "big.bin")
    file_id = upload["file_id"]
    # Before the mirror is verified (it cannot even start before the replicas are confirmed).
    status, body = cluster.post(f"/storage/files/{file_id}/uncache")
    assert status == 409, body
    assert "not mirrored" in body["detail"]

    found = mirrored(cluster, file_id)
    assert found["remote_verified"] is True
    parts = found["parts"]
    assert [p["index"] for p in parts] == [1, 2, 3, 4]
    for part in parts:
        piece = data[part["offset"] : part["offset"] + part["size"]]
        assert part["remote_state"] == "uploaded"
        assert part["sha256"] == sha256(piece)
    assert sum(p["size"] for p in parts) == len(data)
    stored, metadata = object_bytes(cluster.s3, sha256(data))
    assert stored == data
    assert (metadata["sha256"], metadata["md5"], int(metadata["size"])) == (
        sha256(data), hashlib.md5(data).hexdigest(), len(data)
    )  # fmt: skip

    # Another user cannot see the file, so cannot uncache or cache it either.
    other = {"Authorization": f"JWT {cluster.proxy.login('someone-else', 'Other-Pass-2024')}"}
    for action in ("uncache", "cache"):
        status, body = cluster.proxy.request(
            "POST", f"/storage/files/{file_id}/{action}", headers=other
        )
        assert status == 404, body
    # Uncache (here by staff, who may do it for any file): every node lets go of its copy.
    status, body = cluster.staff("POST", f"/storage/files/{file_id}/uncache")
    assert status == 200, body
    assert cluster.detail(file_id)["remote_state"] == "remote"
    eventually(lambda: cluster.detail(file_id)["replicas"] == [], what="replicas dropped")
    eventually(
        lambda: not [f for n in cluster.nodes for f in (n.data_dir / "replicas").rglob("*-*")],
        what="replica files removed from the nodes",
    )
    status, body = cluster.user_request("GET", f"/storage/download/{file_id}/")
    assert status == 409, body
    assert body["detail"] == "file is in remote storage"
    assert body["cache_url"].endswith(f"/storage/files/{file_id}/cache")

    # Download with ?restore=1: 202, and the restore runs.
    status, body = cluster.user_request("GET", f"/storage/download/{file_id}/?restore=1")
    assert status == 202, body
    status, again = cluster.post(f"/storage/files/{file_id}/cache")  # joins the same restore
    assert status in (200, 202), again
    found = mirrored(cluster, file_id)
    assert found["restore"]["parts_restored"] == 4
    eventually(lambda: cluster.confirmed(file_id, 2), 60, "two replicas again")
    code, body_bytes, _ = cluster.download(file_id)
    assert code == 200 and body_bytes == data

    # The jobs and the system log saw it.
    status, jobs = cluster.staff("GET", "/api/jobs/")
    assert status == 200
    names = {job["name"] for job in jobs}
    assert {"mirror-sync", "s3-cleanup", "metadata-backup"} <= names
    assert {"mirror@node1", "mirror@node2"} <= names
    status, entries = cluster.staff("GET", "/api/system-log/?job=mirror-sync&level=debug")
    assert status == 200
    status, entries = cluster.staff("GET", "/api/system-log/")
    events = {entry["event"] for entry in entries}
    assert {"mirror", "restore", "uncache"} <= events, events

    # Deleting the file removes the object from the bucket.
    status, _ = cluster.user_request("DELETE", f"/storage/files/{file_id}/")
    assert status == 204

    def gone() -> bool:
        listed = make_client(cluster.s3).list_objects_v2(Bucket=cluster.s3.bucket, Prefix="pa/")
        return not [o for o in listed.get("Contents", []) if "metadata/" not in o["Key"]]

    eventually(gone, 30, "the S3 object removed")
    assert S3_SECRET not in "\n".join(cluster.answers)
    assert S3_SECRET not in cluster.logs()
    assert S3_SECRET[-12:] not in cluster.logs()


def test_a_file_uploaded_over_tus_is_listed_replicated_mirrored_and_downloadable(
    cluster: RemoteCluster,
) -> None:
    data = content(7, 2 * PART + 999)
    source = cluster.root / "tus.bin"
    source.write_bytes(data)
    uploader = tus_client.TusClient(
        f"{cluster.proxy.url}/files/", headers={"Authorization": f"JWT {cluster.token}"}
    ).uploader(
        str(source),
        chunk_size=2**20,
        metadata={"filename": "tus.pdf", "filetype": "application/pdf"},
    )
    uploader.upload()
    assert uploader.url is not None
    status, upload = cluster.user("GET", f"/storage/tmp-upload/{uploader.url.rsplit('/', 1)[1]}/")
    assert status == 200 and upload["status"] == 2, upload
    file_id = upload["file_id"]
    status, listing = cluster.user("GET", "/storage/files/")
    assert [f["id"] for f in listing["results"]] == [file_id]
    eventually(lambda: cluster.confirmed(file_id, 2), 30, "two replicas of the tus upload")
    found = mirrored(cluster, file_id)
    assert found["remote_verified"] is True and found["sha256"] == sha256(data)
    stored, _ = object_bytes(cluster.s3, sha256(data))
    assert stored == data
    code, body, _ = cluster.download(file_id)
    assert code == 200 and body == data
    # The node serves it with the type its uploader gave, carried in the signed redirect.
    headers = subprocess.run(
        ["curl", "-s", "-L", "-o", "/dev/null", "-D", "-",
         "-H", f"Authorization: JWT {cluster.token}",
         f"{cluster.proxy.url}/storage/download/{file_id}/"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    last = headers.strip().split("\n\n")[-1]  # text mode has made each CRLF a newline
    assert last.startswith("HTTP/1.1 200") and "Content-Type: application/pdf" in last


def test_a_part_corrupted_in_s3_fails_the_restore_and_nothing_wrong_is_served(
    cluster: RemoteCluster,
) -> None:
    data = content(2, 2 * PART + 999)
    file_id = cluster.upload(data, "victim.bin")["file_id"]
    mirrored(cluster, file_id)
    status, body = cluster.post(f"/storage/files/{file_id}/uncache")
    assert status == 200, body
    eventually(lambda: cluster.detail(file_id)["replicas"] == [], what="replicas dropped")

    # Flip one byte in the second part of the object, keeping its metadata.
    client = make_client(cluster.s3)
    key = cluster.s3.object_key(sha256(data))
    stored, metadata = object_bytes(cluster.s3, sha256(data))
    flipped = bytearray(stored)
    flipped[PART + 17] ^= 0x01
    client.put_object(Bucket=cluster.s3.bucket, Key=key, Body=bytes(flipped), Metadata=metadata)

    status, body = cluster.post(f"/storage/files/{file_id}/cache")
    assert status == 202, body

    def failed() -> dict[str, Any] | None:
        found = cluster.detail(file_id)
        return found if found["restore"]["detail"] else None

    found = eventually(failed, 60, "the restore to fail")
    assert found["remote_state"] == "remote"
    assert "sha256" in found["restore"]["detail"]
    assert found["replicas"] == []
    status, body = cluster.user_request("GET", f"/storage/download/{file_id}/")
    assert status == 409, body
    for node in cluster.nodes:
        assert not list((node.data_dir / "replicas").rglob("*-*"))
    status, entries = cluster.staff("GET", "/api/system-log/?level=error")
    assert any(e["event"] == "restore" for e in entries), entries


def test_disaster_recovery_from_the_bucket_alone(
    tmp_path: Path, s3: S3Settings, database_url: str
) -> None:
    first = RemoteCluster(tmp_path / "before", database_url, s3)
    files: dict[str, bytes] = {}
    try:
        first.start()
        first.connect_s3()
        for seed, size in ((3, 3 * PART + 5), (4, 1000), (5, PART)):
            data = content(seed, size)
            files[first.upload(data, f"file-{seed}.bin")["file_id"]] = data
        for file_id in files:
            mirrored(first, file_id)
        status, body = first.staff("POST", "/api/jobs/metadata-backup/run")
        assert status == 200, body
        snapshot = body["result"]["snapshot"]
        assert snapshot.startswith("pa/metadata/")
    finally:
        first.stop()

    # The operator kept a copy of the backup key apart from the server (as the README says).
    kept_key = tmp_path / "backup_key.copy"
    shutil.copy(first.proxy.data_dir / "backup_key", kept_key)
    # The house fire: every data directory is gone, and the database with them.
    shutil.rmtree(tmp_path / "before")
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    (tmp_path / "after").mkdir()
    new_database = _database_url(kind, tmp_path / "after")
    database = next(new_database)
    try:
        proxy_dir = tmp_path / "after" / "proxy"
        proxy_dir.mkdir()
        done = subprocess.run(
            [str(BIN / "pyarchive-proxy"), "--data-dir", str(proxy_dir), "--database", database,
             "restore", "--from-s3", "--bucket", s3.bucket, "--region", s3.region,
             "--endpoint-url", s3.endpoint_url, "--prefix", s3.prefix,
             "--access-key", s3.access_key, "--backup-key-file", str(kept_key),
             "--restore-staff"],
            env={**os.environ, "PYARCHIVE_S3_SECRET_KEY": S3_SECRET,
                 "PYARCHIVE_SECRET_KEY": "process-test-secret"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + done.stdout
        assert S3_SECRET not in done.stdout + done.stderr

        second = RemoteCluster(tmp_path / "after", database, s3)
        second.proxy = ProxyProcess(proxy_dir, database, env=MIRROR_FAST)
        second.nodes = [
            NodeProcess(tmp_path / "after" / f"new{i}", name=f"new{i}", zone="ab"[i % 2],
                        env=NODE_FAST)
            for i in (1, 2)
        ]  # fmt: skip
        try:
            second.proxy.start()
            _, body = second.proxy.request(
                "POST", "/api-token-auth/",
                json.dumps({"username": STAFF[0], "password": STAFF[1]}),
                {"Content-Type": "application/json"},
            )  # fmt: skip
            second.staff_token = body["token"]
            second.token = second.proxy.login()  # the same user and password as before
            for node in second.nodes:
                node.start()
                second.register(node)
            for file_id in files:
                assert second.detail(file_id)["remote_state"] == "remote"
                status, body = second.post(f"/storage/files/{file_id}/cache")
                assert status == 202, body
            for file_id, data in files.items():
                mirrored(second, file_id, 90)
                eventually(partial(second.confirmed, file_id, 2), 60, "two replicas")
                code, got, _ = second.download(file_id)
                assert code == 200 and got == data, file_id
            assert S3_SECRET not in "\n".join(second.answers)
            assert S3_SECRET not in second.logs()
        finally:
            second.stop()
    finally:
        next(new_database, None)


def test_two_users_with_the_same_bytes_never_see_or_take_each_others_copies(
    cluster: RemoteCluster,
) -> None:
    """Content is deduplicated within one owner's files only: Bob uploading the tester's
    bytes learns nothing from his file's answer (it is not already mirrored, as the
    tester's is), and the tester's uncache leaves Bob's local copies where they are."""
    data = content(7, 300_000)
    mine = cluster.upload(data, "mine.bin")["file_id"]
    mirrored(cluster, mine)
    eventually(partial(cluster.confirmed, mine, 2), 60, "the tester's two replicas")

    bob_token = cluster.proxy.login("someone-else", "Other-Pass-2024")
    bobs = {"Authorization": f"JWT {bob_token}"}
    (cluster.root / "same.bin").write_bytes(data)
    with PyArchiveClient(cluster.proxy.url, bob_token) as client:
        theirs = client.upload(cluster.root / "same.bin", chunk_size=1 << 20)["file_id"]

    def bob_sees() -> dict[str, Any]:
        status, body = cluster.proxy.request("GET", f"/storage/files/{theirs}/", headers=bobs)
        assert status == 200, body
        return dict(body)

    fresh = bob_sees()
    assert fresh["remote_state"] in {"local", "mirroring"} and not fresh["remote_verified"]
    eventually(lambda: bob_sees()["remote_state"] == "mirrored" or None, 60, "Bob's mirror")
    eventually(partial(confirmed_for, bob_sees, 2), 60, "Bob's two replicas")

    status, body = cluster.post(f"/storage/files/{mine}/uncache")
    assert status == 200, body
    eventually(lambda: cluster.detail(mine)["replicas"] == [], what="the tester's copies gone")
    assert cluster.detail(mine)["remote_state"] == "remote"
    after = bob_sees()
    assert after["remote_state"] == "mirrored" and confirmed_for(bob_sees, 2)
    status, body = cluster.proxy.request("GET", f"/storage/download/{theirs}/", headers=bobs)
    assert status != 409, body  # served from his local copies, not "in remote storage"
    status, body = cluster.proxy.request("POST", f"/storage/files/{mine}/cache", headers=bobs)
    assert status == 404, body  # and the tester's file stays invisible to him


def confirmed_for(detail: Any, count: int) -> bool | None:
    replicas = detail()["replicas"]
    return sum(r["state"] == "confirmed" for r in replicas) == count or None
