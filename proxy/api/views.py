"""JSON shapes of uploads and files, as the seed's API showed them, and of the events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from proxy.catalog.files import CursorPage, Page
from proxy.catalog.store import StoredFile, Version
from proxy.events.eventstore import Slice
from proxy.uploads.uploadstore import COMPLETE, Upload


def isotime(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def upload_json(upload: Upload, base_url: str) -> dict[str, Any]:
    complete = upload.status == COMPLETE
    download = f"{base_url}/storage/download/{upload.file_id}/" if complete else None
    return {
        "id": upload.id,
        "url": f"{base_url}/storage/tmp-upload/{upload.id}/",
        "file": download,
        "filename": upload.filename,
        "path": upload.path or upload.filename,
        "offset": upload.received,
        "total": upload.total,
        "created_at": isotime(upload.created_at),
        "status": upload.status,
        "completed_at": isotime(upload.completed_at),
        "user": upload.owner_id,
        "parent": upload.parent_id,
        "expires": isotime(upload.expires_at),
        "file_id": upload.file_id,
        "version": upload.version,
        "sha256": upload.sha256,
    }


def _version_json(file_id: str, version: Version, base_url: str) -> dict[str, Any]:
    return {
        "number": version.number,
        "filename": version.filename,
        "size": version.blob.size,
        "md5": version.blob.md5,
        "sha256": version.blob.sha256,
        "created_at": isotime(version.created_at),
        "download_url": f"{base_url}/storage/download/{file_id}/?version={version.number}",
    }


def file_json(
    stored: StoredFile, base_url: str, replicas: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    current = stored.current
    shown: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    if current.remote_state:
        shown |= {"remote_state": current.remote_state, "remote_verified": current.remote_verified}
    return {
        **shown,
        "id": stored.id,
        "filename": stored.filename,
        "path": stored.path,
        "size": current.blob.size,
        "md5": current.blob.md5,
        "sha256": current.blob.sha256,
        "version": current.number,
        "created_at": isotime(stored.created_at),
        "updated_at": isotime(stored.updated_at),
        "download_url": f"{base_url}/storage/download/{stored.id}/",
        "content_type": current.content_type,
        "versions": [_version_json(stored.id, v, base_url) for v in stored.versions],
    }


def file_page_json(
    count: int,
    page: Page,
    files: list[StoredFile],
    base_url: str,
    kept: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A page of files; its ``next`` and ``previous`` links keep the listing's other query
    arguments (``kept``: page_size, prefix, path as the client gave them)."""

    def link(number: int) -> str:
        return f"{base_url}/storage/files/?{urlencode({'page': number, **(kept or {})})}"

    return {
        "count": count,
        "next": link(page.number + 1) if page.has_next else None,
        "previous": link(page.number - 1) if page.has_previous else None,
        "results": [file_json(f, base_url) for f in files],
    }


def cursor_page_json(
    found: CursorPage, base_url: str, kept: dict[str, str] | None = None
) -> dict[str, Any]:
    """A keyset page of files (``?after=``): ``next`` carries the cursor after its last file
    and the listing's other arguments; there is no ``previous``."""
    following = None
    if found.next_cursor is not None:
        query = urlencode({**(kept or {}), "after": found.next_cursor})
        following = f"{base_url}/storage/files/?{query}"
    return {
        "count": found.count,
        "next": following,
        "previous": None,
        "results": [file_json(f, base_url) for f in found.files],
    }


def changes_json(found: Slice) -> dict[str, Any]:
    """The long poll's answer: the events, the cursor to send next, and whether to reload."""
    return {
        "events": [
            {"id": e.seq, "type": e.type, "data": e.data, "created_at": isotime(e.created_at)}
            for e in found.events
        ],
        "last_id": found.cursor,
        "reset": found.reset,
    }
