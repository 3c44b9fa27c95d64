"""What every page stands on: the services, who is looking, forms and their CSRF check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.iweb import IRequest

from common.db import Database
from common.errors import ApiError, Forbidden, PayloadTooLarge
from common.web import header
from proxy.api.forms import Form, content_type, parse_multipart, parse_small_body
from proxy.api.inputs import refuse_query
from proxy.catalog.accounts import Accounts
from proxy.catalog.files import FileService
from proxy.catalog.sessions import Session
from proxy.catalog.users import UserAdmin
from proxy.cluster.admin import NodeAdmin
from proxy.events.hub import EventHub
from proxy.ops.jobs import JobScheduler
from proxy.ops.systemlog import SystemLog
from proxy.remote.connections import S3Connections
from proxy.remote.tier import RemoteTier
from proxy.uploads.staging import StagingArea
from proxy.web.auth import CSRF_FIELD, WebAuth, csrf_matches
from proxy.web.render import Renderer

F = TypeVar("F", bound=Callable[..., Any])

FORM_LIMIT = 64 * 1024  # a form without a file
# Each page request's event cursor, from ``_viewer`` to ``_page`` (gone with the request).
_EVENTS_SINCE: WeakKeyDictionary[IRequest, int] = WeakKeyDictionary()
FILE_FORM_LIMIT = 6 * 2**20  # a form with a profile picture


def page(path: str, methods: list[str]) -> Callable[[F], F]:
    """Mark a method as the page at ``path`` (``proxy.web.app`` makes it a Klein route)."""

    def mark(handler: F) -> F:
        handler.__page__ = (path, methods)  # type: ignore[attr-defined]
        return handler

    return mark


def pages_of(cls: type) -> Iterator[tuple[str, str, list[str]]]:
    """(method name, path, HTTP methods) of every marked page of ``cls``."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, member in vars(klass).items():
            marked = getattr(member, "__page__", None)
            if marked is not None and name not in seen:
                seen.add(name)
                yield name, marked[0], marked[1]


class LoginRequired(Exception):
    """A page for members only, visited without a session: go to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


@dataclass(frozen=True)
class UploadSettings:
    tus_endpoint: str
    chunk_size: int
    stall_seconds: int


def local_path(target: str | None, default: str = "/archives/") -> str:
    """``target`` if it is a path on this site, else ``default`` (no open redirects).

    >>> local_path("/archives/?page=2"), local_path("//evil.example/"), local_path("https://x/")
    ('/archives/?page=2', '/archives/', '/archives/')
    >>> local_path("/\\\\evil.example"), local_path(None)
    ('/archives/', '/archives/')
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 32 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def login_url(next_path: str) -> str:
    return "/login/?next=" + quote(local_path(next_path), safe="/")


class PageBase:
    def __init__(
        self,
        *,
        auth: WebAuth,
        accounts: Accounts,
        users: UserAdmin,
        files: FileService,
        remote: RemoteTier,
        db: Database,
        clock: IReactorTime,
        staging: StagingArea,
        renderer: Renderer,
        uploads: UploadSettings,
        threads: IReactorThreads,
        pool: ThreadPool,
        nodes: NodeAdmin,
        jobs: JobScheduler,
        syslog: SystemLog,
        s3_connections: S3Connections,
        events: EventHub,
        page_size: int = 20,
        replica_target: int = 2,
    ) -> None:
        self._auth = auth
        self._accounts = accounts
        self._users = users
        self._files = files
        self._remote = remote
        self._db = db
        self._clock = clock
        self._staging = staging
        self._render = renderer
        self._upload_settings = uploads
        self._threads = threads
        self._pool = pool
        self._page_size = page_size
        self._nodes = nodes
        self._jobs = jobs
        self._syslog = syslog
        self._s3 = s3_connections
        self._events = events
        self._replica_target = replica_target  # confirmed copies each content should have

    async def _viewer(self, request: IRequest) -> Session:
        """The session looking at a members' page; the login page for anyone else."""
        session = await self._auth.session(request)
        if session is None:
            raise LoginRequired(request.uri.decode("utf-8", "replace"))
        # The newest event before anything on the page is read: the page's live updates
        # start from here, so a change between reading and the stream's start is not missed.
        _EVENTS_SINCE[request] = await self._events.head(session.user_id)
        return session

    def _page(
        self,
        request: IRequest,
        name: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> bytes:
        csrf = session.csrf_token if session is not None else self._auth.anonymous_csrf(request)
        since = _EVENTS_SINCE.pop(request, None)
        return self._render.page(
            request, name, status, user=session, csrf_token=csrf, events_since=since, **context
        )

    async def _form(self, request: IRequest, limit: int = FORM_LIMIT) -> Form:
        """A posted form's fields (urlencoded or multipart, with at most one ``file``)."""
        body: Any = request.content
        size = getattr(body, "size", 0)
        if size > limit or getattr(body, "too_large", False):
            raise PayloadTooLarge(f"The form is larger than {limit // 1024} KiB")
        ctype = header(request, "content-type")
        body.seek(0)
        if content_type(ctype) == "multipart/form-data":
            form: Form = await self._in_thread(
                parse_multipart, body.file(), ctype or "", self._staging_spool
            )
            return form
        fields = parse_small_body(body.read(), ctype)
        return Form(fields={k: str(v) for k, v in fields.items()})

    def _staging_spool(self) -> Any:
        return self._staging.spool_file(1 << 20)

    async def _session_form(
        self, request: IRequest, limit: int = FORM_LIMIT
    ) -> tuple[Session, Form]:
        """A members' form: the session, and the fields once its CSRF token is checked."""
        session = await self._viewer(request)
        return session, await self._form_of(request, session, limit)

    async def _form_of(self, request: IRequest, session: Session, limit: int = FORM_LIMIT) -> Form:
        """The fields of a form ``session`` posted, once its CSRF token is checked."""
        form = await self._form(request, limit)
        if not csrf_matches(form.fields.get(CSRF_FIELD), session.csrf_token):
            if form.file is not None:
                form.file.spool.close()
            raise Forbidden(
                "The form has expired or did not come from this site; reload and try again"
            )
        return form

    async def _visitor_form(self, request: IRequest) -> Form:
        """A form shown before a session exists (log in, register): double-submit CSRF.

        Its fields (a password) come in the body only: one in the URL is refused unread.
        """
        refuse_query(request, "the form's fields")
        form = await self._form(request)
        expected = self._auth.anonymous_csrf(request)
        if not csrf_matches(form.fields.get(CSRF_FIELD), expected):
            raise Forbidden(
                "The form has expired or did not come from this site; reload and try again"
            )
        return form

    def _in_thread(self, fn: Any, *args: Any) -> Any:
        return deferToThreadPool(self._threads, self._pool, fn, *args)


def field_errors(error: ApiError, default: str) -> dict[str, str]:
    """An error as messages per form field (``__all__`` for the form as a whole)."""
    field = error.extra.get("field")
    return {field if isinstance(field, str) else default: error.detail}
