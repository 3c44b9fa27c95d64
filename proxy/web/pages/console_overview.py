"""The console's overview (``/admin/overview/``, where ``/admin/`` leads): what is stored,
replicated, backed up to S3 and kept only there; how many files are short of replicas or
failing to mirror, each count leading to the list of those files (every user's, paged); and
the free space across the nodes, with a warning under 10 %. The figures are SQL aggregates
(``proxy.catalog.console_store``), so the page costs the same for any catalogue. Staff only.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from proxy.catalog import console_store
from proxy.catalog.files import paginate
from proxy.web.pages.accounts import _arg
from proxy.web.pages.base import page
from proxy.web.pages.console import ConsolePage

# (path, heading, what the list holds) of the two lists behind the overview's counts
LISTS = {
    "short": (
        "/admin/overview/short/",
        "Files short of replicas",
        "Files whose current version has fewer confirmed replicas on storage nodes than the"
        " target of {target}.",
    ),
    "failing": (
        "/admin/overview/failing/",
        "Files whose mirror to S3 is failing",
        "Files whose current version is being mirrored to S3 and whose mirroring node"
        " reported a failure; it keeps retrying.",
    ),
}


class OverviewPages(ConsolePage):
    @page("/admin/overview/", methods=["GET"])
    async def overview_page(self, request: IRequest) -> bytes:
        session = await self._staff(request)
        figures = await self._db.run(console_store.overview, self._replica_target)
        return self._page(
            request, "console_overview.html", session, figures=figures,
            low_space=console_store.LOW_SPACE, lists=LISTS,
        )  # fmt: skip

    @page("/admin/overview/short/", methods=["GET"])
    async def short_page(self, request: IRequest) -> bytes:
        return await self._file_list(request, "short")

    @page("/admin/overview/failing/", methods=["GET"])
    async def failing_page(self, request: IRequest) -> bytes:
        return await self._file_list(request, "failing")

    async def _file_list(self, request: IRequest, kind: str) -> bytes:
        session = await self._staff(request)
        size, target = self._page_size, self._replica_target

        def rows(limit: int, offset: int) -> Deferred[tuple[int, list[console_store.ConsoleFile]]]:
            if kind == "short":
                return self._db.run(console_store.short_files, target, limit, offset)
            return self._db.run(console_store.failing_files, limit, offset)

        count, _ = await rows(0, 0)
        where = paginate(count, _arg(request, b"page"), size)
        count, files = await rows(size, where.offset)
        path, heading, about = LISTS[kind]
        return self._page(
            request, "console_files.html", session, kind=kind, heading=heading,
            about=about.format(target=target), files=files, count=count, page=where,
            link=lambda number: f"{path}?page={number}", target=target,
        )  # fmt: skip
