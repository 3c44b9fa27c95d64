"""Secrets and defaults: no guessable cluster secret, private files, no credential in a log.

Real processes where the behaviour is a process's: a proxy and a node refusing to start, the
modes of what a running cluster wrote, and the access lines in their logs.
"""

from __future__ import annotations

import doctest
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import common.accesslog
import common.s3
import common.secretcheck
import proxy.api.inputs
from common.secretcheck import PUBLISHED
from tests.clusterkit import Cluster, eventually
from tests.proc import BIN, ProxyProcess, free_port

SHORT = "only-31-characters-long-secret!"
OLD_COMPOSE_DEFAULT = "change-me-this-default-cluster-secret-is-public"
assert len(SHORT) == 31 and OLD_COMPOSE_DEFAULT in PUBLISHED
HOW = "make one with: openssl rand -base64 48"


@pytest.mark.parametrize(
    "module",
    [common.secretcheck, common.accesslog, common.s3, proxy.api.inputs],
    ids=lambda m: m.__name__,
)
def test_the_examples_in_the_docstrings_hold(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- a cluster secret that is short or published is refused at start-up


def _env(**variables: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYARCHIVE_")}
    return {**clean, **variables}


REFUSED = [
    (SHORT, f"cluster_secret is too short (31 characters, at least 32 are needed): {HOW}"),
    (OLD_COMPOSE_DEFAULT, f"cluster_secret is a published example value, known to anyone: {HOW}"),
]


@pytest.mark.parametrize(("secret", "line"), REFUSED, ids=["short", "published"])
def test_a_node_refuses_a_short_or_published_cluster_secret_with_one_line(
    tmp_path: Path, secret: str, line: str
) -> None:
    done = subprocess.run(
        [str(BIN / "pyarchive-node"), "--name", "n1", "--data-dir", str(tmp_path / "node"),
         "--listen", f"tcp:{free_port()}:interface=127.0.0.1", "--rsync-port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=_env(PYARCHIVE_CLUSTER_SECRET=secret),
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"Error: {line}"]
    assert secret not in done.stdout + done.stderr
    assert not (tmp_path / "node" / "rsyncd.secrets").exists()


@pytest.mark.parametrize(("secret", "line"), REFUSED, ids=["short", "published"])
def test_the_proxy_refuses_a_short_or_published_cluster_secret_with_one_line(
    tmp_path: Path, secret: str, line: str
) -> None:
    data = tmp_path / "proxy"
    done = subprocess.run(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(data),
         "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
         "--database", f"sqlite:///{tmp_path}/p.sqlite3"],
        capture_output=True, text=True, timeout=60, env=_env(PYARCHIVE_CLUSTER_SECRET=secret),
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"Error: {line}"]
    assert secret not in done.stdout + done.stderr
    assert not (tmp_path / "p.sqlite3").exists()  # refused before the database is opened


def test_the_proxy_refuses_a_short_cluster_secret_kept_in_its_data_directory(
    tmp_path: Path,
) -> None:
    data = tmp_path / "proxy"
    data.mkdir()
    (data / "cluster_secret").write_text("short\n")
    done = subprocess.run(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(data),
         "--listen", f"tcp:{free_port()}:interface=127.0.0.1"],
        capture_output=True, text=True, timeout=60, env=_env(),
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"Error: {data / 'cluster_secret'} is too short (5 characters, at least 32 are "
        f"needed): {HOW}"
    ]


# -- a running cluster: private files, and no token or password in an access log


def _shared_bits(root: Path) -> list[str]:
    """Every file or folder under ``root`` (and itself) that its group or others may use."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode) or stat.S_ISSOCK(mode):
            continue
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    # SQLite in the data directory (the default), one node: with two replicas wanted, the
    # proxy keeps its own stored copy as well as the node's.
    built = Cluster(tmp_path, f"sqlite:///{tmp_path}/proxy/pyarchive.sqlite3", 1)
    try:
        yield built.start()
    finally:
        built.stop()


def test_what_the_proxy_and_a_node_write_is_private_to_their_user(cluster: Cluster) -> None:
    file_id = cluster.upload(os.urandom(300_000))["file_id"]
    eventually(lambda: cluster.confirmed(file_id, 1), what="a confirmed replica")
    proxy_dir, node_dir = cluster.proxy.data_dir, cluster.nodes[0].data_dir
    written = {path.name for path in proxy_dir.rglob("*")}
    assert {"pyarchive.sqlite3", "secret_key"} <= written  # (the cluster secret is given)
    assert list((proxy_dir / "blobs").rglob("*.*")), "the proxy's own stored copy"
    replicas = [p for p in (node_dir / "replicas").rglob("*") if p.is_file()]
    assert len(replicas) == 1
    assert _shared_bits(proxy_dir) == []
    assert _shared_bits(node_dir) == []


def test_a_nodes_access_log_holds_no_download_token(cluster: Cluster) -> None:
    content = os.urandom(50_000)
    file_id = cluster.upload(content)["file_id"]
    eventually(lambda: cluster.confirmed(file_id, 1), what="a confirmed replica")
    status, body, final_url = cluster.download(file_id)
    assert (status, body) == (200, content)
    assert "/download/" in final_url
    token = final_url.rsplit("/download/", 1)[1]
    assert len(token) > 40
    # The same token in a query string, as a mistaken client might send it.
    node = cluster.nodes[0]
    assert node.request("GET", f"/download/{token}?token={token}").status == 200

    def logged() -> str | None:
        text = node.log_path.read_text()
        return text if text.count("GET /download/") >= 2 else None

    node_log = eventually(logged, what="the node's access lines")
    assert token not in node_log
    assert "GET /download/[redacted:" in node_log
    assert "?token=[redacted:" in node_log
    assert token not in next(cluster.root.glob("proxy-*.log")).read_text()


def test_a_password_in_a_url_is_refused_and_not_written_to_the_proxys_log(
    tmp_path: Path,
) -> None:
    running = ProxyProcess(tmp_path / "proxy", f"sqlite:///{tmp_path}/p.sqlite3").start()
    try:
        password = "Query-Pass-" + os.urandom(6).hex()
        refused, answer = running.request(
            "POST", f"/api-token-auth/?username=tester&password={password}"
        )
        running.request("GET", f"/health?password={password}")
    finally:
        running.stop()
    assert refused == 400 and "not the URL" in answer["detail"], answer
    proxy_log = next(tmp_path.glob("proxy-*.log")).read_text()
    assert password not in proxy_log
    assert "POST /api-token-auth/?username=tester&password=[redacted:" in proxy_log
    assert "GET /health?password=[redacted:" in proxy_log


# -- passwords in a URL are refused on login and register


@pytest.fixture(scope="module")
def proxy_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    root = tmp_path_factory.mktemp("proxy")
    running = ProxyProcess(root / "data", f"sqlite:///{root}/p.sqlite3").start()
    try:
        yield running
    finally:
        running.stop()


JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/api-token-auth/?password=Url-Pass-1234", '{"username": "ann"}', JSON),
        ("/api-token-auth/?password=Url-Pass-1234", "username=ann", FORM),
        ("/api/auth/register?password=Url-Pass-1234", '{"username": "ann"}', JSON),
        ("/api/auth/register?username=ann", '{"password": "Url-Pass-1234"}', JSON),
    ],
    ids=["login-json", "login-form", "register", "register-username"],
)
def test_credentials_in_the_url_are_refused_before_they_are_used(
    proxy_process: ProxyProcess, path: str, body: str, headers: dict[str, str]
) -> None:
    status, answer = proxy_process.request("POST", path, body, headers)
    assert status == 400, answer
    assert answer["detail"] == "Send the username and password in the body, not the URL"
    assert answer["fields"] in (["password"], ["username"])
    # Nothing was registered or logged in with: ann has no account.
    whole = json.dumps({"username": "ann", "password": "Url-Pass-1234"})
    assert proxy_process.request("POST", "/api-token-auth/", whole, JSON)[0] == 400


def test_a_login_with_the_password_in_the_body_still_works(proxy_process: ProxyProcess) -> None:
    credentials = json.dumps({"username": "bob", "password": "Body-Pass-5678"})
    assert proxy_process.request("POST", "/api/auth/register", credentials, JSON)[0] == 201
    status, answer = proxy_process.request("POST", "/api-token-auth/", credentials, JSON)
    assert status == 200 and answer["token"], answer
    form = "username=bob&password=Body-Pass-5678"
    assert proxy_process.request("POST", "/api-token-auth/", form, FORM)[0] == 200


def test_the_login_and_register_pages_refuse_a_password_in_the_url(
    proxy_process: ProxyProcess,
) -> None:
    for page in ("/login/", "/register/"):
        status, _ = proxy_process.request("POST", f"{page}?password=Url-Pass-1234", "", FORM)
        assert status == 400, page


# -- the S3 sealing key is apart from the token key, and each rotates alone

S3_SECRET = "rotation-s3-secret-Ab12Cd34Ef56"
BOSS = ("boss", "Rotation-Pass-2024")


def _cli(data: Path, database: str, *arguments: str, **variables: str) -> str:
    done = subprocess.run(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(data), "--database", database,
         *arguments],
        capture_output=True, text=True, timeout=120,
        env=_env(PYARCHIVE_S3_SECRET_KEY=S3_SECRET, **variables),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _add_connection(data: Path, database: str, **variables: str) -> None:
    _cli(
        data, database, "s3", "add", "main", "--region", "us-east-1", "--bucket", "archive",
        "--access-key", "AKIAROTATION", "--endpoint-url", "http://127.0.0.1:9", **variables,
    )  # fmt: skip


def _secret_shown(data: Path, database: str, **variables: str) -> str:
    """What ``s3 list`` says of main's secret: its hint, or UNREADABLE."""
    [line] = _cli(data, database, "s3", "list", **variables).splitlines()
    return line.split("\t")[6]


def test_secrets_sealed_with_the_token_key_by_older_releases_move_to_their_own_key(
    tmp_path: Path,
) -> None:
    data, database = tmp_path / "proxy", f"sqlite:///{tmp_path}/p.sqlite3"
    kept = {"PYARCHIVE_SECRET_KEY": ""}
    # An older release, its token key kept in DATA_DIR/secret_key and no encryption_key:
    # it sealed S3 secrets with the token key.
    data.mkdir(mode=0o700)
    legacy = "the-token-key-of-an-older-release-0123456789"
    (data / "secret_key").write_text(legacy + "\n")
    _add_connection(data, database, PYARCHIVE_ENCRYPTION_KEY=legacy)
    assert not (data / "encryption_key").exists()
    # After the upgrade the secret still opens, and the first start re-seals it under a key
    # of its own, so that another token key no longer matters.
    assert _secret_shown(data, database, **kept) == f"secret …{S3_SECRET[-4:]}"
    ProxyProcess(data, database, env=kept).start().stop()
    assert stat.S_IMODE((data / "encryption_key").stat().st_mode) == 0o600
    (data / "secret_key").write_text("some-other-token-key-of-enough-length-987654\n")
    assert _secret_shown(data, database, **kept) == f"secret …{S3_SECRET[-4:]}"


def test_a_configured_token_key_still_seals_where_no_encryption_key_is_set(
    tmp_path: Path,
) -> None:
    """Proxies sharing a database and a configured secret_key keep sharing the sealing key."""
    data, database = tmp_path / "proxy", f"sqlite:///{tmp_path}/p.sqlite3"
    shared = {"PYARCHIVE_SECRET_KEY": "a-token-key-every-proxy-is-given-0123456789"}
    _add_connection(data, database, **shared)
    ProxyProcess(data, database, env=shared).start().stop()
    assert not (data / "encryption_key").exists()
    other_data = tmp_path / "another-proxy"
    assert _secret_shown(other_data, database, **shared) == f"secret …{S3_SECRET[-4:]}"


def _login(running: ProxyProcess) -> str:
    body = json.dumps({"username": BOSS[0], "password": BOSS[1]})
    status, answer = running.request("POST", "/api-token-auth/", body, JSON)
    assert status == 200, answer
    return str(answer["token"])


def _connection_as_seen_by(running: ProxyProcess, token: str) -> tuple[int, object]:
    status, answer = running.request(
        "GET", "/api/s3-connections/main/", headers={"Authorization": f"JWT {token}"}
    )
    return status, answer["secret_unreadable"] if status == 200 else answer


def test_each_key_rotates_alone_and_the_s3_connection_still_opens(tmp_path: Path) -> None:
    data, database = tmp_path / "proxy", f"sqlite:///{tmp_path}/p.sqlite3"
    kept = {"PYARCHIVE_SECRET_KEY": ""}  # both keys kept in the data directory
    _cli(data, database, "create-admin", BOSS[0], PYARCHIVE_ADMIN_PASSWORD=BOSS[1], **kept)
    _add_connection(data, database, **kept)
    running = ProxyProcess(data, database, env=kept).start()
    try:
        before = _login(running)
        assert _connection_as_seen_by(running, before) == (200, False)
    finally:
        running.stop()

    old_key = (data / "encryption_key").read_text()
    said = _cli(data, database, "rotate-secret", "encryption", **kept)
    assert "1 S3 secret keys re-sealed" in said
    assert (data / "encryption_key").read_text() != old_key
    assert _secret_shown(data, database, **kept) == f"secret …{S3_SECRET[-4:]}"
    running.start()
    try:
        assert _connection_as_seen_by(running, before) == (200, False)  # tokens still good
        assert not (data / "encryption_key.old").exists()  # forgotten once re-sealed
    finally:
        running.stop()

    old_token_key = (data / "secret_key").read_text()
    said = _cli(data, database, "rotate-secret", "token", **kept)
    assert "every login token issued before is refused" in said
    assert (data / "secret_key").read_text() != old_token_key
    assert stat.S_IMODE((data / "secret_key").stat().st_mode) == 0o600
    running.start()
    try:
        status, _ = _connection_as_seen_by(running, before)
        assert status == 401  # the old login token is refused
        assert _connection_as_seen_by(running, _login(running)) == (200, False)
    finally:
        running.stop()


def test_a_key_set_in_the_configuration_is_not_rotated_from_the_data_directory(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [str(BIN / "pyarchive-proxy"), "--data-dir", str(tmp_path), "rotate-secret", "token"],
        capture_output=True, text=True, timeout=60,
        env=_env(PYARCHIVE_SECRET_KEY="configured-token-key-0123456789abcdef"),
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "Error: secret_key is set in the configuration (PYARCHIVE_SECRET_KEY or the config "
        "file), not kept in the data directory: change it there"
    ]
