"""SQL for users, files, versions and blobs: one small function per statement group (the
uploads' SQL is ``proxy.uploads.uploadstore``).

Every function takes a ``Txn`` first and runs inside ``Database.run``; none of them touches
the disk or knows about HTTP. Rows come back as frozen dataclasses.

Over 400 lines on purpose, for now: users, files, versions and blobs are read together by
most statements here (a file with its versions and their blobs, a listing with its versions),
so a split by table would make every caller import three modules. Issue 15 added the keyset
listing and the file counter here without splitting it; the split into accounts and files is
still owed (the listing's functions would leave with the files).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from common.db import Row, Txn
from common.s3 import object_key
from common.signing import replica_key
from proxy.cluster import nodestore

# ---------------------------------------------------------------- users


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str
    password_hash: str
    is_staff: bool
    token_version: int = 0


_USER_COLUMNS = "id, username, email, password_hash, is_staff, token_version"


def _user(row: Row) -> User:
    return User(int(row[0]), row[1], row[2], row[3], bool(row[4]), int(row[5]))


def create_user(
    txn: Txn, username: str, email: str, password_hash: str, is_staff: bool, now: float
) -> User | None:
    """Insert a user; None if the username is taken."""
    row = txn.one(
        "INSERT INTO users (username, email, password_hash, is_staff, created_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (username) DO NOTHING RETURNING " + _USER_COLUMNS,
        (username, email, password_hash, int(is_staff), now),
    )
    return None if row is None else _user(row)


def set_staff_user(txn: Txn, username: str, password_hash: str, now: float) -> tuple[User, bool]:
    """Create ``username`` as staff, or make an existing user staff with this password."""
    created = create_user(txn, username, "", password_hash, True, now)
    if created is not None:
        return created, True
    txn.execute(
        "UPDATE users SET password_hash = ?, is_staff = 1, token_version = token_version + 1"
        " WHERE username = ?",
        (password_hash, username),
    )
    user = user_by_name(txn, username)
    assert user is not None
    return user, False


def user_by_name(txn: Txn, username: str) -> User | None:
    row = txn.one(f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,))
    return None if row is None else _user(row)


def user_by_id(txn: Txn, user_id: int) -> User | None:
    row = txn.one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
    return None if row is None else _user(row)


@dataclass(frozen=True)
class AccountState:
    """What a request's rights are read from on every request (never from the token)."""

    username: str
    is_staff: bool
    is_active: bool
    token_version: int
    must_change_password: bool


def account_state(txn: Txn, user_id: int) -> AccountState | None:
    row = txn.one(
        "SELECT username, is_staff, is_active, token_version, must_change_password FROM users"
        " WHERE id = ?",
        (user_id,),
    )
    if row is None:
        return None
    return AccountState(row[0], bool(row[1]), bool(row[2]), int(row[3]), bool(row[4]))


def token_version(txn: Txn, user_id: int) -> int | None:
    """The account's token version, None if there is no such account."""
    value = txn.scalar("SELECT token_version FROM users WHERE id = ?", (user_id,))
    return None if value is None else int(value)


def bump_token_version(txn: Txn, user_id: int) -> int:
    """Sign the account out everywhere: every token and session issued before ends."""
    txn.execute("UPDATE users SET token_version = token_version + 1 WHERE id = ?", (user_id,))
    txn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
    return int(txn.scalar("SELECT token_version FROM users WHERE id = ?", (user_id,)))


def set_password(txn: Txn, user_id: int, password_hash: str, must_change: bool = False) -> int:
    """A new password and a new token version (every older token and session ends); returns
    the new version. ``must_change``: one staff set, which its owner must change."""
    txn.execute(
        "UPDATE users SET password_hash = ?, token_version = token_version + 1,"
        " must_change_password = ? WHERE id = ?",
        (password_hash, int(must_change), user_id),
    )
    return int(txn.scalar("SELECT token_version FROM users WHERE id = ?", (user_id,)))


def set_email(txn: Txn, user_id: int, email: str) -> None:
    txn.execute("UPDATE users SET email = ? WHERE id = ?", (email, user_id))


def note_login(txn: Txn, user_id: int, now: float) -> None:
    txn.execute("UPDATE users SET last_login = ? WHERE id = ?", (now, user_id))


def set_avatar(txn: Txn, user_id: int, png: bytes | None) -> None:
    """The profile picture (a PNG the server made), kept as base64 text; None: the default."""
    kept = None if png is None else base64.b64encode(png).decode("ascii")
    txn.execute("UPDATE users SET avatar = ? WHERE id = ?", (kept, user_id))


def avatar(txn: Txn, user_id: int) -> bytes | None:
    value = txn.scalar("SELECT avatar FROM users WHERE id = ?", (user_id,))
    return None if value is None else base64.b64decode(value)


def user_quota(txn: Txn, user_id: int, *, lock: bool = False) -> int | None:
    """The account's quota in bytes, None for no limit (or no such account). ``lock``
    serialises the transactions that check it (``proxy.uploads.quota``); on PostgreSQL it is
    ``FOR NO KEY UPDATE``, which leaves inserts that reference the row free to go on."""
    locking = " FOR NO KEY UPDATE" if lock and txn.dialect == "postgresql" else ""
    value = txn.scalar("SELECT quota FROM users WHERE id = ?" + locking, (user_id,))
    return None if value is None else int(value)


def set_quota(txn: Txn, user_id: int, quota: int | None) -> None:
    txn.execute("UPDATE users SET quota = ? WHERE id = ?", (quota, user_id))


def storage_used(txn: Txn, owner_id: int) -> int:
    """Bytes the user's files hold: every version counts (a shared blob once per version)."""
    value = txn.scalar(
        "SELECT COALESCE(SUM(b.size), 0) FROM versions v JOIN files f ON f.id = v.file_id"
        " JOIN blobs b ON b.id = v.blob_id WHERE f.owner_id = ?",
        (owner_id,),
    )
    return int(value or 0)


# ---------------------------------------------------------------- blobs, files, versions


@dataclass(frozen=True)
class Blob:
    id: int
    sha256: str
    md5: str
    size: int


def dedup_key(owner_id: int, sha256: str) -> str:
    """What blobs are deduplicated by: content within one owner's files, never across owners
    (so no user learns from a blob's state, replicas or uncache about another's files).

    >>> dedup_key(7, "ab" * 32) == "7:" + "ab" * 32
    True
    """
    return f"{owner_id}:{sha256}"


def ensure_blob(
    txn: Txn, owner_id: int, sha256: str, md5: str, size: int, now: float
) -> tuple[Blob, bool]:
    """The owner's blob with this content, created if new; the bool says whether it was
    created. Another owner's identical content is another blob (``dedup_key``)."""
    key = dedup_key(owner_id, sha256)
    row = txn.one(
        "INSERT INTO blobs (dedup_key, sha256, md5, size, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        (key, sha256, md5, size, now),
    )
    if row is not None:
        return Blob(int(row[0]), sha256, md5, size), True
    existing = txn.one("SELECT id, sha256, md5, size FROM blobs WHERE dedup_key = ?", (key,))
    assert existing is not None
    return Blob(int(existing[0]), existing[1], existing[2], int(existing[3])), False


def revive_blob(txn: Txn, blob_id: int) -> bool:
    """Called when new content equal to an existing blob arrives. If no node holds that blob
    (kept only in S3, being restored, or lost), the new upload becomes its local copy and
    replication places it again; returns True when the caller must keep its data."""
    state = txn.scalar("SELECT remote_state FROM blobs WHERE id = ?" + txn.for_update, (blob_id,))
    if state in ("remote", "restoring"):
        # Still verified in S3: only the local copies come back (a restore in progress is
        # dropped from its node's want-list, which removes the partial file).
        txn.execute(
            "UPDATE blobs SET local = 1, remote_state = 'mirrored', restore_node = NULL,"
            " parts_restored = 0, restore_detail = '' WHERE id = ?",
            (blob_id,),
        )
        return True
    if state == "lost":
        txn.execute(
            "UPDATE blobs SET local = 1, remote_state = 'local', remote_verified = 0,"
            " mirror_node = NULL, mirror_detail = '' WHERE id = ?",
            (blob_id,),
        )
        return True
    return False


@dataclass(frozen=True)
class Version:
    number: int
    filename: str
    created_at: float
    blob: Blob
    content_type: str = ""  # as the client said (tus filetype); "" when it did not
    # Where its content stands in the S3 tier (blobs.remote_state, remote_verified), as read
    # with it; "" only in hand-made values.
    remote_state: str = ""
    remote_verified: bool = False


@dataclass(frozen=True)
class StoredFile:
    id: str
    owner_id: int
    filename: str
    current_version: int
    created_at: float
    updated_at: float
    versions: tuple[Version, ...]  # newest first
    path: str = ""  # folder/name, unique among the owner's files; "" only in hand-made values

    @property
    def current(self) -> Version:
        return next(v for v in self.versions if v.number == self.current_version)

    def version(self, number: int | None) -> Version | None:
        if number is None:
            return self.current
        return next((v for v in self.versions if v.number == number), None)


_FILE_COLUMNS = "id, owner_id, filename, current_version, created_at, updated_at, path"


def _versions(txn: Txn, file_ids: list[str]) -> dict[str, list[Version]]:
    found: dict[str, list[Version]] = {file_id: [] for file_id in file_ids}
    if not file_ids:
        return found
    marks = ", ".join("?" for _ in file_ids)
    rows = txn.all(
        "SELECT v.file_id, v.number, v.filename, v.created_at, b.id, b.sha256, b.md5, b.size,"
        " v.content_type, b.remote_state, b.remote_verified"
        f" FROM versions v JOIN blobs b ON b.id = v.blob_id WHERE v.file_id IN ({marks})"
        " ORDER BY v.file_id, v.number DESC",
        file_ids,
    )
    for row in rows:
        blob = Blob(int(row[4]), row[5], row[6], int(row[7]))
        found[row[0]].append(
            Version(int(row[1]), row[2], float(row[3]), blob, row[8], row[9], bool(row[10]))
        )
    return found


def _files(txn: Txn, rows: list[Row]) -> list[StoredFile]:
    versions = _versions(txn, [row[0] for row in rows])
    return [
        StoredFile(
            row[0],
            int(row[1]),
            row[2],
            int(row[3]),
            float(row[4]),
            float(row[5]),
            tuple(versions[row[0]]),
            row[6],
        )
        for row in rows
    ]


def get_file(
    txn: Txn, file_id: str, owner_id: int | None, *, lock: bool = False
) -> StoredFile | None:
    """The file with this id owned by ``owner_id`` (any owner's when None: staff only)."""
    mine = " AND owner_id = ?" if owner_id is not None else ""
    rows = txn.all(
        f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?{mine}" + (txn.for_update if lock else ""),
        (file_id, owner_id) if owner_id is not None else (file_id,),
    )
    files = _files(txn, rows)
    return files[0] if files else None


def move_file(txn: Txn, file_id: str, path: str, filename: str, now: float) -> bool:
    """Give the file another path (its name the path's last segment); False if one of the
    owner's files is already there."""
    row = txn.one("SELECT owner_id FROM files WHERE id = ?", (file_id,))
    assert row is not None
    taken = txn.one(
        "SELECT id FROM files WHERE owner_id = ? AND path = ? AND id <> ?", (row[0], path, file_id)
    )
    if taken is not None:
        return False
    txn.execute(
        "UPDATE files SET path = ?, filename = ?, updated_at = ? WHERE id = ?",
        (path, filename, now, file_id),
    )
    return True


@dataclass(frozen=True)
class Listing:
    """Which of an owner's files a listing shows: all, those whose path starts with
    ``prefix``, or the one at ``path``."""

    prefix: str = ""
    path: str | None = None


EVERY_FILE = Listing()


def like_prefix(text: str) -> str:
    r"""A LIKE pattern for text starting with ``text``, its own %, _ and \ taken literally.

    >>> like_prefix("50%_off/")
    '50\\%\\_off/%'
    """
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _listing_where(owner_id: int, listing: Listing) -> tuple[str, list[object]]:
    where = "owner_id = ?"
    params: list[object] = [owner_id]
    if listing.path is not None:
        where += " AND path = ?"
        params.append(listing.path)
    if listing.prefix:
        # SQLite's LIKE ignores the case of ASCII letters: the substr() comparison makes the
        # match exact on both databases (both count characters, as len() does).
        where += " AND path LIKE ? ESCAPE '\\' AND substr(path, 1, ?) = ?"
        params += [like_prefix(listing.prefix), len(listing.prefix), listing.prefix]
    return where, params


def count_files(txn: Txn, owner_id: int, listing: Listing = EVERY_FILE) -> int:
    """How many of the owner's files the listing shows: every file's count is the counter
    kept beside the account (``users.file_count``, kept in the transactions that add and
    delete files), so it costs one row at any catalogue size; a ``prefix`` or ``path``
    counts its range of the (owner, path) index."""
    if listing == EVERY_FILE:
        return int(txn.scalar("SELECT file_count FROM users WHERE id = ?", (owner_id,)) or 0)
    where, params = _listing_where(owner_id, listing)
    return int(txn.scalar(f"SELECT COUNT(*) FROM files WHERE {where}", params))


def _by_path(txn: Txn) -> str:
    """The listing's order column: code point order on both databases (SQLite's BINARY
    compares UTF-8 bytes; PostgreSQL needs the "C" collation, which its index has too)."""
    return 'path COLLATE "C"' if txn.dialect == "postgresql" else "path"


def list_files(
    txn: Txn, owner_id: int, limit: int, offset: int, listing: Listing = EVERY_FILE
) -> tuple[int, list[StoredFile]]:
    """How many of the owner's files the listing shows, and one page of them by path (in
    code point order on both databases), then id.

    A page past the middle is read from the far end (descending, a smaller OFFSET) and turned
    round, so the first and last pages of ``?page=`` cost the same; pages near the middle
    still step over half the files (the keyset cursor, ``files_after``, never does)."""
    count = count_files(txn, owner_id, listing)
    if not limit or offset >= count:
        return count, []
    where, params = _listing_where(owner_id, listing)
    by_path = _by_path(txn)
    if offset + limit / 2 <= count / 2:
        rows = txn.all(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE {where} ORDER BY {by_path}, id"
            " LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
    else:
        from_end = max(0, count - offset - limit)
        rows = txn.all(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE {where}"
            f" ORDER BY {by_path} DESC, id DESC LIMIT ? OFFSET ?",
            [*params, min(limit, count - offset), from_end],
        )
        rows.reverse()
    return count, _files(txn, rows)


def files_after(
    txn: Txn,
    owner_id: int,
    limit: int,
    after: tuple[str, str] | None,
    listing: Listing = EVERY_FILE,
) -> tuple[list[StoredFile], bool]:
    """Up to ``limit`` of the owner's files the listing shows that come after the (path, id)
    ``after`` (from the first when None), in the listing's order, and whether more follow.

    A keyset page: the (owner, path, id) index is entered at ``after`` and read forward, so the
    last page costs what the first does. The cursor is only a position: files added or deleted
    between pages neither shift the later ones nor repeat earlier ones."""
    where, params = _listing_where(owner_id, listing)
    by_path = _by_path(txn)
    if after is not None:
        # The first condition is a range on the index's second column; the second picks the
        # files at ``after``'s own path past its id (none: a path is unique per owner).
        where += f" AND {by_path} >= ? AND ({by_path} > ? OR id > ?)"
        params += [after[0], after[0], after[1]]
    rows = txn.all(
        f"SELECT {_FILE_COLUMNS} FROM files WHERE {where} ORDER BY {by_path}, id LIMIT ?",
        [*params, limit + 1],
    )
    return _files(txn, rows[:limit]), len(rows) > limit


def path_of(txn: Txn, file_id: str) -> str:
    return str(txn.scalar("SELECT path FROM files WHERE id = ?", (file_id,)))


def staff_ids(txn: Txn) -> list[int]:
    """Every active staff account, by id (the order event counters are locked in)."""
    rows = txn.all("SELECT id FROM users WHERE is_staff = 1 AND is_active = 1 ORDER BY id")
    return [int(row[0]) for row in rows]


def files_using_blob(txn: Txn, blob_id: int) -> list[tuple[int, str, str]]:
    """(owner, file id, path) of every file whose current version is this blob's content,
    ordered by owner (so a transaction that records events for several owners locks their
    event counters in one order)."""
    rows = txn.all(
        "SELECT f.owner_id, f.id, f.path FROM files f JOIN versions v"
        " ON v.file_id = f.id AND v.number = f.current_version"
        " WHERE v.blob_id = ? ORDER BY f.owner_id, f.id",
        (blob_id,),
    )
    return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


def add_version(
    txn: Txn,
    owner_id: int,
    file_id: str | None,
    new_file_id: str,
    filename: str,
    blob: Blob,
    now: float,
    content_type: str = "",
    path: str | None = None,
    former: str | None = None,
) -> tuple[str, int]:
    """Add ``blob`` as the newest version of a file; returns (file id, version number).

    ``file_id`` names an existing file of the owner (the upload's ``parent``). Without it, the
    owner's file at ``path`` (default: the filename) gets the new version, else the one at
    ``former`` (where a file stored before paths were NFC-normalised may be), else
    ``new_file_id`` is created at ``path``. The caller has checked that a given ``file_id``
    belongs to the owner.
    """
    if file_id is None:
        at = filename if path is None else path
        file_id = _file_at(txn, owner_id, at)
        if file_id is None and former is not None and former != at:
            file_id = _file_at(txn, owner_id, former)
        if file_id is None:
            # Made, or found when another transaction made it since (PostgreSQL waits for
            # that one to commit, then the SELECT sees its row).
            made = txn.execute(
                f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, 0, ?, ?, ?)"
                " ON CONFLICT (owner_id, path) DO NOTHING",
                (new_file_id, owner_id, filename, now, now, at),
            )
            if made:
                _count_file(txn, owner_id, 1)
            file_id = _file_at(txn, owner_id, at)
            assert file_id is not None
    number = 1 + int(
        txn.scalar("SELECT MAX(number) FROM versions WHERE file_id = ?", (file_id,)) or 0
    )
    txn.execute(
        "UPDATE files SET current_version = ?, updated_at = ? WHERE id = ?",
        (number, now, file_id),
    )
    txn.execute(
        "INSERT INTO versions (file_id, number, blob_id, filename, created_at, content_type)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (file_id, number, blob.id, filename, now, content_type),
    )
    return file_id, number


def _count_file(txn: Txn, owner_id: int, by: int) -> None:
    """Keep ``users.file_count`` (what an unfiltered listing's ``count`` reads) in step with
    the owner's files, in the transaction that adds or deletes one."""
    txn.execute("UPDATE users SET file_count = file_count + ? WHERE id = ?", (by, owner_id))


def _file_at(txn: Txn, owner_id: int, path: str) -> str | None:
    """The owner's file at ``path``, locked for this transaction."""
    row = txn.one(
        "SELECT id FROM files WHERE owner_id = ? AND path = ?" + txn.for_update, (owner_id, path)
    )
    return None if row is None else str(row[0])


def delete_file(txn: Txn, file_id: str, now: float) -> list[tuple[str, int]]:
    """Delete a file and its versions; returns (sha256, id) of blobs no version uses now."""
    blob_ids = [
        int(row[0])
        for row in txn.all("SELECT DISTINCT blob_id FROM versions WHERE file_id = ?", (file_id,))
    ]
    txn.execute("DELETE FROM versions WHERE file_id = ?", (file_id,))
    owner = txn.scalar("SELECT owner_id FROM files WHERE id = ?", (file_id,))
    if txn.execute("DELETE FROM files WHERE id = ?", (file_id,)):
        _count_file(txn, int(owner), -1)
    return _drop_unused_blobs(txn, blob_ids, now)


def _drop_unused_blobs(txn: Txn, blob_ids: list[int], now: float) -> list[tuple[str, int]]:
    orphans = []
    for blob_id in blob_ids:
        if txn.scalar("SELECT 1 FROM versions WHERE blob_id = ? LIMIT 1", (blob_id,)) is None:
            sha256, remote_state = txn.one(
                "SELECT sha256, remote_state FROM blobs WHERE id = ?", (blob_id,)
            ) or ("", "local")
            # Its replicas go too: queued, so nodes that are down now are cleaned later.
            for (node,) in txn.all("SELECT node FROM replicas WHERE blob_id = ?", (blob_id,)):
                nodestore.queue_deletion(txn, node, replica_key(blob_id, sha256))
            txn.execute("DELETE FROM replicas WHERE blob_id = ?", (blob_id,))
            queue_object_deletion(txn, sha256, remote_state, now)
            txn.execute("DELETE FROM blob_parts WHERE blob_id = ?", (blob_id,))
            txn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
            orphans.append((sha256, blob_id))
    return orphans


def queue_object_deletion(txn: Txn, sha256: str, remote_state: str, now: float) -> None:
    """A deleted blob's S3 object goes too, once no blob uses that content (``proxy.remote.tier``
    removes it, and retries while S3 is away). A blob never mirrored has no object (an open
    multipart upload for it is aborted by its node once the blob leaves its want-list)."""
    if remote_state == "local":
        return
    prefix = txn.scalar("SELECT prefix FROM s3_connections WHERE active = 1")
    if prefix is None:
        return
    txn.execute(
        "INSERT INTO s3_deletions (object_key, sha256, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (object_key) DO NOTHING",
        (object_key(prefix, sha256), sha256, now),
    )
