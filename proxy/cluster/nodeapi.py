"""What the proxy asks of a storage node, as two small interfaces.

``NodeApi`` is every call the proxy makes to a node's HTTP API; ``ReplicaPusher`` is the copy
of a finished file to the node's rsync daemon. ``proxy.cluster.client`` has the real ones
(``NodeClient`` over signed HTTP with treq, ``RsyncPusher`` by spawning rsync); the tests play
them in memory with switches for every fault. The monitor, the scrubber, the replicator and
the remote tier are typed against these, never against the concrete classes, so mypy checks
that a fake and the real client offer the same calls with the same types.

A call that fails raises: ``proxy.cluster.client.NodeError`` for a node that answered with an
error (carrying its status), a connection error or a timeout for one that did not answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred


@dataclass(frozen=True)
class WantedReplica:
    """One replica a batch confirm asks the node to make of what rsync left in incoming."""

    key: str
    size: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class Pushed:
    """One file of a batch push: the staging file ``source`` goes to ``incoming/<key>``."""

    source: str
    key: str
    size: int


class NodeApi(Protocol):
    """The node's HTTP API as the proxy uses it; ``base_url`` is the node's registered URL
    and ``node`` its name (whose keys sign the call)."""

    async def health(self, base_url: str) -> dict[str, Any]:
        """The node's ``/health`` body (status, free and total bytes, ...)."""
        ...

    async def confirm(
        self, base_url: str, node: str, key: str, size: int, md5: str, sha256: str
    ) -> None:
        """Make what rsync left in the node's incoming folder a replica, if it has this size
        and these checksums; the node discards it and the call raises otherwise."""
        ...

    async def confirm_batch(
        self, base_url: str, node: str, wanted: Sequence[WantedReplica]
    ) -> dict[str, str | None]:
        """``confirm`` for many replicas in one call: for each key asked, None if the node
        confirmed it, else why not (the node discarded what it had received for it). A key
        the node did not answer for is answered "not confirmed" too; the call raises only
        when the node answered nothing usable (then none was confirmed as far as we know)."""
        ...

    async def verify(self, base_url: str, node: str, key: str, size: int, sha256: str) -> bool:
        """Re-hash a confirmed replica: True if it checks out, False if the node found it
        missing or corrupt (and quarantined it)."""
        ...

    async def delete(self, base_url: str, node: str, key: str) -> None:
        """Remove a replica and anything received for it; nothing there is fine too."""
        ...

    async def fetch(
        self, base_url: str, node: str, key: str, write: Callable[[bytes], None]
    ) -> None:
        """Download a replica, calling ``write`` with each piece in order (the caller checks
        its size and sha256)."""
        ...

    async def mirror_sync(
        self, base_url: str, node: str, want: Mapping[str, Any], *, timeout: float
    ) -> dict[str, Any]:
        """Send the node its S3 mirror want-list; its progress report comes back."""
        ...


class ReplicaPusher(Protocol):
    """Copies a finished file from the proxy's staging area to a node's rsync module, logging
    in with that node's rsync password."""

    def push(
        self, source: str, rsync_url: str, node: str, key: str, size: int = 0
    ) -> Deferred[None]: ...

    def push_batch(self, files: Sequence[Pushed], rsync_url: str, node: str) -> Deferred[None]:
        """Copy many files to the node's incoming folder in one transfer; it fails as a
        whole (which files arrived is for the node's confirm to say)."""
        ...
