"""What a two-way sync does, decided from three views of each path: the last sync's record
(both sides agreed then), the folder now, and the server now. Pure: no disk, no network.

For each path (relative to the folder and to the server prefix):

=====================  ==============================  =================================
local since the last   server since the last           action
=====================  ==============================  =================================
unchanged              unchanged                       nothing
changed or new         unchanged or absent before      upload (a new version)
unchanged or absent    changed or new                  download
changed                changed, to the same content    record
changed                changed, to other content       conflict: keep both
deleted                unchanged                       delete on the server (--delete),
                                                       else download it again
unchanged              deleted                         delete here (--delete), else
                                                       upload it again
deleted                changed                         download
changed                deleted                         upload
deleted                deleted                         forget
=====================  ==============================  =================================

"Changed" is judged by content (sha256), so a file touched but not changed is not sent. The
caller only hashes local files whose size or modification time differs from the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Record:
    """One path as the last sync left it on both sides."""

    sha256: str
    size: int
    mtime_ns: int  # of the local file then
    remote_id: str


@dataclass(frozen=True)
class Local:
    size: int
    mtime_ns: int
    sha256: str  # hashed only when size or mtime differ from the record, else the record's


@dataclass(frozen=True)
class Remote:
    file_id: str
    size: int
    sha256: str


class Do(Enum):
    UPLOAD = "upload"
    DOWNLOAD = "download"
    CONFLICT = "conflict"
    DELETE_REMOTE = "delete on the server"
    DELETE_LOCAL = "delete here"
    RECORD = "record"  # both sides agree already: remember it
    FORGET = "forget"  # gone from both


@dataclass(frozen=True)
class Step:
    path: str
    do: Do
    why: str


def decide(
    path: str,
    record: Record | None,
    local: Local | None,
    remote: Remote | None,
    *,
    delete: bool,
) -> Step | None:
    """The step for one path, or None when there is nothing to do.

    >>> r = Record("aa", 1, 5, "f1")
    >>> decide("x", r, Local(1, 5, "aa"), Remote("f1", 1, "aa"), delete=False) is None
    True
    >>> decide("x", r, Local(2, 6, "bb"), Remote("f1", 1, "aa"), delete=False).do
    <Do.UPLOAD: 'upload'>
    >>> decide("x", r, Local(2, 6, "bb"), Remote("f1", 3, "cc"), delete=False).do
    <Do.CONFLICT: 'conflict'>
    >>> decide("x", r, None, Remote("f1", 1, "aa"), delete=True).do
    <Do.DELETE_REMOTE: 'delete on the server'>
    >>> decide("x", r, None, Remote("f1", 1, "aa"), delete=False).do
    <Do.DOWNLOAD: 'download'>
    """
    if record is None:
        if local is None and remote is None:
            return None
        if remote is None:
            return Step(path, Do.UPLOAD, "new here")
        if local is None:
            return Step(path, Do.DOWNLOAD, "new on the server")
        if local.sha256 == remote.sha256:
            return Step(path, Do.RECORD, "the same on both sides")
        return Step(path, Do.CONFLICT, "new on both sides, with different content")
    local_changed = local is not None and local.sha256 != record.sha256
    remote_changed = remote is not None and (
        remote.sha256 != record.sha256 or remote.file_id != record.remote_id
    )
    if local is None and remote is None:
        return Step(path, Do.FORGET, "deleted on both sides")
    if local is None:
        assert remote is not None
        if remote_changed:
            return Step(path, Do.DOWNLOAD, "deleted here, changed on the server")
        if delete:
            return Step(path, Do.DELETE_REMOTE, "deleted here")
        return Step(path, Do.DOWNLOAD, "deleted here (without --delete: brought back)")
    if remote is None:
        if local_changed:
            return Step(path, Do.UPLOAD, "deleted on the server, changed here")
        if delete:
            return Step(path, Do.DELETE_LOCAL, "deleted on the server")
        return Step(path, Do.UPLOAD, "deleted on the server (without --delete: sent again)")
    if local_changed and remote_changed:
        if local.sha256 == remote.sha256:
            return Step(path, Do.RECORD, "changed on both sides to the same content")
        return Step(path, Do.CONFLICT, "changed on both sides")
    if local_changed:
        return Step(path, Do.UPLOAD, "changed here")
    if remote_changed:
        return Step(path, Do.DOWNLOAD, "changed on the server")
    if local.mtime_ns != record.mtime_ns or local.size != record.size:
        return Step(path, Do.RECORD, "touched, not changed")
    return None


def plan(
    records: Mapping[str, Record],
    local: Mapping[str, Local],
    remote: Mapping[str, Remote],
    *,
    delete: bool,
) -> list[Step]:
    """Every step, in path order."""
    steps = []
    for path in sorted(set(records) | set(local) | set(remote)):
        step = decide(path, records.get(path), local.get(path), remote.get(path), delete=delete)
        if step is not None:
            steps.append(step)
    return steps


class TooManyDeletions(Exception):
    def __init__(self, side: str, count: int, of: int, limit: float) -> None:
        super().__init__(
            f"refusing to delete {count} of {of} files {side} in one run (more than "
            f"{limit:g}%); run with --max-delete {min(100, int(100 * count / max(of, 1)) + 1)}%"
            " if that is really meant"
        )


def check_deletions(
    steps: list[Step], local_count: int, remote_count: int, max_percent: float
) -> None:
    """Refuse a plan that deletes more than ``max_percent`` of either side.

    >>> s = [Step("a", Do.DELETE_REMOTE, ""), Step("b", Do.DELETE_REMOTE, "")]
    >>> check_deletions(s, 2, 4, 50.0)
    >>> try:
    ...     check_deletions(s, 2, 3, 50.0)
    ... except TooManyDeletions as refused:
    ...     print(refused)  # doctest: +ELLIPSIS
    refusing to delete 2 of 3 files on the server in one run (more than 50%); ... 67% ...
    """
    here = sum(1 for s in steps if s.do is Do.DELETE_LOCAL)
    there = sum(1 for s in steps if s.do is Do.DELETE_REMOTE)
    if here and 100 * here > max_percent * max(local_count, 1):
        raise TooManyDeletions("here", here, local_count, max_percent)
    if there and 100 * there > max_percent * max(remote_count, 1):
        raise TooManyDeletions("on the server", there, remote_count, max_percent)


def conflict_name(path: str, stamp: str, device: str) -> str:
    """Where the local side of a conflict is kept.

    >>> conflict_name("docs/report.txt", "20261201-173000", "laptop")
    'docs/report.conflict-20261201-173000-laptop.txt'
    >>> conflict_name("Makefile", "20261201-173000", "pc")
    'Makefile.conflict-20261201-173000-pc'
    """
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    renamed = f"{stem}.conflict-{stamp}-{device}" + (f".{ext}" if ext else "")
    return f"{folder}/{renamed}" if folder else renamed
