"""Secrets and defaults: no guessable cluster secret.

Real processes where the behaviour is a process's: a proxy and a node refusing to start.
"""

from __future__ import annotations

import doctest
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

import common.secretcheck
from common.secretcheck import PUBLISHED
from tests.proc import BIN, free_port

SHORT = "only-31-characters-long-secret!"
OLD_COMPOSE_DEFAULT = "change-me-this-default-cluster-secret-is-public"
assert len(SHORT) == 31 and OLD_COMPOSE_DEFAULT in PUBLISHED
HOW = "make one with: openssl rand -base64 48"


@pytest.mark.parametrize("module", [common.secretcheck], ids=lambda m: m.__name__)
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
