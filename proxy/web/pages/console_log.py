"""The console's system log page (``/admin/log/``): the entries newest first, filtered by
level (that level and above), job and time range, a page at a time (a keyset cursor: the
id of the last entry shown), each with its details. Staff only (``proxy.web.pages.console``).

The filters are a GET form, so a filtered page is a link staff can keep or share; what is
wrong with one is said on the page (400), over the same ``parse_log_query`` as the API.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from twisted.web.iweb import IRequest

from common.errors import ApiError, BadRequest
from proxy.ops.systemlog import LEVELS, parse_log_query
from proxy.web.pages.base import page
from proxy.web.pages.console import ConsolePage

FILTERS = ("level", "job", "since", "until")
PER_PAGE = (10, 25, 50, 100)
DEFAULT_PER_PAGE = 50


def shown_value(value: Any) -> str:
    """A data field's value as staff read it: text as it is, anything else as JSON.

    >>> shown_value("node1"), shown_value(3), shown_value(None), shown_value({"a": [1]})
    ('node1', '3', 'null', '{"a": [1]}')
    """
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _arguments(request: IRequest) -> dict[str, str]:
    """The query's filter fields as text; a field given twice keeps its last value."""
    found: dict[str, str] = {}
    for raw_key, values in (request.args or {}).items():
        key = raw_key.decode("utf-8", "replace")
        if key in (*FILTERS, "before", "limit") and values:
            found[key] = values[-1].decode("utf-8", "replace").strip()
    return found


def _per_page(text: str) -> int:
    if not text:
        return DEFAULT_PER_PAGE
    if text.isdigit() and int(text) in PER_PAGE:
        return int(text)
    shown = ", ".join(str(n) for n in PER_PAGE)
    raise BadRequest(f"entries per page must be one of {shown}", field="limit")


class LogPages(ConsolePage):
    @page("/admin/log/", methods=["GET"])
    async def log_page(self, request: IRequest) -> bytes:
        session = await self._staff(request)
        values = _arguments(request)
        jobs = self._jobs.names()
        context: dict[str, Any] = {
            "values": values, "levels": LEVELS, "jobs": jobs, "per_page": PER_PAGE,
            "default_per_page": DEFAULT_PER_PAGE, "entries": [], "older": None,
            "newest": None, "error": "", "field": "", "shown_value": shown_value,
        }  # fmt: skip
        try:
            limit = _per_page(values.get("limit", ""))
            asked = parse_log_query({**values, "limit": str(limit)})
        except ApiError as error:
            field = error.extra.get("field")
            context.update(error=error.detail, field=field if isinstance(field, str) else "")
            return self._page(request, "console_log.html", session, error.status, **context)
        entries, more = await self._syslog.page(asked)
        kept = {k: values[k] for k in FILTERS if values.get(k)}
        if limit != DEFAULT_PER_PAGE:
            kept["limit"] = str(limit)
        if more and entries:
            context["older"] = "?" + urlencode({**kept, "before": str(entries[-1]["id"])})
        if asked.before is not None:
            context["newest"] = "?" + urlencode(kept)
        context["entries"] = entries
        return self._page(request, "console_log.html", session, 200, **context)
