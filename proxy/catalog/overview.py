"""What the pages show of a user's files: a page of them by name, newest first, each with
where its current version stands (replicas, the S3 mirror, a restore), in one query."""

from __future__ import annotations

from dataclasses import dataclass

from common.db import Row, Txn
from proxy.catalog import store
from proxy.cluster.nodestore import CONFIRMED
from proxy.remote import states


@dataclass(frozen=True)
class FileState:
    replicas: int  # confirmed copies on storage nodes
    remote_state: str
    remote_verified: bool
    parts_total: int
    parts_uploaded: int
    parts_restored: int

    @property
    def badge(self) -> tuple[str, str]:
        """A short state for people: (a CSS-friendly key, the words shown).

        >>> FileState(2, "local", False, 0, 0, 0).badge
        ('local', 'stored locally (2 replicas)')
        >>> FileState(2, "mirroring", False, 4, 1, 0).badge
        ('backing-up', 'backing up to S3 (1 of 4 parts)')
        >>> FileState(2, "mirroring", False, 0, 0, 0).badge
        ('backing-up', 'backing up to S3')
        >>> FileState(0, "restoring", True, 4, 4, 3).badge
        ('restoring', 'restoring (3 of 4 parts)')
        """
        state = self.remote_state
        if state == states.RESTORING:
            return "restoring", f"restoring ({self.parts_restored} of {self.parts_total} parts)"
        if state == states.REMOTE:
            return "remote", "remote only"
        if state == states.LOST:
            return "lost", "lost"
        if state == states.MIRRORED and self.remote_verified:
            return "backed-up", "backed up"
        if state in (states.MIRRORING, states.MIRRORED):
            done, total = self.parts_uploaded, self.parts_total
            if not total:  # no part reported yet
                return "backing-up", "backing up to S3"
            return "backing-up", f"backing up to S3 ({done} of {total} parts)"
        copies = "1 replica" if self.replicas == 1 else f"{self.replicas} replicas"
        return "local", f"stored locally ({copies})"


@dataclass(frozen=True)
class FileRow:
    id: str
    filename: str
    size: int
    created_at: float
    updated_at: float
    version: int
    versions: int
    state: FileState


_ROWS = f"""
SELECT f.id, f.filename, b.size, f.created_at, f.updated_at, f.current_version,
  (SELECT COUNT(*) FROM versions v2 WHERE v2.file_id = f.id),
  (SELECT COUNT(*) FROM replicas r WHERE r.blob_id = b.id AND r.state = '{CONFIRMED}'),
  b.remote_state, b.remote_verified,
  (SELECT COUNT(*) FROM blob_parts p WHERE p.blob_id = b.id),
  (SELECT COUNT(*) FROM blob_parts p WHERE p.blob_id = b.id AND p.remote_state = 'uploaded'),
  b.parts_restored
FROM files f
JOIN versions v ON v.file_id = f.id AND v.number = f.current_version
JOIN blobs b ON b.id = v.blob_id
"""


def _row(row: Row) -> FileRow:
    state = FileState(int(row[7]), row[8], bool(row[9]), int(row[10]), int(row[11]), int(row[12]))
    return FileRow(
        row[0], row[1], int(row[2]), float(row[3]), float(row[4]), int(row[5]), int(row[6]), state
    )


def like_pattern(text: str) -> str:
    r"""A LIKE pattern that finds ``text`` anywhere, its own % and _ taken literally.

    >>> like_pattern("50%_off")
    '%50\\%\\_off%'
    """
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def file_rows(
    txn: Txn, owner_id: int, search: str, limit: int, offset: int
) -> tuple[int, list[FileRow]]:
    """How many of the user's files match ``search`` (by name), and one page of them
    (newest first, along the (owner, created_at) index). Without a search the count is the
    account's file counter, not a count of its files."""
    where, params = "WHERE f.owner_id = ?", [owner_id]
    if search:
        where += " AND LOWER(f.filename) LIKE ? ESCAPE '\\'"
        params.append(like_pattern(search))  # type: ignore[arg-type]
        count = int(txn.scalar(f"SELECT COUNT(*) FROM files f {where}", params))
    else:
        count = store.count_files(txn, owner_id)
    rows = txn.all(
        f"{_ROWS} {where} ORDER BY f.created_at DESC, f.id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return count, [_row(row) for row in rows]


def file_row(txn: Txn, owner_id: int, file_id: str) -> FileRow | None:
    row = txn.one(f"{_ROWS} WHERE f.owner_id = ? AND f.id = ?", (owner_id, file_id))
    return None if row is None else _row(row)
