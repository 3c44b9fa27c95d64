"""The resumable chunked upload: send chunks, recover the offset after failures, complete.

The loop's only memory is ``(url, offset)``: whenever something goes wrong it asks the server
where the upload stands and carries on from there, so a dropped connection, a restarted proxy
or a chunk the server refused costs at most one chunk's worth of bytes.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Mapping
from typing import NoReturn, Protocol
from urllib.parse import urljoin

from client._http import Json, Response, api_error
from client._md5 import BackgroundMd5
from client._ranges import content_range
from client.errors import ApiError, ProtocolError

ProgressCallback = Callable[[int, int], None]
"""Called as ``on_progress(acknowledged_bytes, total_bytes)`` after each acknowledged chunk,
and after learning the server's offset on resuming."""

DigestsCallback = Callable[[str, str], None]
"""Called as ``on_digests(md5, sha256)`` with the digests of the bytes read, before completion."""

StartedCallback = Callable[[str], None]
"""Called with the upload's URL once the server has created it (persist it to resume later)."""

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
OCTETS = "application/octet-stream"
STATUS_COMPLETE = 2
_TRANSIENT_STATUSES = frozenset({408, 429})


class Sender(Protocol):
    """Sends one authenticated request and reads its whole answer."""

    def __call__(
        self,
        method: str,
        url: str,
        *,
        body: bytes | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        retry_stale: bool = False,
    ) -> Response: ...


class _Transient(Exception):
    """A failure that trying again may cure: a connection error, a timeout or a 5xx answer."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _OffsetMismatch(Exception):
    """The server holds a different offset than the chunk assumed; it says which."""

    def __init__(self, error: ApiError, offset: int) -> None:
        super().__init__(error)
        self.error = error
        self.offset = offset


def backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row.

    >>> [backoff(n) for n in range(1, 7)]
    [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    """
    return float(min(0.2 * 2 ** (failures - 1), 5.0))


def classified(
    send: Sender,
    method: str,
    url: str,
    *,
    body: bytes | memoryview | None = None,
    headers: Mapping[str, str] | None = None,
    retry_stale: bool = False,
) -> Response:
    """``send`` the request; failures become ``_Transient``, ``_OffsetMismatch`` or ApiError."""
    try:
        response = send(method, url, body=body, headers=headers, retry_stale=retry_stale)
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(exc) from exc
    if response.status < 400:
        return response
    error = api_error(response.status, response.reason, response.body)
    if response.status >= 500 or response.status in _TRANSIENT_STATUSES:
        raise _Transient(error)
    offset = error.body.get("offset")
    if response.status in (400, 409) and type(offset) is int:
        raise _OffsetMismatch(error, offset)
    raise error


class ChunkedUpload:
    """One upload of ``view``'s bytes: started at ``start_url`` or resumed at ``resume_url``."""

    def __init__(
        self,
        send: Sender,
        sleep: Callable[[float], None],
        view: memoryview,
        start_url: str,
        *,
        resume_url: str | None,
        chunk_size: int,
        retries: int | None,
        on_progress: ProgressCallback | None,
        on_started: StartedCallback | None,
        on_digests: DigestsCallback | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if len(view) == 0:
            raise ValueError("an empty file has no chunks; see upload_empty")
        self._send = send
        self._sleep = sleep
        self._view = view
        self._total = len(view)
        self._start_url = start_url
        self._url = resume_url
        self._offset = 0
        self._chunk_size = chunk_size
        self._retries = retries
        self._failures = 0
        self._on_progress = on_progress
        self._on_started = on_started
        self._on_digests = on_digests

    def run(self) -> Json:
        """Send every byte the server lacks, then complete with the md5; the completed JSON."""
        md5 = BackgroundMd5(self._view)
        try:
            return self._loop(md5)
        except Exception as exc:
            if self._url is not None:
                exc.add_note(f"the upload can be resumed with resume_url={self._url!r}")
            raise
        finally:
            md5.stop()

    def _loop(self, md5: BackgroundMd5) -> Json:
        must_sync = self._url is not None
        while True:
            try:
                if must_sync:
                    info = self._sync()
                    must_sync = False
                    if info.get("status") == STATUS_COMPLETE:
                        return info
                    if self._on_progress is not None:  # where the server stands: resumed
                        self._on_progress(self._offset, self._total)
                elif self._url is None or self._offset < self._total:
                    self._send_chunk()
                else:
                    digest = md5.hexdigest()
                    if self._on_digests is not None:
                        self._on_digests(digest, md5.sha256_hexdigest())
                    return self._complete(digest)
            except _OffsetMismatch as mismatch:
                self._count_failure(mismatch.error)
                self._offset = self._checked_offset(mismatch.offset)
            except _Transient as failure:
                self._count_failure(failure.error)
                self._sleep(backoff(self._failures))
                must_sync = self._url is not None

    def _send_chunk(self) -> None:
        start = self._offset
        stop = min(start + self._chunk_size, self._total)
        headers = {
            "Content-Type": OCTETS,
            "Content-Range": content_range(start, stop, self._total),
        }
        with self._view[start:stop] as body:
            response = classified(
                self._send,
                "PUT",
                self._url or self._start_url,
                body=body,
                headers=headers,
            )
        info = response.json()
        if self._url is None:
            self._url = self._upload_url(info)
            if self._on_started is not None:
                self._on_started(self._url)
        offset = self._checked_offset(info.get("offset"))
        if offset <= start:
            raise ProtocolError(f"chunk at {start} was accepted but the offset is {offset}")
        self._offset = offset
        self._failures = 0
        if self._on_progress is not None:
            self._on_progress(offset, self._total)

    def _sync(self) -> Json:
        assert self._url is not None
        info = classified(self._send, "GET", self._url, retry_stale=True).json()
        self._offset = self._checked_offset(info.get("offset"))
        return info

    def _complete(self, md5: str) -> Json:
        assert self._url is not None
        body = json.dumps({"md5": md5}).encode()
        headers = {"Content-Type": "application/json"}
        return classified(self._send, "POST", self._url, body=body, headers=headers).json()

    def _upload_url(self, info: Json) -> str:
        url = info.get("url")
        if not isinstance(url, str) or not url:
            raise ProtocolError(f"the upload's answer has no url: {info!r:.300}")
        return urljoin(self._start_url, url)

    def _checked_offset(self, offset: object) -> int:
        if type(offset) is not int or not 0 <= offset <= self._total:
            raise ProtocolError(f"offset {offset!r} is not within the {self._total}-byte file")
        return offset

    def _count_failure(self, error: Exception) -> None:
        """One more failure in a row; past ``retries`` (None: never) the error ends it."""
        self._failures += 1
        if self._retries is not None and self._failures > self._retries:
            _reraise(error)


def upload_empty(
    send: Sender, sleep: Callable[[float], None], url: str, retries: int | None
) -> Json:
    """Create a zero-byte file with one ``POST`` to ``url`` (which carries the empty md5)."""
    return upload_whole(send, sleep, url, b"", retries)


def upload_whole(
    send: Sender, sleep: Callable[[float], None], url: str, body: bytes, retries: int | None
) -> Json:
    """Send a small file in one ``POST`` to ``url`` (which carries its md5), answered like a
    completion: one request instead of a chunk and a completion."""
    failures = 0
    while True:
        try:
            return classified(send, "POST", url, body=body, headers={"Content-Type": OCTETS}).json()
        except _OffsetMismatch as mismatch:
            raise mismatch.error from None
        except _Transient as failure:
            failures += 1
            if retries is not None and failures > retries:
                _reraise(failure.error)
            sleep(backoff(failures))


def _reraise(error: Exception) -> NoReturn:
    raise error from None
