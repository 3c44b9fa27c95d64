"""HTTPS end to end (issue 14): a proxy and a node each listening on a TLS endpoint string,
the node registered with its https:// URL, the proxy trusting the node's private CA
(``node_ca_file``); a file uploaded over HTTPS is replicated to the node and downloaded by
curl through the proxy's redirect, which names the node's https:// URL.

Real processes and the real curl, with a CA and a certificate for 127.0.0.1 made here.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.proc import BIN, free_port

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key) PEMs."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("PyArchive test CA"))
        .issuer_name(_name("PyArchive test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class Curl:
    """curl over HTTPS, trusting only the test CA."""

    def __init__(self, ca: Path) -> None:
        self.ca = ca

    def __call__(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        command = ["curl", "-sS", "--max-time", "30", "--cacert", str(self.ca), *args]
        return subprocess.run(command, capture_output=True, check=False)

    def json(self, *args: str) -> Any:
        done = self(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def wait_healthy(self, url: str, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, f"exited with {process.returncode}"
            if self("-f", "-o", "/dev/null", f"{url}/health").returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"{url} did not become healthy")


def tls(port: int, cert: Path, key: Path) -> str:
    return f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    running: list[subprocess.Popen[bytes]] = []
    try:
        yield running
    finally:
        for process in reversed(running):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def test_a_file_goes_up_over_https_and_comes_back_through_the_https_redirect_to_the_node(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    ca, cert, key = make_certificates(tmp_path)
    curl = Curl(ca)
    env = {
        **os.environ,
        "PYARCHIVE_CLUSTER_SECRET": secrets.token_urlsafe(48),
        "PYARCHIVE_NODE_PING_INTERVAL": "0.2s",
        "PYARCHIVE_REPLICATION_INTERVAL": "0.2s",
    }
    node_port, rsync_port, proxy_port = free_port(), free_port(), free_port()
    node_log = open(tmp_path / "node.log", "ab")
    started.append(subprocess.Popen(
        [str(BIN / "pyarchive-node"), "--name", "n1", "--zone", "a",
         "--data-dir", str(tmp_path / "node"), "--listen", tls(node_port, cert, key),
         "--rsync-port", str(rsync_port)],
        stdout=node_log, stderr=subprocess.STDOUT, env=env,
    ))  # fmt: skip
    node_url = f"https://127.0.0.1:{node_port}"
    curl.wait_healthy(node_url, started[-1])

    proxy_dir, database = tmp_path / "proxy", f"sqlite:///{tmp_path / 'meta.db'}"
    proxy_dir.mkdir()
    subprocess.run(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(proxy_dir), "--database", database,
         "create-admin", "boss"],
        env={**env, "PYARCHIVE_ADMIN_PASSWORD": "Staff-Pass-2024"}, check=True,
        capture_output=True,
    )  # fmt: skip
    proxy_log = open(tmp_path / "proxy.log", "ab")
    started.append(subprocess.Popen(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(proxy_dir), "--database", database,
         "--listen", tls(proxy_port, cert, key)],
        stdout=proxy_log, stderr=subprocess.STDOUT,
        env={**env, "PYARCHIVE_NODE_CA_FILE": str(ca), "PYARCHIVE_REPLICAS": "1"},
    ))  # fmt: skip
    proxy = f"https://127.0.0.1:{proxy_port}"
    curl.wait_healthy(proxy, started[-1])

    as_json = ("-H", "Content-Type: application/json")
    staff = curl.json(
        f"{proxy}/api-token-auth/",
        *as_json,
        "-d",
        json.dumps({"username": "boss", "password": "Staff-Pass-2024"}),
    )
    node = {"name": "n1", "url": node_url, "zone": "a",
            "rsync_url": f"rsync://pyarchive@127.0.0.1:{rsync_port}/incoming"}  # fmt: skip
    added = curl.json(f"{proxy}/api/nodes/", *as_json, "-H", f"Authorization: JWT {staff['token']}",
                      "-d", json.dumps(node))  # fmt: skip
    assert added["url"] == node_url, added
    me = {"username": "tess", "password": "Correct-Horse-9"}
    curl.json(f"{proxy}/api/auth/register", *as_json, "-d", json.dumps(me))
    token = curl.json(f"{proxy}/api-token-auth/", *as_json, "-d", json.dumps(me))["token"]
    user = ("-H", f"Authorization: JWT {token}")

    content = os.urandom(3 * 2**20 + 7)
    source = tmp_path / "scan.pdf"
    source.write_bytes(content)
    md5 = hashlib.md5(content).hexdigest()
    done = curl.json(
        f"{proxy}/storage/tmp-upload/?filename=scan.pdf&md5={md5}",
        *user,
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        f"@{source}",
    )
    file_id = done["file_id"]

    deadline = time.monotonic() + 30
    while True:
        replicas = curl.json(f"{proxy}/storage/files/{file_id}/", *user)["replicas"]
        if [r["state"] for r in replicas] == ["confirmed"]:
            break
        assert time.monotonic() < deadline, replicas
        time.sleep(0.2)

    first = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", *user,
                 f"{proxy}/storage/download/{file_id}/")  # fmt: skip
    code, location = first.stdout.decode().split(" ", 1)
    assert code in ("302", "303", "307") and location.startswith(f"{node_url}/download/"), first
    fetched = tmp_path / "back.pdf"
    followed = curl("-f", "-L", "-o", str(fetched), *user, f"{proxy}/storage/download/{file_id}/")
    assert followed.returncode == 0, followed.stderr
    assert fetched.read_bytes() == content
    untrusting = subprocess.run(["curl", "-sS", "-o", "/dev/null", location], capture_output=True)
    assert untrusting.returncode == 60  # without the CA, curl refuses the node's certificate
