"""The ``pyarchive`` command line (issue 13), run as its console script against a real proxy
process: settings and the token (mode 0600), signup, login, whoami, usage, ls, info,
versions, rollback, rm, and each failure as one line with its documented exit code."""

from __future__ import annotations

import doctest
import json
import os
import select
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from client import PyArchiveClient
from client.cli import app, download, failures, files, settings, syncplan, upload, walk, watch
from common.tokens import TokenClaims, issue_token
from tests.proc import BIN, TOKEN_KEY, ProxyProcess, free_port

PASSWORD = "Correct-Horse-9x"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Device:
    """One person's configuration directory: the CLI as they run it."""

    config: Path

    def __call__(
        self,
        *args: str,
        stdin: str = "",
        timeout: float = 60,
        preexec: Callable[[], None] | None = None,
    ) -> Run:
        """Run ``pyarchive`` with this configuration (``preexec`` first, in the child)."""
        done = subprocess.run(
            [str(BIN / "pyarchive"), "--config-dir", str(self.config), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
        )  # fmt: skip
        return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    root = tmp_path_factory.mktemp("cli")
    running = ProxyProcess(root / "proxy", f"sqlite:///{root / 'meta.db'}").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def device(tmp_path: Path, proxy: ProxyProcess) -> Device:
    me = Device(tmp_path / "config")
    assert me("config", "set", "server", proxy.url).code == 0
    return me


def signed_up(device: Device, name: str) -> Device:
    done = device("signup", name, "--password-stdin", stdin=PASSWORD + "\n")
    assert done.code == 0, done.err
    return device


def test_the_server_and_a_private_token_are_kept_in_the_config_directory(
    device: Device,
) -> None:
    done = device("signup", "cleo", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.code == 0 and "logged in as cleo" in done.out, done.err
    token = device.config / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(device.config.stat().st_mode) & 0o077 == 0
    assert json.loads((device.config / "settings.json").read_text())["server"].startswith("http")
    shown = device("config", "show", "--json").json()
    assert shown == {"server": shown["server"], "logged_in": True}  # never the token
    who = device("whoami", "--json").json()
    assert isinstance(who, dict) and who["username"] == "cleo" and who["used"] == 0
    assert device("logout").out.strip() == "Logged out."
    assert not token.exists()
    refused = device("whoami")
    assert refused.code == 4 and refused.err.strip() == (
        "pyarchive: login needed: run `pyarchive login USER`"
    )
    assert device("login", "cleo", "--password-stdin", stdin=PASSWORD + "\n").code == 0
    assert device("whoami").out.strip().startswith("cleo on http://127.0.0.1:")


def test_a_wrong_password_and_a_bad_server_setting_are_one_line_each(device: Device) -> None:
    signed_up(device, "dora")
    wrong = device("login", "dora", "--password-stdin", stdin="not-the-password\n")
    assert wrong.code == 4 and wrong.err.startswith("pyarchive: login refused")
    assert len(wrong.err.strip().splitlines()) == 1
    bad = device("config", "set", "server", "ftp://example")
    assert bad.code == 2 and "server must look like" in bad.err


def test_the_server_down_and_an_expired_token_are_told_apart(
    device: Device, tmp_path: Path
) -> None:
    signed_up(device, "ezra")
    genuine = jwt.decode(device.config.joinpath("token").read_text().strip(), TOKEN_KEY, ["HS256"])
    claims = TokenClaims(int(genuine["sub"]), "ezra", False, int(genuine["ver"]))
    day = 86400.0
    stale = issue_token(TOKEN_KEY, claims, now=time.time() - 2 * day, lifetime=day)
    for token in (stale, "not.a.token"):
        device.config.joinpath("token").write_text(token + "\n")
        refused = device("usage")
        assert refused.code == 4, refused.err
        assert refused.err == "pyarchive: login needed: run `pyarchive login USER`\n"
    down = Device(tmp_path / "down")
    down("config", "set", "server", f"http://127.0.0.1:{free_port()}")
    down.config.joinpath("token").write_text("x\n")
    unreachable = down("ls")
    assert unreachable.code == 1
    assert unreachable.err.startswith("pyarchive: server unreachable at http://127.0.0.1:")
    assert len(unreachable.err.strip().splitlines()) == 1
    assert down("--verbose", "ls").err.count("\n") > 3  # the details, when asked for


def test_files_listed_shown_rolled_back_and_removed(
    device: Device, proxy: ProxyProcess, tmp_path: Path
) -> None:
    signed_up(device, "finn")
    token = device.config.joinpath("token").read_text().strip()
    first, second = tmp_path / "notes.txt", tmp_path / "notes2.txt"
    first.write_bytes(b"first words\n")
    second.write_bytes(b"second, longer words\n")
    with PyArchiveClient(proxy.url, token) as client:
        made = client.upload(first, filename="notes.txt")
        client.upload(second, filename="notes.txt", parent=made["file_id"])
    file_id = str(made["file_id"])

    listed = device("ls", "--json")
    assert listed.code == 0, listed.err
    [line] = listed.out.splitlines()
    assert json.loads(line)["id"] == file_id
    assert "notes.txt" in device("ls").out

    shown = device("info", file_id, "--json").json()
    assert isinstance(shown, dict) and shown["size"] == len(second.read_bytes())
    assert "sha256" in device("info", file_id).out
    numbers = [v["number"] for v in device("versions", file_id, "--json").json()]
    assert numbers == [2, 1]

    back = device("rollback", file_id, "1", "--json").json()
    assert isinstance(back, dict) and back["size"] == len(first.read_bytes())
    assert device("usage", "--json").json() == {"used": back["size"] * 2 + 21, "quota": None}

    missing = device("info", "0" * 32)
    assert missing.code == 3 and "HTTP 404" in missing.err
    assert device("rm", file_id).code == 0
    assert device("ls").out == ""
    assert device("rollback", file_id, "0").code == 2  # a version is 1 or more


def test_every_command_has_help_with_an_example() -> None:
    device = Device(Path(os.devnull))
    listed = device("--help").out
    commands = [line.split()[0] for line in listed.split("Commands:")[1].splitlines() if line]
    assert {"login", "ls", "info", "rollback", "usage"} <= set(commands)
    for name in commands:
        shown = device(name, "--help")
        assert shown.code == 0 and "Example:" in shown.out, name


@pytest.mark.parametrize(
    "module",
    [settings, failures, app, files, walk, upload, download, watch, syncplan],
    ids=lambda m: m.__name__,
)
def test_the_examples_in_the_docstrings_hold(module: object) -> None:
    results = doctest.testmod(module)  # type: ignore[arg-type]
    assert results.attempted > 0 and results.failed == 0


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line the process prints, within ``timeout`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"nothing printed within {timeout} s"
    return process.stdout.readline()


def test_watch_prints_changes_live_and_after_a_restart_what_it_missed(
    device: Device, proxy: ProxyProcess, tmp_path: Path
) -> None:
    signed_up(device, "gwen")
    token = device.config.joinpath("token").read_text().strip()
    source = tmp_path / "a.txt"
    source.write_bytes(b"watched")
    command = [str(BIN / "pyarchive"), "--config-dir", str(device.config), "watch", "--json"]
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # connected: it starts from the newest event
        with PyArchiveClient(proxy.url, token) as client:
            started = time.monotonic()
            made = client.upload(source, filename="a.txt", remote_path="notes/a.txt")
            seen = json.loads(read_line(watcher, 2.0))
            assert time.monotonic() - started < 2.0
            assert seen["type"] == "file.created"  # its upload.complete is not told twice
            assert (seen["data"]["file_id"], seen["data"]["path"]) == (
                made["file_id"],
                "notes/a.txt",
            )
        watcher.kill()
        watcher.wait()
        with PyArchiveClient(proxy.url, token) as client:  # while nobody watches
            client.delete_file(str(made["file_id"]))
        watcher = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        types = []
        while "file.deleted" not in types:
            types.append(json.loads(read_line(watcher, 5.0))["type"])
        assert types[-1] == "file.deleted"
    finally:
        watcher.kill()
        watcher.wait()
