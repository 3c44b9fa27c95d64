"""The node's settings: one typed object, documented once (see ``etc/node.conf-sample``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from common.config import ConfigError, parse_duration, parse_size, setting
from common.s3 import MIN_PART_SIZE
from common.secretcheck import check_cluster_secret
from common.signing import NodeKeys, node_key, valid_node_key

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True)
class NodeConfig:
    name: str = setting(
        "",
        str,
        "This node's name in the cluster (letters, digits, '.', '_', '-'); download tokens "
        "name the node they are for. Required.",
    )
    data_dir: str = setting(
        "./var/node",
        str,
        "Directory holding incoming/, replicas/, quarantine/ and the generated rsyncd.conf "
        "and rsyncd.secrets; free space is reported for its filesystem.",
    )
    listen: str = setting(
        "tcp:8101:interface=127.0.0.1", str, "Twisted endpoint string the HTTP API listens on."
    )
    zone: str = setting(
        "default", str, "The zone this node is in; the proxy keeps a file's replicas apart."
    )
    node_key: str = setting(
        "",
        str,
        "This node's own key (64 hex digits), printed by 'pyarchive-proxy nodes key NAME' "
        "on the proxy: checks the proxy's signed requests and download tokens, opens the S3 "
        "settings the proxy sends, and yields the rsync password. It is good for this node's "
        "name only. Required unless cluster_secret is given; better given as "
        "PYARCHIVE_NODE_KEY than written here.",
    )
    cluster_secret: str = setting(
        "",
        str,
        "Instead of node_key, for convenience: the proxy's cluster secret (at least 32 "
        "characters), from which the node derives its node_key at start-up and then forgets "
        "it. Safer not to give a node the cluster secret at all (a node holding it could act "
        "for every node).",
    )
    rsync_port: int = setting(
        8873, int, "TCP port of the node's rsync daemon (where the proxy pushes replicas)."
    )
    rsync_address: str = setting(
        "",
        str,
        "Address the rsync daemon binds to; empty means the interface of 'listen' if it "
        "names one, else every interface (as the HTTP listener then does).",
    )
    rsync_binary: str = setting("rsync", str, "The rsync program (a name on PATH or a path).")
    rsync_max_connections: int = setting(
        16, int, "Pushes the rsync daemon accepts at once (more are refused until one ends)."
    )
    rsync_restart_delay: float = setting(
        1.0,
        parse_duration,
        "Wait before restarting an rsync daemon that exited; doubles on each quick failure up "
        "to rsync_restart_max_delay, and starts again from here once a daemon ran a while.",
        shown="1s",
    )
    rsync_restart_max_delay: float = setting(
        30.0, parse_duration, "Longest wait between rsync daemon restarts.", shown="30s"
    )
    io_threads: int = setting(4, int, "Threads that hash, fsync and move replica files.")
    mirror_interval: float = setting(
        5.0,
        parse_duration,
        "How often the S3 mirror loop looks for work (uploads to mirror, restores, aborts); "
        "staff may change it from the proxy, which then sends its own value.",
        shown="5s",
    )
    mirror_part_size: int = setting(
        8 * 2**20,
        parse_size,
        "Size of each part of an S3 multipart upload (at least 5MiB, S3's minimum; raised "
        "for a file that would otherwise need more than 10,000 parts).",
        shown="8MiB",
    )
    mirror_parts_in_flight: int = setting(4, int, "Parts of a file uploaded to S3 at once.")
    mirror_bandwidth: int = setting(
        0,
        parse_size,
        "Bytes per second this node may send to and fetch from S3, all transfers together "
        "(e.g. 20MiB); 0 means no limit.",
    )
    mirror_retry_max: float = setting(
        600.0,
        parse_duration,
        "Longest wait before trying a failed mirror or restore again; the wait starts at 5s "
        "and doubles on each failure up to this.",
        shown="10m",
    )
    restore_parts_in_flight: int = setting(
        4, int, "Parts of a file downloaded from S3 at once when restoring it."
    )

    def check(self) -> None:
        """Raise ConfigError, naming the setting, for values the node cannot run with."""
        if not self.node_key and not self.cluster_secret:
            raise ConfigError(
                "node_key is not set: give it as PYARCHIVE_NODE_KEY (from 'pyarchive-proxy "
                "nodes key NAME') or in the [node] section of the config file"
            )
        if self.node_key and self.cluster_secret:
            raise ConfigError("give node_key or cluster_secret, not both")
        if self.node_key and not valid_node_key(self.node_key):
            raise ConfigError(
                "node_key must be the 64 hex digits 'pyarchive-proxy nodes key NAME' printed"
            )
        if self.cluster_secret:
            check_cluster_secret(self.cluster_secret)
        if not _NAME.fullmatch(self.name):
            raise ConfigError(
                "name must be set (--name) to 1-63 letters, digits, '.', '_' or '-', "
                f"not {self.name!r}"
            )
        if not 0 < self.rsync_port < 65536:
            raise ConfigError(f"rsync_port must be a TCP port, not {self.rsync_port}")
        if self.io_threads < 1 or self.rsync_max_connections < 1:
            raise ConfigError("io_threads and rsync_max_connections must be at least 1")
        if self.mirror_part_size < MIN_PART_SIZE:
            raise ConfigError(
                f"mirror_part_size must be at least 5MiB ({MIN_PART_SIZE} bytes), S3's "
                f"smallest part, not {self.mirror_part_size}"
            )
        if self.mirror_parts_in_flight < 1 or self.restore_parts_in_flight < 1:
            raise ConfigError(
                "mirror_parts_in_flight and restore_parts_in_flight must be at least 1"
            )
        if self.mirror_bandwidth < 0:
            raise ConfigError("mirror_bandwidth must be 0 (no limit) or bytes per second")
        if self.mirror_interval <= 0 or self.mirror_retry_max <= 0:
            raise ConfigError("mirror_interval and mirror_retry_max must be longer than 0s")

    def keys(self) -> NodeKeys:
        """This node's keys, from node_key (or derived from cluster_secret, which is used for
        nothing else)."""
        key = self.node_key or node_key(self.cluster_secret, self.name)
        return NodeKeys.from_node_key(self.name, key)

    def without_secrets(self) -> NodeConfig:
        """The same settings with node_key and cluster_secret blanked, to keep once the keys
        are derived."""
        return replace(self, node_key="", cluster_secret="")

    def rsync_bind_address(self) -> str:
        """Where the rsync daemon listens: ``rsync_address``, else the HTTP interface.

        >>> NodeConfig().rsync_bind_address()
        '127.0.0.1'
        >>> NodeConfig(listen="tcp:port=8101:interface=10.0.0.5").rsync_bind_address()
        '10.0.0.5'
        >>> NodeConfig(listen=r"tcp6:8101:interface=\\:\\:1").rsync_bind_address()
        '::1'
        >>> NodeConfig(listen="tcp:8101").rsync_bind_address()
        '0.0.0.0'
        """
        # A listen string without an interface listens on every interface, and so does rsync.
        return self.rsync_address or endpoint_interface(self.listen) or "0.0.0.0"


def endpoint_interface(description: str) -> str | None:
    """The ``interface=`` of a Twisted server endpoint string, or None if it names none.

    Colons inside a value are escaped with a backslash (``interface=\\:\\:1``).

    >>> endpoint_interface("ssl:8443:privateKey=k.pem:interface=192.168.1.2")
    '192.168.1.2'
    >>> endpoint_interface("unix:/run/node.sock") is None
    True
    """
    for argument in _split_unescaped(description):
        key, equals, value = argument.partition("=")
        if equals and key == "interface" and value:
            return value
    return None


def _split_unescaped(description: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
