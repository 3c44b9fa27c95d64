"""The user's archives: the list (search, pages, a state per file), a new upload, one file
with its versions, replicas and S3 parts (kept current by ``/static/live.js``), and the
actions on it: download, uncache, cache, roll back and delete (those two confirmed first)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from twisted.web.iweb import IRequest

from common.errors import BadRequest, NotFound
from proxy.api.tus_headers import parse_metadata
from proxy.api.views import isotime
from proxy.catalog import overview
from proxy.catalog.files import paginate, parse_version, validate_file_id
from proxy.catalog.sessions import Session
from proxy.catalog.store import StoredFile
from proxy.uploads import uploadstore
from proxy.uploads.uploadstore import Upload
from proxy.web.pages.accounts import _arg
from proxy.web.pages.base import PageBase, Redirect, page

_UNFINISHED_SHOWN = 100


class ArchivePages(PageBase):
    @page("/", methods=["GET"])
    async def home(self, request: IRequest) -> bytes:
        session = await self._auth.session(request)
        raise Redirect("/archives/" if session is not None else "/login/")

    @page("/archives/", methods=["GET"])
    async def archives(self, request: IRequest) -> bytes:
        session = await self._viewer(request)
        search = (_arg(request, b"q") or "").strip()[:200]
        count, _ = await self._db.run(overview.file_rows, session.user_id, search, 0, 0)
        where = paginate(count, _arg(request, b"page"), self._page_size)
        count, rows = await self._db.run(
            overview.file_rows, session.user_id, search, self._page_size, where.offset
        )
        unfinished = await self._unfinished(session)

        def link(number: int) -> str:
            query = {"page": str(number), **({"q": search} if search else {})}
            return "/archives/?" + urlencode(query)

        return self._page(
            request, "archives.html", session, files=rows, count=count, search=search,
            page=where, unfinished=unfinished, link=link,
        )  # fmt: skip

    async def _unfinished(self, session: Session) -> list[Upload]:
        return await self._db.run(
            uploadstore.unfinished_uploads, session.user_id, self._clock.seconds(),
            _UNFINISHED_SHOWN,
        )  # fmt: skip

    @page("/archives/new/", methods=["GET"])
    async def new_archive(self, request: IRequest) -> bytes:
        session = await self._viewer(request)
        settings = self._upload_settings
        unfinished = [
            {
                "id": upload.id,
                "url": settings.tus_endpoint + upload.id,
                "filename": upload.filename,
                "size": upload.total,
                "offset": upload.received,
                "created_at": isotime(upload.created_at) or "",
                "fingerprint": stored_metadata(upload.metadata).get("fingerprint", ""),
            }
            for upload in await self._unfinished(session)
            if upload.dialect == "tus"
        ]
        return self._page(
            request, "archives_new.html", session, tus_endpoint=settings.tus_endpoint,
            chunk_size=settings.chunk_size, stall_seconds=settings.stall_seconds,
            unfinished=unfinished,
        )  # fmt: skip

    @page("/archives/<file_id>/", methods=["GET"])
    async def archive(self, request: IRequest, file_id: str) -> bytes:
        session = await self._viewer(request)
        return self._page(request, "archive.html", session, **await self._detail(session, file_id))

    @page("/archives/<file_id>/live", methods=["GET"])
    async def archive_live(self, request: IRequest, file_id: str) -> bytes:
        """The changing part of a file's page, for ``live.js`` to swap in."""
        session = await self._viewer(request)
        return self._page(
            request, "archive_live.html", session, **await self._detail(session, file_id)
        )

    async def _detail(self, session: Session, file_id: str) -> dict[str, Any]:
        validate_file_id(file_id)
        row = await self._db.run(overview.file_row, session.user_id, file_id)
        if row is None:
            raise NotFound("File not found")
        stored = await self._files.get(session.user_id, file_id)
        replicas = await self._files.replicas(stored)
        remote = await self._remote.view(stored.current.blob.id)
        return {
            "file": row,
            "stored": stored,
            "replicas": replicas,
            "confirmed": sum(1 for r in replicas if r.get("state") == "confirmed"),
            "parts": remote.get("parts", []),
            "restore": remote.get("restore"),
            "remote_state": remote.get("remote_state", "local"),
            "remote_verified": bool(remote.get("remote_verified")),
        }

    @page("/archives/<file_id>/uncache", methods=["POST"])
    async def uncache(self, request: IRequest, file_id: str) -> bytes:
        session, _ = await self._session_form(request)
        stored = await self._own(session, file_id)
        await self._remote.uncache(stored.current.blob.id)
        raise Redirect(f"/archives/{stored.id}/")

    @page("/archives/<file_id>/cache", methods=["POST"])
    async def cache(self, request: IRequest, file_id: str) -> bytes:
        session, _ = await self._session_form(request)
        stored = await self._own(session, file_id)
        await self._remote.cache(stored.current.blob.id)
        raise Redirect(f"/archives/{stored.id}/")

    @page("/archives/<file_id>/delete", methods=["GET"])
    async def confirm_delete(self, request: IRequest, file_id: str) -> bytes:
        session = await self._viewer(request)
        stored = await self._own(session, file_id)
        return self._page(request, "confirm.html", session, stored=stored, action="delete")

    @page("/archives/<file_id>/delete", methods=["POST"])
    async def delete(self, request: IRequest, file_id: str) -> bytes:
        session, _ = await self._session_form(request)
        stored = await self._own(session, file_id)
        await self._files.delete(session.user_id, stored.id)
        raise Redirect("/archives/")

    @page("/archives/<file_id>/rollback", methods=["GET"])
    async def confirm_rollback(self, request: IRequest, file_id: str) -> bytes:
        session = await self._viewer(request)
        stored = await self._own(session, file_id)
        version = stored.version(parse_version(_arg(request, b"version")))
        if version is None:
            raise NotFound("File has no such version")
        return self._page(
            request, "confirm.html", session, stored=stored, action="rollback", version=version
        )

    @page("/archives/<file_id>/rollback", methods=["POST"])
    async def rollback(self, request: IRequest, file_id: str) -> bytes:
        session, form = await self._session_form(request)
        stored = await self._own(session, file_id)
        await self._files.rollback(session.user_id, stored.id, form.fields.get("version"))
        raise Redirect(f"/archives/{stored.id}/")

    async def _own(self, session: Session, file_id: str) -> StoredFile:
        return await self._files.get(session.user_id, file_id)


def stored_metadata(raw: str) -> dict[str, str]:
    """A tus upload's ``Upload-Metadata`` as stored (it was read strictly when the upload was
    created); {} if it cannot be read again.

    >>> stored_metadata("filename YS50eHQ=,fingerprint YWJj")["fingerprint"]
    'abc'
    """
    try:
        return parse_metadata(raw)
    except BadRequest:
        return {}
