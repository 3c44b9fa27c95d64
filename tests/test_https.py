"""HTTPS end to end: a proxy and a node on TLS endpoints with a self-signed certificate, the
proxy trusting the node through ``node_ca_file``, and a download redirected to the node's
https URL, fetched with ``curl --cacert``."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.config import ConfigError
from proxy.cluster.tls import node_http_client
from tests.clusterkit import eventually
from tests.proc import BIN, ProxyProcess, chunk_headers, free_port

SECRET = "https-test-cluster-secret-of-enough-length"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_a_node_ca_file_without_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("no certificate here\n")
    with pytest.raises(ConfigError, match="node_ca_file"):
        node_http_client(None, str(tmp_path / "empty.pem"))
    with pytest.raises(ConfigError, match="node_ca_file"):
        node_http_client(None, str(tmp_path / "missing.pem"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_download_is_redirected_to_the_nodes_https_url_and_fetched_with_curl(
    tmp_path: Path,
) -> None:
    key, cert = self_signed(tmp_path)
    tls = f"privateKey={key}:certKey={cert}"
    node_port, rsync_port = free_port(), free_port()
    with open(tmp_path / "node.log", "ab") as log:
        node = subprocess.Popen(
            [str(BIN / "pyarchive-node"), "--name", "node1", "--zone", "a",
             "--data-dir", str(tmp_path / "node"),
             "--listen", f"ssl:{node_port}:interface=127.0.0.1:{tls}",
             "--rsync-port", str(rsync_port)],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYARCHIVE_CLUSTER_SECRET": SECRET},
        )  # fmt: skip
    env = {"PYARCHIVE_CLUSTER_SECRET": SECRET, "PYARCHIVE_NODE_CA_FILE": str(cert),
           "PYARCHIVE_REPLICAS": "1", "PYARCHIVE_NODE_PING_INTERVAL": "1s",
           "PYARCHIVE_REPLICATION_INTERVAL": "1s"}  # fmt: skip
    proxy = ProxyProcess(
        tmp_path / "proxy", f"sqlite:///{tmp_path}/m.sqlite3", env=env, tls_options=tls,
        tls=ssl.create_default_context(cafile=str(cert)),
    )  # fmt: skip
    try:
        proxy.start()
        added = subprocess.run(
            [str(BIN / "pyarchive-proxy"), "--data-dir", str(proxy.data_dir), "--database",
             proxy.database_url, "nodes", "add", "node1", f"https://127.0.0.1:{node_port}",
             f"rsync://pyarchive@127.0.0.1:{rsync_port}/incoming", "--zone", "a"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        token = proxy.login()
        content = os.urandom(300_000)
        status, done = proxy.request(
            "PUT", "/storage/tmp-upload/?filename=tls.bin", content,
            chunk_headers(token, 0, len(content) - 1, len(content)),
        )  # fmt: skip
        assert status == 200, done
        assert done["url"].startswith(f"https://127.0.0.1:{proxy.port}/"), done
        path = done["url"].split(str(proxy.port), 1)[1]
        status, done = proxy.request(
            "POST", path, json.dumps({"md5": hashlib.md5(content).hexdigest()}),
            {"Authorization": f"JWT {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        assert status == 200, done
        file_id = done["file_id"]

        def confirmed() -> bool:
            _, stored = proxy.request(
                "GET", f"/storage/files/{file_id}/", headers={"Authorization": f"JWT {token}"}
            )
            return [r["state"] for r in stored["replicas"]] == ["confirmed"]

        eventually(confirmed, 60, "a replica confirmed over https")
        fetched = subprocess.run(
            ["curl", "-sS", "-L", "--fail", "--cacert", str(cert), "-o", str(tmp_path / "out"),
             "-w", "%{url_effective}", "-H", f"Authorization: JWT {token}",
             f"{proxy.url}/storage/download/{file_id}/"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout.startswith(f"https://127.0.0.1:{node_port}/download/")
        assert (tmp_path / "out").read_bytes() == content
    finally:
        proxy.stop()
        if node.poll() is None:
            os.kill(node.pid, signal.SIGTERM)
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
