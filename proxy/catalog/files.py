"""Stored files: listing, versions, rollback, deletion, and what a download serves."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from common.db import Database, Txn
from common.errors import BadRequest, Conflict, NotFound
from common.hex32 import is_hex32
from proxy.catalog import store
from proxy.catalog.store import EVERY_FILE, Listing, StoredFile, Version
from proxy.cluster import nodestore
from proxy.events import kinds
from proxy.events.emit import NO_WAKING, Emitter, Waker
from proxy.uploads.rules import validate_listing_text, validate_path
from proxy.uploads.staging import StagingArea

# ASCII digits only: str.isdigit() also says yes to "²" (which int() refuses) and "١".
_NUMBER = re.compile(r"[0-9]{1,9}")
MAX_PAGE_SIZE = 1000  # the most files one ``?page_size=`` may ask for


@dataclass(frozen=True)
class Page:
    number: int
    offset: int
    has_next: bool
    has_previous: bool


def paginate(count: int, page: str | None, page_size: int) -> Page:
    """Which slice a ``?page=`` asks for; the first page always exists, even when empty.

    >>> paginate(45, "3", 20)
    Page(number=3, offset=40, has_next=False, has_previous=True)
    >>> paginate(0, None, 20)
    Page(number=1, offset=0, has_next=False, has_previous=False)
    """
    if page is None or page == "":
        number = 1
    elif _NUMBER.fullmatch(page):
        number = int(page)
    else:
        raise NotFound("Invalid page.")
    pages = max(1, math.ceil(count / page_size))
    if number < 1 or number > pages:
        raise NotFound("Invalid page.")
    return Page(number, (number - 1) * page_size, number < pages, number > 1)


@dataclass(frozen=True)
class CursorPage:
    """A keyset page (``?after=``): how many files the listing shows in all, the page's
    files and, when more follow, the cursor to the next."""

    count: int
    files: list[StoredFile]
    next_cursor: str | None


def _cursor_check(payload: bytes) -> str:
    return hashlib.sha256(b"pyarchive listing cursor\0" + payload).hexdigest()[:12]


def cursor_token(path: str, file_id: str) -> str:
    """The opaque ``?after=`` token for the position just after the file at (path, id).

    >>> cursor_token("a/b.txt", "0" * 32)
    'WyJhL2IudHh0IiwiMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAiXQ.60bff299a78a'
    """
    payload = json.dumps([path, file_id], ensure_ascii=False, separators=(",", ":")).encode()
    text = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    return f"{text}.{_cursor_check(payload)}"


def parse_cursor(token: str) -> tuple[str, str] | None:
    """The (path, id) position an ``?after=`` token names; "" is the listing's start (None).

    The token is a position among the caller's own files, nothing more (the query is still
    the caller's files only), so it is not signed; its check digits turn a token damaged on
    the way, or made up, into a 400 rather than a silently shifted page.

    >>> parse_cursor(cursor_token("a/b.txt", "f" * 32)) == ("a/b.txt", "f" * 32)
    True
    >>> parse_cursor("WyJhIiwiYiJd.000000000000")
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: Invalid cursor.
    """
    if token == "":
        return None
    text, _, check = token.partition(".")
    try:
        payload = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if not (text.isascii() and check == _cursor_check(payload)):
            raise ValueError(token)
        path, file_id = json.loads(payload.decode("utf-8"))
        if not (isinstance(path, str) and isinstance(file_id, str) and is_hex32(file_id)):
            raise ValueError(token)
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest("Invalid cursor.", field="after") from None
    return path, file_id


def parse_page_size(value: str | None, default: int) -> int:
    """A listing's ``?page_size=``: 1 to ``MAX_PAGE_SIZE``; none (or empty): ``default``.

    >>> parse_page_size("1000", 20), parse_page_size(None, 20), parse_page_size("", 20)
    (1000, 20, 20)
    >>> parse_page_size("0", 20)
    Traceback (most recent call last):
    ...
    common.errors.BadRequest: page_size must be a whole number from 1 to 1000
    """
    if value is None or value == "":
        return default
    if not _NUMBER.fullmatch(value) or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise BadRequest(
            f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}", field="page_size"
        )
    return int(value)


def parse_listing(prefix: str | None, path: str | None) -> Listing:
    """What ``?prefix=`` and ``?path=`` ask a listing for (both NFC, as paths are kept);
    an empty one asks for nothing."""
    return Listing(
        prefix=validate_listing_text(prefix or "", "prefix"),
        path=validate_listing_text(path, "path") if path else None,
    )


def validate_file_id(file_id: str) -> str:
    if not is_hex32(file_id):
        raise NotFound("File not found")
    return file_id


def parse_version(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():  # JSON's 3.0 is the integer 3
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _NUMBER.fullmatch(value):
        number = int(value)
    else:
        raise BadRequest("version must be a positive whole number", field="version")
    if number < 1:
        raise BadRequest("version must be a positive whole number", field="version")
    return number


class FileService:
    def __init__(
        self,
        *,
        db: Database,
        staging: StagingArea,
        clock: IReactorTime,
        page_size: int,
        waker: Waker = NO_WAKING,
    ) -> None:
        self._db = db
        self._staging = staging
        self._clock = clock
        self.page_size = page_size
        self._waker = waker

    async def page(
        self,
        user_id: int,
        page: str | None,
        page_size: int | None = None,
        listing: Listing = EVERY_FILE,
    ) -> tuple[int, Page, list[StoredFile]]:
        """One page of the user's files the listing shows, by path then id (``page_size``:
        files per page, default the configured size)."""
        size = page_size or self.page_size
        count = await self.count(user_id, listing)
        where = paginate(count, page, size)
        count, files = await self._db.run(store.list_files, user_id, size, where.offset, listing)
        return count, where, files

    async def count(self, user_id: int, listing: Listing = EVERY_FILE) -> int:
        """How many of the user's files the listing shows (every page's ``count``)."""
        return await self._db.run(store.count_files, user_id, listing)

    async def page_after(
        self, user_id: int, after: str, page_size: int, listing: Listing = EVERY_FILE
    ) -> CursorPage:
        """The keyset page after the ``?after=`` token (from the start when ""): as fast at
        the end of 100,000 files as at the start."""
        position = parse_cursor(after)

        def read(txn: Txn) -> tuple[int, list[StoredFile], bool]:
            count = store.count_files(txn, user_id, listing)
            return count, *store.files_after(txn, user_id, page_size, position, listing)

        count, files, more = await self._db.run(read)
        last = files[-1] if files and more else None
        return CursorPage(count, files, None if last is None else cursor_token(last.path, last.id))

    async def get(self, user_id: int | None, file_id: str) -> StoredFile:
        """The caller's file (any owner's when ``user_id`` is None: staff only)."""
        found = await self._db.run(store.get_file, validate_file_id(file_id), user_id)
        if found is None:
            raise NotFound("File not found")
        return found

    async def delete(self, user_id: int, file_id: str) -> None:
        emitter = Emitter(self._clock.seconds())
        orphans = await self._db.run(self._delete_txn, user_id, validate_file_id(file_id), emitter)
        self._waker.wake(emitter.users)
        if orphans:
            await deferToThread(self._staging.remove_blobs, orphans)

    @staticmethod
    def _delete_txn(
        txn: Txn, user_id: int, file_id: str, emitter: Emitter
    ) -> list[tuple[str, int]]:
        found = store.get_file(txn, file_id, user_id, lock=True)
        if found is None:
            raise NotFound("File not found")
        orphans = store.delete_file(txn, file_id, emitter.now)
        emitter.emit(txn, user_id, kinds.FILE_DELETED, file_id=file_id, path=found.path)
        return orphans

    async def move(self, user_id: int, file_id: str, path: object) -> StoredFile:
        """Move a file to another path of its owner's (a rename); 409 if one is there."""
        wanted = validate_path(path)
        emitter = Emitter(self._clock.seconds())
        await self._db.run(self._move_txn, user_id, validate_file_id(file_id), wanted, emitter)
        self._waker.wake(emitter.users)
        return await self.get(user_id, file_id)

    @staticmethod
    def _move_txn(txn: Txn, user_id: int, file_id: str, path: str, emitter: Emitter) -> None:
        if store.get_file(txn, file_id, user_id, lock=True) is None:
            raise NotFound("File not found")
        filename = path.rpartition("/")[2]
        if not store.move_file(txn, file_id, path, filename, emitter.now):
            raise Conflict("Another of your files is at that path", field="path")
        emitter.emit(txn, user_id, kinds.FILE_MOVED, file_id=file_id, path=path, filename=filename)

    async def rollback(self, user_id: int, file_id: str, number: object) -> StoredFile:
        wanted = parse_version(number)
        if wanted is None:
            raise BadRequest("version is required", field="version")
        emitter = Emitter(self._clock.seconds())
        await self._db.run(self._rollback_txn, user_id, validate_file_id(file_id), wanted, emitter)
        self._waker.wake(emitter.users)
        return await self.get(user_id, file_id)

    @staticmethod
    def _rollback_txn(txn: Txn, user_id: int, file_id: str, number: int, emitter: Emitter) -> None:
        found = store.get_file(txn, file_id, user_id, lock=True)
        if found is None:
            raise NotFound("File not found")
        version = found.version(number)
        if version is None:
            raise NotFound(f"File has no version {number}", field="version")
        _, current = store.add_version(
            txn, user_id, file_id, "", version.filename, version.blob, emitter.now,
            version.content_type,
        )  # fmt: skip
        emitter.emit(
            txn, user_id, kinds.FILE_ROLLED_BACK, file_id=file_id, path=found.path, version=current
        )

    async def for_download(
        self, user_id: int, file_id: str, number: object
    ) -> tuple[StoredFile, Version]:
        found = await self.get(user_id, file_id)
        version = found.version(parse_version(number))
        if version is None:
            raise NotFound("File has no such version", field="version")
        return found, version

    async def replicas(self, stored: StoredFile) -> list[dict[str, str]]:
        """Where the current version's content is kept: ``[{node, zone, state}]``."""
        return await self._db.run(self._replicas_txn, stored.current.blob.id)

    @staticmethod
    def _replicas_txn(txn: Txn, blob_id: int) -> list[dict[str, str]]:
        zones = {n.name: n.zone for n in nodestore.list_nodes(txn)}
        return [
            {"node": r.node, "zone": zones.get(r.node, ""), "state": r.state}
            for r in nodestore.replicas_of(txn, [blob_id])[blob_id]
        ]
