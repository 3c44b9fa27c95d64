"""SQL the staff console reads: the overview's figures over the whole catalogue, the files
whose replicas are short or whose S3 mirror is failing (every user's, a page at a time), and
a node's recent warnings and errors from the system log.

Every figure is one aggregate query: nothing here loads the catalogue into Python, so the
memory a console page takes does not grow with the number of files. The same SQL runs on
SQLite and PostgreSQL.

What counts (the console says so too):

- **stored**: distinct contents (blobs) that some version uses, and their bytes, each
  content once; beside it, every version's bytes (what users see, shared content counted
  per version).
- **replicated**: contents with at least the target number of confirmed replicas.
- **backed up to S3**: contents whose object in S3 was verified: mirrored, and also those
  kept only in S3 (remote, or being restored from it).
- **remote only**: contents no node holds because they were uncached (remote, restoring).
- **replicas short**: files whose current version's content should be on nodes (not remote
  only) and has fewer confirmed replicas than the target; lost content counts here.
- **mirror failing**: files whose current version's content is being mirrored and whose
  mirroring node reported a failure (``blobs.mirror_detail``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from common.db import Row, Txn
from proxy.catalog.overview import FileState
from proxy.cluster.nodestore import ACTIVE, CONFIRMED, UP
from proxy.remote.states import MIRRORED, MIRRORING, REMOTE, RESTORING

LOW_SPACE = 0.10  # under this share of free space across nodes, the overview warns


@dataclass(frozen=True)
class Amount:
    count: int
    bytes: int


@dataclass(frozen=True)
class Space:
    nodes_up: int  # up and active: the nodes new copies can go to
    nodes: int
    free_bytes: int
    total_bytes: int

    @property
    def free_share(self) -> float | None:
        """Free over total on those nodes (None when none reports a size).

        >>> Space(2, 2, 5, 100).free_share, Space(0, 1, 0, 0).free_share
        (0.05, None)
        """
        return self.free_bytes / self.total_bytes if self.total_bytes else None

    @property
    def low(self) -> bool:
        """Whether to warn: under 10 % free, or no node to write to at all.

        >>> Space(1, 1, 9, 100).low, Space(1, 1, 10, 100).low, Space(0, 1, 0, 0).low
        (True, False, True)
        """
        share = self.free_share
        return share is None or share < LOW_SPACE


@dataclass(frozen=True)
class Overview:
    target: int  # confirmed replicas each content should have
    files: int
    versions: Amount  # every version, content shared between versions counted each time
    stored: Amount  # distinct contents used by some version, each once
    replicated: Amount
    backed_up: Amount
    remote_only: Amount
    short_files: int
    failing_files: int
    space: Space


def _int(value: object) -> int:
    """A COUNT or SUM as an int (PostgreSQL's SUM of a bigint is a Decimal; NULL is 0)."""
    return 0 if value is None else int(value)  # type: ignore[call-overload]


_CONFIRMED_OF_BLOB = (
    f"(SELECT COUNT(*) FROM replicas r WHERE r.blob_id = b.id AND r.state = '{CONFIRMED}')"
)
_CURRENT = (
    "FROM files f JOIN versions v ON v.file_id = f.id AND v.number = f.current_version"
    " JOIN blobs b ON b.id = v.blob_id JOIN users u ON u.id = f.owner_id"
)
_SHORT = f"b.remote_state NOT IN ('{REMOTE}', '{RESTORING}') AND {_CONFIRMED_OF_BLOB} < ?"
_FAILING = f"b.remote_state = '{MIRRORING}' AND b.mirror_detail <> ''"


def overview(txn: Txn, target: int) -> Overview:
    """Every figure of the overview page, in a handful of aggregate queries."""
    verified = (
        f"b.remote_verified = 1 AND b.remote_state IN ('{MIRRORED}', '{REMOTE}', '{RESTORING}')"
    )
    remote_only = f"b.remote_state IN ('{REMOTE}', '{RESTORING}')"
    row = txn.one(
        "SELECT COUNT(*), SUM(b.size),"
        " SUM(CASE WHEN c.n >= ? THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN c.n >= ? THEN b.size ELSE 0 END),"
        f" SUM(CASE WHEN {verified} THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN {verified} THEN b.size ELSE 0 END),"
        f" SUM(CASE WHEN {remote_only} THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN {remote_only} THEN b.size ELSE 0 END)"
        " FROM blobs b LEFT JOIN (SELECT blob_id, COUNT(*) AS n FROM replicas"
        f"  WHERE state = '{CONFIRMED}' GROUP BY blob_id) c ON c.blob_id = b.id"
        " WHERE EXISTS (SELECT 1 FROM versions v WHERE v.blob_id = b.id)",
        (target, target),
    )
    assert row is not None
    blobs = [_int(value) for value in row]
    versions = txn.one(
        "SELECT COUNT(*), SUM(b.size) FROM versions v JOIN blobs b ON b.id = v.blob_id"
    )
    assert versions is not None
    files = _int(txn.scalar("SELECT COUNT(*) FROM files"))
    short = _int(txn.scalar(f"SELECT COUNT(*) {_CURRENT} WHERE {_SHORT}", (target,)))
    failing = _int(txn.scalar(f"SELECT COUNT(*) {_CURRENT} WHERE {_FAILING}"))
    return Overview(
        target=target,
        files=files,
        versions=Amount(_int(versions[0]), _int(versions[1])),
        stored=Amount(blobs[0], blobs[1]),
        replicated=Amount(blobs[2], blobs[3]),
        backed_up=Amount(blobs[4], blobs[5]),
        remote_only=Amount(blobs[6], blobs[7]),
        short_files=short,
        failing_files=failing,
        space=space(txn),
    )


def space(txn: Txn) -> Space:
    """Free and total bytes over the nodes that are up and take new copies (not drained)."""
    row = txn.one(
        "SELECT SUM(CASE WHEN status = ? AND state = ? THEN 1 ELSE 0 END), COUNT(*),"
        " SUM(CASE WHEN status = ? AND state = ? THEN free_bytes ELSE 0 END),"
        " SUM(CASE WHEN status = ? AND state = ? THEN total_bytes ELSE 0 END) FROM nodes",
        (UP, ACTIVE, UP, ACTIVE, UP, ACTIVE),
    )
    assert row is not None
    return Space(*(_int(value) for value in row))


# ---------------------------------------------------------------- the lists behind two figures


@dataclass(frozen=True)
class ConsoleFile:
    """One file in a console list: whose, which, and where its current version stands."""

    file_id: str
    owner: str
    filename: str
    size: int
    state: FileState
    detail: str  # the mirroring node's last failure, for the failing list


_LISTED = (
    "SELECT f.id, u.username, f.filename, b.size,"
    f" {_CONFIRMED_OF_BLOB}, b.remote_state, b.remote_verified,"
    " (SELECT COUNT(*) FROM blob_parts p WHERE p.blob_id = b.id),"
    " (SELECT COUNT(*) FROM blob_parts p WHERE p.blob_id = b.id AND p.remote_state = 'uploaded'),"
    " b.parts_restored, b.mirror_detail"
)
_ORDER = " ORDER BY u.username, f.filename, f.id LIMIT ? OFFSET ?"


def _listed(row: Row) -> ConsoleFile:
    state = FileState(int(row[4]), row[5], bool(row[6]), int(row[7]), int(row[8]), int(row[9]))
    return ConsoleFile(row[0], row[1], row[2], int(row[3]), state, row[10])


def short_files(txn: Txn, target: int, limit: int, offset: int) -> tuple[int, list[ConsoleFile]]:
    """How many files have fewer confirmed replicas than ``target``, and one page of them."""
    count = _int(txn.scalar(f"SELECT COUNT(*) {_CURRENT} WHERE {_SHORT}", (target,)))
    rows = txn.all(f"{_LISTED} {_CURRENT} WHERE {_SHORT}{_ORDER}", (target, limit, offset))
    return count, [_listed(row) for row in rows]


def failing_files(txn: Txn, limit: int, offset: int) -> tuple[int, list[ConsoleFile]]:
    """How many files' mirror to S3 is failing, and one page of them."""
    count = _int(txn.scalar(f"SELECT COUNT(*) {_CURRENT} WHERE {_FAILING}"))
    rows = txn.all(f"{_LISTED} {_CURRENT} WHERE {_FAILING}{_ORDER}", (limit, offset))
    return count, [_listed(row) for row in rows]


# ---------------------------------------------------------------- a node's recent trouble


@dataclass(frozen=True)
class LogEntry:
    at: float
    level: str
    event: str
    message: str


def node_pattern(node: str) -> str:
    r"""A LIKE pattern for system-log data naming ``node``: entries are stored as JSON with
    sorted keys and ``json.dumps``'s separators, so the node is the text ``"node": "<name>"``
    (its ``_`` and ``%`` taken literally).

    >>> node_pattern("node_1")
    '%"node": "node\\_1"%'
    """
    text = json.dumps({"node": node})[1:-1]
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def node_trouble(txn: Txn, node: str, limit: int) -> list[LogEntry]:
    """The newest ``limit`` warnings and errors the system log recorded about ``node``
    (ping transitions, failed copies, its mirror loop's reports), newest first."""
    rows = txn.all(
        "SELECT at, level, event, message FROM system_log WHERE level IN ('warn', 'error')"
        " AND data LIKE ? ESCAPE '\\' ORDER BY at DESC, id DESC LIMIT ?",
        (node_pattern(node), limit),
    )
    return [LogEntry(float(row[0]), row[1], row[2], row[3]) for row in rows]
