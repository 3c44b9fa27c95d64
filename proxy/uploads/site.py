"""The proxy's ``Request`` and ``Site``: request bodies go where ``BodyIntake`` says."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.web import server
from twisted.web.resource import IResource

from proxy.api.edge import Cors
from proxy.api.tus_headers import TUS_VERSION
from proxy.uploads.bodies import PlacedChunk

TUS_PREFIX = b"/files/"  # where the tus routes are; ``tus_path`` is rewritten to it


class BodyFactory(Protocol):
    def __call__(self, request: ArchiveRequest, length: int | None) -> Any: ...


class ArchiveRequest(server.Request):
    """A Request whose body is routed by the site and never parsed eagerly by Twisted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Twisted would read a whole multipart POST into memory; the routes parse it instead.
        self._parsePOSTFormSubmission = False

    def gotLength(self, length: int | None) -> None:
        self.content = self.channel.site.body_factory(self, length)  # type: ignore[attr-defined]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if isinstance(self.content, PlacedChunk):
            self.content.arrived_whole = True
            self.content.body_finished()
        super().requestReceived(command, path, version)

    def process(self) -> None:
        """tus: ``X-HTTP-Method-Override`` on a POST under ``/files/`` is the real method,
        and every answer there but OPTIONS says ``Tus-Resumable`` (errors too). CORS headers
        go on every answer to an allowed origin; its preflights are answered here."""
        site = self.channel.site  # type: ignore[attr-defined]
        if site.cors.apply(self):
            self.setResponseCode(204)
            self.finish()
            return
        if site.tus_path != TUS_PREFIX and self.path.startswith(site.tus_path):
            self.path = TUS_PREFIX + self.path[len(site.tus_path) :]  # the routes' own path
        if self.path.startswith(TUS_PREFIX):
            override = self.getHeader("x-http-method-override")
            if self.method == b"POST" and override:
                self.method = override.strip().upper().encode("ascii", "replace")
            if self.method != b"OPTIONS":
                self.setHeader("Tus-Resumable", TUS_VERSION)
        super().process()


class ArchiveSite(server.Site):
    requestFactory = ArchiveRequest

    def __init__(
        self,
        resource: IResource,
        body_factory: BodyFactory,
        cors: Cors | None = None,
        tus_path: str = "/files/",
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        self.body_factory = body_factory
        self.cors = cors or Cors()
        self.tus_path = tus_path.encode("ascii")


def pending_request_line(request: server.Request) -> tuple[bytes, bytes] | None:
    """Method and URI of a request whose body is still arriving.

    Twisted learns them from the request line but only sets ``request.method``/``uri`` once
    the body is complete; until then they live on the channel. Reading the channel's private
    attributes is the price of writing a body in place while it arrives; if a Twisted release
    renames them, this returns None and every body is simply spooled.
    """
    channel = request.channel
    command, path = getattr(channel, "_command", None), getattr(channel, "_path", None)
    if isinstance(command, bytes) and isinstance(path, bytes):
        return command, path
    return None
