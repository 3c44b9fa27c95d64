"""The node's parts without processes or sockets: the rsync daemon's supervisor driven by
``task.Clock`` and a fake spawner, the generated rsyncd files, configuration, request bodies,
and the replica store on a temporary directory."""

from __future__ import annotations

import doctest
import hashlib
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

import common.digests
import node.api.inputs
import node.api.receiving
import node.config
import node.replicas.deathsig
import node.replicas.rsyncd
import node.replicas.store
from common.config import ConfigError, load
from common.errors import BadRequest, Conflict, NotFound
from common.signing import NodeKeys, replica_key
from node.api.inputs import MAX_BATCH, expected_batch, expected_content
from node.api.receiving import CappedBody
from node.cli import config_sample
from node.config import NodeConfig
from node.replicas.rsyncd import (
    RsyncDaemon,
    RsyncdSettings,
    daemon_argv,
    rsyncd_conf,
    rsyncd_secrets,
    stale_daemon_pid,
    write_private,
)
from node.replicas.store import Expected, Replica, ReplicaStore

ROOT = Path(__file__).resolve().parent.parent
LONG_SECRET = "node-units-cluster-secret-of-enough-length"


# ---------------------------------------------------------------- the supervisor


@dataclass
class FakeProcess:
    protocol: ProcessProtocol
    argv: list[str]
    pid: int
    signals: list[str] = field(default_factory=list)
    ended: bool = False

    def signalProcess(self, name: str) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def closeStdin(self) -> None:
        pass

    def exit(self, code: int | None = 1, signal: int | None = None) -> None:
        """The process ends (``signal`` set: killed by it)."""
        self.ended = True
        reason: Exception = ProcessDone(0) if code == 0 else ProcessTerminated(code, signal=signal)
        self.protocol.processEnded(Failure(reason))


@dataclass
class FakeSpawner:
    processes: list[FakeProcess] = field(default_factory=list)
    fail: bool = False

    def __call__(self, protocol: ProcessProtocol, argv: Sequence[str]) -> Any:
        if self.fail:
            raise OSError("no such program")
        process = FakeProcess(protocol, list(argv), pid=1000 + len(self.processes))
        self.processes.append(process)
        protocol.makeConnection(process)  # type: ignore[arg-type]
        return process

    @property
    def last(self) -> FakeProcess:
        return self.processes[-1]


def supervisor(clock: Clock, spawner: FakeSpawner, **kwargs: Any) -> RsyncDaemon:
    return RsyncDaemon(
        ["rsync", "--daemon"], spawn=spawner, clock=clock, restart_delay=1.0,
        max_restart_delay=30.0, stable_after=10.0, stop_timeout=5.0, **kwargs,
    )  # fmt: skip


def test_the_daemon_is_started_with_its_argument_list_and_counts_as_ready() -> None:
    clock, spawner = Clock(), FakeSpawner()
    daemon = supervisor(clock, spawner)
    assert not daemon.ready
    daemon.start()
    assert [p.argv for p in spawner.processes] == [["rsync", "--daemon"]]
    assert daemon.ready and daemon.pid == 1000


def test_a_daemon_that_exits_is_restarted_after_the_delay_and_is_not_ready_meanwhile() -> None:
    clock, spawner = Clock(), FakeSpawner()
    daemon = supervisor(clock, spawner)
    daemon.start()
    clock.advance(60)
    spawner.last.exit(signal=9)
    assert not daemon.ready and daemon.pid is None
    clock.advance(0.99)
    assert len(spawner.processes) == 1
    clock.advance(0.01)
    assert len(spawner.processes) == 2 and daemon.ready


def test_quick_failures_back_off_doubling_up_to_the_maximum() -> None:
    clock, spawner = Clock(), FakeSpawner()
    daemon = supervisor(clock, spawner)
    daemon.start()
    waits = []
    for _ in range(8):
        spawner.last.exit(code=10)  # e.g. the port is taken
        started = len(spawner.processes)
        waited = 0.0
        while len(spawner.processes) == started:
            clock.advance(0.5)
            waited += 0.5
        waits.append(waited)
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]


def test_the_backoff_starts_over_once_a_daemon_ran_a_while() -> None:
    clock, spawner = Clock(), FakeSpawner()
    daemon = supervisor(clock, spawner)
    daemon.start()
    for delay in (1, 2, 4):
        spawner.last.exit()
        clock.advance(delay)
    clock.advance(10)  # this one has been serving for 10 s
    spawner.last.exit()
    clock.advance(1)
    assert len(spawner.processes) == 5


@dataclass
class Probes:
    """A readiness probe whose answers the test gives."""

    answers: list[defer.Deferred[None]] = field(default_factory=list)

    def __call__(self) -> defer.Deferred[None]:
        self.answers.append(defer.Deferred())
        return self.answers[-1]


def test_a_daemon_is_ready_only_once_the_probe_connects() -> None:
    clock, spawner, probes = Clock(), FakeSpawner(), Probes()
    daemon = supervisor(clock, spawner, probe=probes)
    daemon.start()
    assert not daemon.ready and len(probes.answers) == 1
    probes.answers[0].errback(ConnectionRefusedError())
    clock.advance(0.1)
    assert len(probes.answers) == 2 and not daemon.ready
    probes.answers[1].callback(None)
    assert daemon.ready


def test_a_probe_answer_for_a_daemon_that_already_exited_is_ignored() -> None:
    clock, spawner, probes = Clock(), FakeSpawner(), Probes()
    daemon = supervisor(clock, spawner, probe=probes)
    daemon.start()
    spawner.last.exit()
    probes.answers[0].callback(None)
    assert not daemon.ready


def test_stop_sends_sigterm_then_sigkill_and_fires_when_the_daemon_exits() -> None:
    clock, spawner = Clock(), FakeSpawner()
    daemon = supervisor(clock, spawner)
    daemon.start()
    stopped = daemon.stop()
    assert spawner.last.signals == ["TERM"] and not stopped.called
    clock.advance(4.9)
    assert spawner.last.signals == ["TERM"]
    clock.advance(0.1)
    assert spawner.last.signals == ["TERM", "KILL"]
    spawner.last.exit(signal=9)
    assert stopped.called
    clock.advance(60)
    assert len(spawner.processes) == 1  # not restarted


def test_a_daemon_that_stops_on_sigterm_gets_no_sigkill() -> None:
    clock, spawner = Clock(), FakeSpawner()
    daemon = supervisor(clock, spawner)
    daemon.start()
    first, second = daemon.stop(), daemon.stop()
    spawner.last.exit(code=0)
    clock.advance(10)
    assert spawner.last.signals == ["TERM"]
    assert first.called and second.called
    assert clock.getDelayedCalls() == []


def test_stop_while_waiting_to_restart_cancels_the_restart() -> None:
    clock, spawner = Clock(), FakeSpawner()
    daemon = supervisor(clock, spawner)
    daemon.start()
    spawner.last.exit()
    assert daemon.stop().called
    clock.advance(60)
    assert len(spawner.processes) == 1


def test_a_spawn_that_fails_is_retried_with_backoff() -> None:
    clock, spawner = Clock(), FakeSpawner(fail=True)
    daemon = supervisor(clock, spawner)
    daemon.start()
    assert not daemon.ready
    clock.advance(1)
    clock.advance(2)
    spawner.fail = False
    clock.advance(4)
    assert daemon.ready and len(spawner.processes) == 1


def test_the_daemons_pid_is_recorded_while_it_runs(tmp_path: Path) -> None:
    clock, spawner = Clock(), FakeSpawner()
    pid_file = tmp_path / "rsyncd.pid"
    daemon = supervisor(clock, spawner, pid_file=pid_file)
    daemon.start()
    assert pid_file.read_text() == "1000\n"
    spawner.last.exit()
    assert not pid_file.exists()


def test_a_pid_file_naming_no_rsync_daemon_of_ours_is_not_stale(tmp_path: Path) -> None:
    pid_file, conf = tmp_path / "rsyncd.pid", tmp_path / "rsyncd.conf"
    assert stale_daemon_pid(pid_file, conf) is None
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but not an rsync daemon
    assert stale_daemon_pid(pid_file, conf) is None
    pid_file.write_text("garbage")
    assert stale_daemon_pid(pid_file, conf) is None


# ---------------------------------------------------------------- generated rsyncd files


def settings(**changes: Any) -> RsyncdSettings:
    base = RsyncdSettings(
        address="127.0.0.1",
        incoming=Path("/srv/node/incoming"),
        secrets_file=Path("/srv/node/rsyncd.secrets"),
        lock_file=Path("/srv/node/rsyncd.lock"),
        max_connections=16,
    )
    return RsyncdSettings(**{**base.__dict__, **changes})


def conf_values(text: str) -> dict[str, str]:
    pairs = (line.strip().split(" = ", 1) for line in text.splitlines() if " = " in line)
    return dict(pairs)  # type: ignore[arg-type]


def test_rsyncd_conf_has_one_write_only_authenticated_module_on_the_address() -> None:
    text = rsyncd_conf(settings(address="10.0.0.5"))
    assert re.search(r"^\[incoming\]$", text, re.MULTILINE)
    assert text.count("[") == 1
    assert conf_values(text) == {
        "address": "10.0.0.5",
        "log file": "/dev/stderr",
        "path": "/srv/node/incoming",
        "comment": "replicas pushed by the PyArchive proxy",
        "read only": "false",
        "write only": "true",
        "list": "false",
        "use chroot": "false",
        "munge symlinks": "true",
        "auth users": "pyarchive",
        "secrets file": "/srv/node/rsyncd.secrets",
        "strict modes": "true",
        "max connections": "16",
        "lock file": "/srv/node/rsyncd.lock",
        "timeout": "600",
        "refuse options": "delete",
    }


def test_rsyncd_conf_names_uid_and_gid_only_when_given() -> None:
    values = conf_values(rsyncd_conf(settings(uid=0, gid=0)))
    assert (values["uid"], values["gid"]) == ("0", "0")


@pytest.mark.parametrize(
    "changes",
    [{"incoming": Path("/srv/a\nb")}, {"address": ""}, {"lock_file": Path("/srv/%HOME%")}],
)
def test_rsyncd_conf_refuses_values_that_would_change_its_meaning(changes: Any) -> None:
    with pytest.raises(ValueError, match=r"rsyncd\.conf"):
        rsyncd_conf(settings(**changes))


def test_the_secrets_file_holds_the_derived_password_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "rsyncd.secrets"
    write_private(path, "old\n", 0o644)
    password = NodeKeys.for_node("cluster", "n1").rsync_password
    write_private(path, rsyncd_secrets(password))
    assert path.read_text() == f"pyarchive:{password}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_daemon_runs_in_the_foreground_with_the_generated_config() -> None:
    assert daemon_argv("rsync", 8873, Path("/srv/node/rsyncd.conf")) == [
        "rsync", "--daemon", "--no-detach", "--port", "8873",
        "--config", "/srv/node/rsyncd.conf",
    ]  # fmt: skip


# ---------------------------------------------------------------- configuration


def test_the_examples_in_the_node_docstrings_hold() -> None:
    for module in (
        node.config, node.replicas.rsyncd, node.replicas.deathsig, node.api.inputs,
        node.api.receiving,
    ):  # fmt: skip
        results = doctest.testmod(module)
        assert results.attempted >= 1 and results.failed == 0, module.__name__


def test_the_node_sample_config_file_documents_every_setting_with_its_default() -> None:
    stale = "etc/node.conf-sample is stale: run pyarchive-node print-config-sample > it"
    assert (ROOT / "etc" / "node.conf-sample").read_text() == config_sample(), stale


def test_the_node_sample_with_every_line_uncommented_loads_as_the_defaults(
    tmp_path: Path,
) -> None:
    lines = [
        line[2:] if re.match(r"# \w+ =", line) else line for line in config_sample().splitlines()
    ]
    path = tmp_path / "node.conf"
    path.write_text("\n".join(lines))
    assert load(NodeConfig, "node", config_file=str(path), environ={}) == NodeConfig()


def test_node_settings_come_from_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "node.conf"
    path.write_text("[node]\nname = n1\nzone = a\nrsync_restart_delay = 2s\n")
    config = load(
        NodeConfig, "node", config_file=str(path),
        environ={"PYARCHIVE_ZONE": "b", "PYARCHIVE_CLUSTER_SECRET": LONG_SECRET},
        overrides={"name": "n2", "rsync_port": 9000, "zone": None},
    )  # fmt: skip
    assert (config.name, config.zone, config.rsync_port) == ("n2", "b", 9000)
    assert (config.cluster_secret, config.rsync_restart_delay) == (LONG_SECRET, 2.0)
    config.check()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cluster_secret": ""}, "node_key is not set"),
        ({"node_key": "ab" * 32}, "node_key or cluster_secret, not both"),
        ({"cluster_secret": "", "node_key": "not hex"}, "node_key must be the 64 hex digits"),
        ({"name": ""}, "name must be set"),
        ({"name": "../x"}, "name must be set"),
        ({"rsync_port": 0}, "rsync_port"),
    ],
)
def test_a_node_config_that_cannot_run_names_the_setting(
    changes: dict[str, Any], message: str
) -> None:
    config = NodeConfig(**{"name": "n1", "cluster_secret": LONG_SECRET, **changes})
    with pytest.raises(ConfigError, match=message):
        config.check()


def test_rsync_binds_to_its_own_address_when_one_is_set() -> None:
    config = NodeConfig(listen="tcp:8101:interface=10.0.0.5", rsync_address="10.0.0.6")
    assert config.rsync_bind_address() == "10.0.0.6"


# ---------------------------------------------------------------- request bodies


SHA = "ab" * 32


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff",
        b"[1]",
        b'{"size": 1, "sha256": "' + SHA.encode() + b'"}',  # md5 missing
        b'{"size": true, "md5": "' + b"0" * 32 + b'", "sha256": "' + SHA.encode() + b'"}',
        b'{"size": 1, "md5": "' + b"0" * 31 + b'", "sha256": "' + SHA.encode() + b'"}',
        b'{"size": 1, "md5": "' + b"0" * 32 + b'", "sha256": "' + SHA.upper().encode() + b'"}',
        b'{"size": 1, "md5": "' + b"0" * 32 + b'", "sha256": "' + SHA.encode() + b'", "x": 1}',
    ],
)
def test_a_confirm_body_must_be_exactly_size_md5_and_sha256(body: bytes) -> None:
    with pytest.raises(BadRequest):
        expected_content(body, with_md5=True)


def batch_entry(key: str = "5-" + SHA, **changes: Any) -> dict[str, Any]:
    return {"key": key, "size": 1, "md5": "0" * 32, "sha256": key.rpartition("-")[2], **changes}


@pytest.mark.parametrize(
    "data",
    [
        [1],
        {"replicas": []},
        {"replicas": [batch_entry()], "more": 1},
        {"replicas": {"5-x": batch_entry()}},
        {"replicas": [batch_entry()] * 2},  # a key named twice
        {"replicas": [batch_entry(f"{n}-{SHA}") for n in range(1, MAX_BATCH + 2)]},
        {"replicas": [batch_entry(key="../etc")]},
        {"replicas": [batch_entry(sha256="0" * 64)]},  # not the key's sha256
        {"replicas": [batch_entry(md5="x")]},
        {"replicas": [{"key": "5-" + SHA, "size": 1, "sha256": SHA}]},  # md5 missing
        {"replicas": ["5-" + SHA]},
    ],
)
def test_a_batch_confirm_body_is_refused_whole_when_any_entry_is_malformed(data: Any) -> None:
    with pytest.raises(BadRequest):
        expected_batch(json.dumps(data).encode())


def test_a_batch_confirm_of_the_most_replicas_allowed_fits_its_body_limit() -> None:
    entries = [batch_entry(f"{10**12 + n}-{SHA}", size=2**40) for n in range(MAX_BATCH)]
    body = json.dumps({"replicas": entries}).encode()
    assert len(body) <= node.api.receiving.CONFIRM_BATCH_LIMIT
    assert len(expected_batch(body)) == MAX_BATCH


def test_a_capped_body_keeps_small_bodies_and_only_counts_large_ones() -> None:
    small = CappedBody(10)
    small.write(b"12345")
    small.write(b"67890")
    assert not small.overflowed and small.sha256() == hashlib.sha256(b"1234567890").hexdigest()
    small.write(b"!")
    small.seek(0)
    assert small.overflowed and small.read() == b"1234567890"


def test_a_capped_body_past_64_kib_is_spooled_to_disk_not_memory() -> None:
    body = CappedBody(1024 * 1024)
    body.write(b"x" * 64 * 1024)
    assert not body.spooled()
    body.write(b"y")
    assert body.spooled()
    body.seek(0)
    assert body.read() == b"x" * 64 * 1024 + b"y"
    body.close()


# ---------------------------------------------------------------- the replica store


@pytest.fixture
def store(tmp_path: Path) -> ReplicaStore:
    made = ReplicaStore(tmp_path / "data")
    made.create()
    return made


def received(store: ReplicaStore, content: bytes, blob_id: int = 5) -> tuple[str, Expected]:
    sha256 = hashlib.sha256(content).hexdigest()
    key = replica_key(blob_id, sha256)
    (store.incoming / key).write_bytes(content)
    return key, Expected(len(content), sha256, hashlib.md5(content).hexdigest())


def test_a_confirmed_replica_lands_in_its_shard_and_is_counted(store: ReplicaStore) -> None:
    key, expected = received(store, b"hello")
    assert store.confirm(key, expected).size == 5
    assert (store.replicas / key[-2:] / key).read_bytes() == b"hello"
    assert [r.key for r in store.list()] == [key]
    assert store.usage().files == 1


def test_a_second_push_of_a_confirmed_replica_is_dropped_and_confirm_answers_again(
    store: ReplicaStore,
) -> None:
    key, expected = received(store, b"hello")
    store.confirm(key, expected)
    (store.incoming / key).write_bytes(b"hello")
    assert store.confirm(key, expected).size == 5
    assert not (store.incoming / key).exists()
    with pytest.raises(Conflict):
        store.confirm(key, Expected(6, expected.sha256, expected.md5))


MULTI_BLOCK = common.digests.BLOCK_SIZE * 2 + 1  # hashed on two threads, block by block


def test_a_multi_block_replica_is_confirmed_and_fsynced_before_it_moves(
    store: ReplicaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = os.urandom(MULTI_BLOCK)
    key, expected = received(store, content)
    synced: list[tuple[str, bool]] = []
    real_fsync = node.replicas.store._fsync_file

    def fsync(path: Path) -> None:
        real_fsync(path)
        synced.append((path.name, path.exists()))

    monkeypatch.setattr(node.replicas.store, "_fsync_file", fsync)
    assert store.confirm(key, expected).size == MULTI_BLOCK
    assert synced == [(key, True)]
    assert (store.replicas / key[-2:] / key).read_bytes() == content


@pytest.mark.parametrize("damage", ["md5", "last byte"])
def test_a_multi_block_replica_that_does_not_match_is_deleted_with_409(
    store: ReplicaStore, damage: str
) -> None:
    content = os.urandom(MULTI_BLOCK)
    key, expected = received(store, content)
    if damage == "md5":
        expected = Expected(expected.size, expected.sha256, hashlib.md5(b"other").hexdigest())
    else:
        (store.incoming / key).write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    with pytest.raises(Conflict, match="md5" if damage == "md5" else "sha256"):
        store.confirm(key, expected)
    assert not (store.incoming / key).exists()
    assert store.list() == []


def test_a_small_replica_is_fsynced_only_once_it_matched(
    store: ReplicaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    monkeypatch.setattr(node.replicas.store, "_fsync_file", lambda path: synced.append(path.name))
    good, expected = received(store, b"hello")
    bad, wrong = received(store, b"world", blob_id=6)
    store.confirm(good, expected)
    with pytest.raises(Conflict, match="md5"):
        store.confirm(bad, Expected(wrong.size, wrong.sha256, expected.md5))
    assert synced == [good]


def test_an_fsync_that_fails_leaves_the_replica_unconfirmed(
    store: ReplicaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, expected = received(store, os.urandom(MULTI_BLOCK))

    def failing(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(node.replicas.store, "_fsync_file", failing)
    with pytest.raises(OSError, match="Input/output"):
        store.confirm(key, expected)
    assert store.list() == []


def test_a_multi_block_replica_changed_on_disk_fails_verify_and_is_quarantined(
    store: ReplicaStore,
) -> None:
    content = os.urandom(MULTI_BLOCK)
    key, expected = received(store, content)
    store.confirm(key, expected)
    (store.replicas / key[-2:] / key).write_bytes(bytes(MULTI_BLOCK))
    with pytest.raises(Conflict, match="quarantined"):
        store.verify(key, expected)
    assert (store.quarantine / key).exists()


def test_a_directory_or_link_received_under_a_key_is_removed_with_409(
    store: ReplicaStore, tmp_path: Path
) -> None:
    key, expected = received(store, b"hello")
    (store.incoming / key).unlink()
    (store.incoming / key).mkdir()
    (store.incoming / key / "inside").write_bytes(b"x")
    with pytest.raises(Conflict, match="not a regular file"):
        store.confirm(key, expected)
    assert not (store.incoming / key).exists()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"hello")
    (store.incoming / key).symlink_to(target)
    with pytest.raises(Conflict):
        store.confirm(key, expected)
    assert target.exists() and not (store.incoming / key).exists()


def test_the_list_ignores_anything_that_is_not_a_replica_in_its_shard(
    store: ReplicaStore,
) -> None:
    key, expected = received(store, b"hello")
    store.confirm(key, expected)
    (store.replicas / "zz").mkdir()
    (store.replicas / "zz" / "junk").write_bytes(b"")
    misplaced = replica_key(9, "c" * 64)
    (store.replicas / key[-2:] / misplaced).write_bytes(b"")
    (store.replicas / "stray-file").write_bytes(b"")
    assert [r.key for r in store.list()] == [key]


@pytest.mark.parametrize("key", ["", "..", "1-../../etc", "a-" + "0" * 64, "1-" + "0" * 65])
def test_no_string_that_is_not_a_key_becomes_a_path(store: ReplicaStore, key: str) -> None:
    with pytest.raises(NotFound):
        store.path(key)
    with pytest.raises(NotFound):
        store.delete(key)


def test_verify_and_confirm_refuse_a_sha256_that_contradicts_the_key(
    store: ReplicaStore,
) -> None:
    key, expected = received(store, b"hello")
    wrong = Expected(expected.size, "0" * 64, expected.md5)
    with pytest.raises(BadRequest):
        store.confirm(key, wrong)
    assert (store.incoming / key).exists()


def test_a_batch_confirm_answers_each_key_alone_and_deletes_only_what_is_bad(
    store: ReplicaStore,
) -> None:
    good = [received(store, f"photo {n}".encode(), blob_id=n) for n in range(1, 6)]
    bad_key, bad_expected = received(store, b"tampered", blob_id=9)
    (store.incoming / bad_key).write_bytes(b"Tampered")
    never = hashlib.sha256(b"never").hexdigest()
    missing = (replica_key(10, never), Expected(5, never, "0" * 32))
    outcomes = store.confirm_batch([*good[:2], (bad_key, bad_expected), missing, *good[2:]])
    assert [type(o).__name__ for o in outcomes] == [
        "Replica", "Replica", "Conflict", "NotFound", "Replica", "Replica", "Replica",
    ]  # fmt: skip
    assert "sha256" in str(outcomes[2])
    for key, expected in good:
        assert store.path(key).stat().st_size == expected.size
        assert not (store.incoming / key).exists()
    assert not (store.incoming / bad_key).exists() and not store.path(bad_key).exists()
    again = store.confirm_batch(good[:1])  # confirmed before: answered again
    assert isinstance(again[0], Replica) and again[0].size == good[0][1].size


def test_a_batch_confirm_fsyncs_every_file_then_each_touched_directory_once(
    store: ReplicaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = [received(store, f"small file {n}".encode(), blob_id=n) for n in range(1, 41)]
    synced_dirs: list[Path] = []
    synced_files: list[str] = []
    monkeypatch.setattr(node.replicas.store, "fsync_dir", synced_dirs.append)
    real_fsync_file = node.replicas.store._fsync_file

    def fsync_file(path: Path) -> None:
        synced_files.append(path.name)
        real_fsync_file(path)

    monkeypatch.setattr(node.replicas.store, "_fsync_file", fsync_file)
    store.confirm_batch(wanted)
    shards = {store.path(key).parent for key, _ in wanted}
    assert sorted(synced_files) == sorted(key for key, _ in wanted)
    assert sorted(synced_dirs) == sorted([*shards, store.replicas, store.incoming])
    assert len(synced_dirs) == len(set(synced_dirs))  # each directory once, not once a file
