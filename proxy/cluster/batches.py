"""How a replication pass sizes its work: small files go to a node in batches (one rsync
run, one signed confirm for many), large ones keep a transfer of their own.

A pass is bounded by batches, not by copies: it plans up to ``batches`` full batches of
small files and up to ``singles`` large copies, and ``group`` deals the small copies out
into batches per node, each bounded by count and bytes. Pure functions and values, tested
without a reactor or a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.signing import replica_key

MiB = 2**20


@dataclass(frozen=True)
class Copy:
    """One replica to make: a blob's content onto a node."""

    blob_id: int
    sha256: str
    md5: str
    size: int
    node: str
    url: str
    rsync_url: str
    attempts: int

    @property
    def key(self) -> str:
        return replica_key(self.blob_id, self.sha256)


@dataclass(frozen=True)
class BatchLimits:
    """``small_file``: below this size a copy travels in a batch. A batch holds at most
    ``files`` copies and ``bytes`` bytes (one file alone may exceed ``bytes`` only if it is
    below ``small_file``, which is smaller). A pass plans at most ``batches`` batches'
    worth of small copies and ``singles`` large copies."""

    small_file: int = 8 * MiB
    files: int = 500
    bytes: int = 64 * MiB
    batches: int = 4
    singles: int = 8

    def __post_init__(self) -> None:
        if min(self.small_file, self.files, self.bytes, self.batches, self.singles) < 1:
            raise ValueError("every batch limit must be at least 1")

    def is_small(self, size: int) -> bool:
        return size < self.small_file


class Budget:
    """What one pass may still plan, under ``limits``.

    >>> budget = Budget(BatchLimits(small_file=10, files=2, bytes=100, batches=1, singles=1))
    >>> [budget.take(size) for size in (3, 50, 60, 4, 5)]
    [True, True, False, True, False]
    >>> budget.full()
    True
    """

    def __init__(self, limits: BatchLimits) -> None:
        self._limits = limits
        self._singles = 0
        self._small = 0
        self._small_bytes = 0

    def take(self, size: int) -> bool:
        """Count a copy of ``size`` bytes in, if the pass has room for it."""
        limits = self._limits
        if not limits.is_small(size):
            if self._singles >= limits.singles:
                return False
            self._singles += 1
            return True
        if self._small >= limits.files * limits.batches or (
            self._small_bytes + size > limits.bytes * limits.batches and self._small
        ):
            return False
        self._small += 1
        self._small_bytes += size
        return True

    def full(self) -> bool:
        """Whether no further copy of any size would be taken (planning may stop)."""
        limits = self._limits
        return self._singles >= limits.singles and (
            self._small >= limits.files * limits.batches
            or self._small_bytes >= limits.bytes * limits.batches
        )


def group(copies: Sequence[Copy], limits: BatchLimits) -> tuple[list[Copy], list[list[Copy]]]:
    """(copies that travel alone, batches): each batch goes to one node and holds at most
    ``limits.files`` copies and ``limits.bytes`` bytes; the planned order is kept.

    >>> def copy(blob: int, node: str, size: int) -> Copy:
    ...     return Copy(blob, "a" * 64, "b" * 32, size, node, "", "", 0)
    >>> limits = BatchLimits(small_file=10, files=2, bytes=100)
    >>> singles, batches = group(
    ...     [copy(1, "n1", 5), copy(1, "n2", 5), copy(2, "n1", 50), copy(3, "n1", 6),
    ...      copy(4, "n1", 7)], limits)
    >>> [c.blob_id for c in singles]
    [2]
    >>> [[(c.blob_id, c.node) for c in batch] for batch in batches]
    [[(1, 'n1'), (3, 'n1')], [(1, 'n2')], [(4, 'n1')]]
    """
    singles: list[Copy] = []
    batches: list[list[Copy]] = []
    open_batch: dict[str, list[Copy]] = {}
    for copy in copies:
        if not limits.is_small(copy.size):
            singles.append(copy)
            continue
        current = open_batch.get(copy.node)
        if current is None or (
            len(current) >= limits.files or sum(c.size for c in current) + copy.size > limits.bytes
        ):
            current = open_batch[copy.node] = []
            batches.append(current)
        current.append(copy)
    return singles, batches
