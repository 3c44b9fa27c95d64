"""The ReDoc page for the API description, served by the proxy itself: no CDN, no internet.

``scripts/fetch-assets`` puts ReDoc's standalone bundle in ``proxy/static/vendor/`` (fetched
from npm, not committed). Without it the API works as ever; only this page cannot render, and
says so.
"""

from __future__ import annotations

import html
from pathlib import Path

REDOC_ASSET = Path(__file__).resolve().parent.parent / "static" / "vendor" / "redoc.standalone.js"

# Everything the page needs comes from the proxy. ReDoc injects <style> elements, runs its
# search index in a worker made from a blob: URL, and links a logo on a CDN in its sidebar,
# which 'self' blocks so an offline browser does not wait on it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:;"
    " object-src 'none'; base-uri 'none'; form-action 'none'"
)

_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>PyArchive API</title>
</head>
<body style="margin: 0">
<redoc spec-url="{spec}">
<p>Loading the API documentation&hellip; If this stays, the ReDoc script is missing from this
proxy (run <code>scripts/fetch-assets</code>). The API description itself is at
<a href="{spec}">{spec_text}</a>.</p>
</redoc>
<script src="{asset}"></script>
</body>
</html>
"""


def redoc_html(
    spec_url: str = "/openapi.json", asset_url: str = "/docs/redoc/redoc.standalone.js"
) -> bytes:
    """The documentation page: ReDoc from ``asset_url`` rendering the spec at ``spec_url``.

    Both URLs should be on the proxy itself (relative is best): the page's
    Content-Security-Policy admits nothing from elsewhere. ReDoc's script replaces the
    ``<redoc>`` element's placeholder text once it runs, so the script tag comes after it.
    """
    page = _PAGE.format(
        csp=_attribute(CONTENT_SECURITY_POLICY),
        spec=_attribute(spec_url),
        spec_text=html.escape(spec_url, quote=False),
        asset=_attribute(asset_url),
    )
    return page.encode("utf-8")


def _attribute(value: str) -> str:
    """``value`` escaped for a double-quoted attribute (single quotes, as in CSP, stay legible)."""
    return html.escape(value, quote=False).replace('"', "&quot;")


def redoc_asset_path() -> Path | None:
    """Where the vendored ReDoc bundle is, or None when it has not been fetched."""
    return REDOC_ASSET if REDOC_ASSET.is_file() else None
