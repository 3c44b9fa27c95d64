"""Pages from Jinja2 templates (autoescaped: user text is always shown as text), with the
headers every page carries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from twisted.web.iweb import IRequest

from common.config import format_size

TEMPLATES = Path(__file__).parent / "templates"

# (path, title) of every staff console page, in the order of the console's navigation
# (``console.html``); each is a ``ConsolePage`` module in ``proxy/web/pages/``.
CONSOLE_SECTIONS = (
    ("/admin/overview/", "Overview"),
    ("/admin/nodes/", "Nodes"),
    ("/admin/s3/", "S3"),
    ("/admin/jobs/", "Jobs"),
    ("/admin/log/", "System log"),
    ("/admin/users/", "Accounts"),
)

# No inline script or style anywhere: scripts and the stylesheet are files the proxy serves.
# 'wasm-unsafe-eval' lets the upload page's worker compile hash-wasm's sha256 (WebAssembly),
# and nothing else.
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
    "style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)


def page_headers(request: IRequest) -> None:
    request.setHeader("Content-Security-Policy", CSP)
    request.setHeader("X-Content-Type-Options", "nosniff")
    request.setHeader("Referrer-Policy", "same-origin")
    request.setHeader("X-Frame-Options", "DENY")
    request.setHeader("Cache-Control", "no-store")


def human_size(size: int | None) -> str:
    """Bytes as people read them.

    >>> human_size(0), human_size(1023), human_size(1536), human_size(40 * 2**20)
    ('0 B', '1023 B', '1.5 KiB', '40.0 MiB')
    """
    return "unknown" if size is None else format_size(size)


def when(timestamp: float | str | None) -> str:
    """A time as ``2026-12-01 14:05 UTC``."""
    if timestamp is None or timestamp == "":
        return ""
    if isinstance(timestamp, str):
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    else:
        moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class Renderer:
    def __init__(self, directory: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["size"] = human_size
        self.env.filters["when"] = when
        self.env.globals["console_sections"] = CONSOLE_SECTIONS

    def page(self, request: IRequest, name: str, status: int = 200, **context: Any) -> bytes:
        page_headers(request)
        request.setResponseCode(status)
        request.setHeader("Content-Type", "text/html; charset=utf-8")
        path = request.path.decode("utf-8", "replace") if request.path else "/"
        return self.env.get_template(name).render(path=path, **context).encode("utf-8")
