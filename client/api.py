"""``PyArchiveClient``: the proxy's JSON API over one keep-alive HTTP connection.

Synchronous and standard-library only. Uploads are chunked and resumable: chunk bodies are
memoryview slices of an ``mmap`` of the source file (no copies in Python), the file's md5 is
computed by a background thread while chunks are on the wire, and after a dropped connection or
a 5xx the client asks the server for its offset and continues from there.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

from client import _download
from client._download import RangeReader
from client._http import ConnectionPool, Json, Response
from client._ranges import ByteRange
from client._upload import (
    EMPTY_MD5,
    ChunkedUpload,
    DigestsCallback,
    ProgressCallback,
    StartedCallback,
    upload_empty,
    upload_whole,
)
from client.errors import ProtocolError

WHOLE_LIMIT = 256 * 1024  # a file this small goes up in one request (nothing worth resuming)
_USER_AGENT = "pyarchive-client/0.1"


class PyArchiveClient:
    """A client of one PyArchive proxy, e.g. ``PyArchiveClient("http://127.0.0.1:8080")``.

    ``base_url`` may carry a path prefix. ``timeout`` bounds every socket operation, in seconds.
    ``sleep`` is how the client waits between upload retries (tests pass a recorder).
    Not thread-safe: use one client per thread. Close it, or use it as a context manager.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 60,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._pool = ConnectionPool(timeout)
        self._sleep = sleep

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- accounts ---------------------------------------------------------------------------

    def register(self, username: str, password: str, email: str | None = None) -> Json:
        """Create an account; the server's JSON answer."""
        fields = {"username": username, "password": password}
        if email is not None:
            fields["email"] = email
        return self._json("POST", "/api/auth/register", fields)

    def login(self, username: str, password: str) -> str:
        """Get a token for the account, keep it for later requests, and return it."""
        answer = self._json(
            "POST", "/api-token-auth/", {"username": username, "password": password}
        )
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("login answer has no token")
        self.token = token
        return token

    # -- uploads ----------------------------------------------------------------------------

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        filename: str | None = None,
        parent: int | str | None = None,
        chunk_size: int = 8 * 2**20,
        resume_url: str | None = None,
        on_progress: ProgressCallback | None = None,
        retries: int | None = 5,
        on_started: StartedCallback | None = None,
        remote_path: str | None = None,
        on_digests: DigestsCallback | None = None,
    ) -> Json:
        """Upload the file at ``path`` and return the completed upload's JSON (with ``file_id``).

        ``filename`` defaults to the file's base name; ``parent`` names the file this one is a
        new version of. ``resume_url`` continues an earlier upload from the server's offset.
        Connection errors, timeouts and 5xx answers are retried up to ``retries`` times in a
        row with a short backoff, resuming from the offset the server reports; a refused chunk
        ("Offsets do not match") continues from the offset in the refusal.
        ``retries`` None never gives up on such failures. ``remote_path`` is where the file goes
        among the user's (``folder/name``; a file already there gets a new version).
        ``on_progress(sent, total)`` follows acknowledged bytes; ``on_started(url)`` hands over
        the upload's URL as soon as it exists, to be kept for ``resume_url`` (an exception that
        ends an upload also names it in a note); ``on_digests(md5, sha256)`` gets the digests of
        the bytes read, to compare with what the server stored.

        A file of at most ``WHOLE_LIMIT`` bytes that fits in one chunk goes up in a single
        ``POST /storage/tmp-upload/?filename=NAME&md5=MD5`` with the file as its body (nothing
        worth resuming, one request instead of two). A zero-byte file, likewise, is created
        with a single
        ``POST /storage/tmp-upload/?filename=NAME[&parent=ID]&md5=d41d8cd98f00b204e9800998ecf8427e``
        with an empty body, answered like a completion (``resume_url`` is then ignored).

        The file must not change (and above all not shrink) while it is being uploaded: its
        bytes are read through an ``mmap``, and the md5 check at the end catches a changed file.
        """
        name = filename if filename is not None else os.path.basename(os.fspath(path))
        query = {"filename": name} if parent is None else {"filename": name, "parent": str(parent)}
        if remote_path is not None:
            query["path"] = remote_path
        start_url = self._url("/storage/tmp-upload/", query)
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            if size == 0:
                done = upload_empty(
                    self._send,
                    self._sleep,
                    self._url("/storage/tmp-upload/", {**query, "md5": EMPTY_MD5}),
                    retries,
                )
                if on_progress is not None:
                    on_progress(0, 0)
                if on_digests is not None:
                    on_digests(EMPTY_MD5, hashlib.sha256(b"").hexdigest())
                return done
            if size <= min(WHOLE_LIMIT, chunk_size) and resume_url is None:
                data = source.read(WHOLE_LIMIT + 1)
                if len(data) == size:  # else it is changing: the chunked way will tell
                    md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
                    if on_digests is not None:
                        on_digests(md5, sha256)
                    url = self._url("/storage/tmp-upload/", {**query, "md5": md5})
                    done = upload_whole(self._send, self._sleep, url, data, retries)
                    if on_progress is not None:
                        on_progress(size, size)
                    return done
            with (
                mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
                memoryview(mapped) as view,
            ):
                return ChunkedUpload(
                    self._send,
                    self._sleep,
                    view,
                    start_url,
                    resume_url=None
                    if resume_url is None
                    else urljoin(self.base_url + "/", resume_url),
                    chunk_size=chunk_size,
                    retries=retries,
                    on_progress=on_progress,
                    on_started=on_started,
                    on_digests=on_digests,
                ).run()

    def upload_status(self, url: str) -> Json:
        """The upload session at ``url`` (its ``offset`` is where to resume)."""
        return self._send("GET", url, retry_stale=True).raise_for_status().json()

    def abort(self, url: str) -> None:
        """Abandon the upload session at ``url``; the server drops its bytes."""
        self._send("DELETE", url, retry_stale=True).raise_for_status()

    # -- stored files -----------------------------------------------------------------------

    def list_files(self, page: int = 1, **query: str | int) -> Json:
        """One page of the user's files: ``{count, next, previous, results}``; ``query`` adds
        the listing's other arguments (``prefix``, ``page_size``, ``path``)."""
        asked = {"page": str(page), **{k: str(v) for k, v in query.items()}}
        return self._json("GET", self._url("/storage/files/", asked))

    def walk_files(self, **query: str | int) -> Iterator[Json]:
        """Every page of the user's files, by position (``?after=``): the first page, then
        each ``next`` link's, until there is none. ``query`` as for ``list_files``.

        Only the ``next`` link's query is taken; the request goes to this client's proxy."""
        asked = {**{k: str(v) for k, v in query.items()}, "after": ""}
        while True:
            found = self._json("GET", self._url("/storage/files/", asked))
            yield found
            following = found.get("next")
            if not following:
                return
            asked = dict(parse_qsl(urlsplit(str(following)).query, keep_blank_values=True))

    def me(self) -> Json:
        """The caller's account: ``username``, ``used`` and ``quota`` among others."""
        return self._json("GET", "/api/me")

    def move(self, file_id: int | str, path: str) -> Json:
        """Give the file another path among the user's (a rename, versions and all)."""
        return self._json("PATCH", self._file_url(file_id), {"path": path})

    def rollback(self, file_id: int | str, version: int) -> Json:
        """Make ``version`` current again (as a new version); the file's JSON."""
        return self._json("POST", self._file_url(file_id) + "rollback/", {"version": version})

    def cache(self, file_id: int | str) -> Json:
        """Bring a remote-only file back onto the storage nodes (a restore from S3)."""
        return self._send("POST", self._file_url(file_id) + "cache").raise_for_status().json()

    def uncache(self, file_id: int | str) -> Json:
        """Release the local copies of a file that is backed up (and verified) in S3."""
        url = self._file_url(file_id) + "uncache"
        return self._send("POST", url).raise_for_status().json()

    def file_info(self, file_id: int | str) -> Json:
        return self._json("GET", self._file_url(file_id))

    def delete_file(self, file_id: int | str) -> None:
        self._send("DELETE", self._file_url(file_id), retry_stale=True).raise_for_status()

    def download(
        self,
        file_id: int | str,
        dest_path: str | os.PathLike[str],
        *,
        version: int | None = None,
        byte_range: ByteRange | None = None,
        chunk: int = 1 << 20,
    ) -> int:
        """Save the file (or ``byte_range``, HTTP-style inclusive ``(first, last)``, ``last``
        None for "to the end") to ``dest_path``, reading ``chunk`` bytes at a time; returns the
        number of bytes written, which is checked against what the server announced.
        """
        query = None if version is None else {"version": str(version)}
        url = self._url(f"/storage/download/{quote(str(file_id), safe='')}/", query)
        return _download.download(self._pool, url, self._auth(), Path(dest_path), byte_range, chunk)

    def range_reader(self, file_id: int | str, *, version: int | None = None) -> RangeReader:
        """Byte ranges of the file, each its own request (see ``RangeReader``); one per thread,
        as the client itself is."""
        query = None if version is None else {"version": str(version)}
        url = self._url(f"/storage/download/{quote(str(file_id), safe='')}/", query)
        return _download.RangeReader(self._pool, url, {**self._auth(), "User-Agent": _USER_AGENT})

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """An absolute URL on the proxy for an absolute ``path``; absolute URLs pass through."""
        url = path if "://" in path else self.base_url + path
        return f"{url}?{urlencode(query)}" if query else url

    def _file_url(self, file_id: int | str) -> str:
        return self._url(f"/storage/files/{quote(str(file_id), safe='')}/")

    def _auth(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"JWT {self.token}"}

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        retry_stale: bool = False,
    ) -> Response:
        """One request with the client's headers; the answer read in full, whatever its status."""
        full = {
            "User-Agent": _USER_AGENT,
            "Accept": "application/json",
            **self._auth(),
            **(headers or {}),
        }
        return self._pool.request(
            method, self._url(url), headers=full, body=body, retry_stale=retry_stale
        )

    def _json(self, method: str, url: str, fields: Mapping[str, Any] | None = None) -> Json:
        """A JSON call: ``fields`` as the body, the answer's JSON object back (or ApiError)."""
        if fields is None:
            return self._send(method, url, retry_stale=method == "GET").raise_for_status().json()
        body = json.dumps(fields).encode()
        headers = {"Content-Type": "application/json"}
        return self._send(method, url, body=body, headers=headers).raise_for_status().json()
