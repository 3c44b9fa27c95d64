"""The site's root: pages go to the web application, everything else to the API.

Both are Klein apps that route on the whole path, so the root hands each request on with
its path intact. The web application owns a few first path segments (``PAGE_ROOTS``);
anything else (``/api/``, ``/storage/``, ``/files/``, ``/health``...) is the API's, so an
unknown API path still gets the API's JSON 404.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource


class Root(Resource):
    def __init__(self, api: IResource, pages: IResource, page_roots: set[bytes]) -> None:
        super().__init__()
        self._api = api
        self._pages = pages
        self._page_roots = page_roots

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        # Undo the segment Resource traversal consumed: the app sees the whole path.
        request.postpath.insert(0, request.prepath.pop())  # type: ignore[attr-defined]
        return self._pages if path in self._page_roots else self._api

    def render(self, request: IRequest) -> bytes:  # "" is a page root: never reached
        return self._pages.render(request)  # type: ignore[no-any-return]
