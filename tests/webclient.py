"""A small browser for service tests of the pages: keeps cookies, posts forms with their
CSRF token, and never follows redirects (tests look at them)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import treq

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@dataclass
class Page:
    status: int
    headers: Any
    text: str

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return None if not values else str(values[0])

    @property
    def location(self) -> str | None:
        return self.header("location")

    @property
    def csrf(self) -> str:
        found = CSRF_INPUT.search(self.text) or CSRF_META.search(self.text)
        assert found is not None, self.text[:500]
        return found[1]


@dataclass
class WebClient:
    base: str
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie_lines: list[str] = field(default_factory=list)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str | bytes, str | bytes]:
        headers: dict[str | bytes, str | bytes] = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for name, value in (extra or {}).items():
            headers[name] = value
        return headers

    async def _page(self, response: Any) -> Page:
        for line in response.headers.getRawHeaders("set-cookie", []):
            self.set_cookie_lines.append(line)
            jar: SimpleCookie = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        text = (await response.content()).decode("utf-8", "replace")
        return Page(response.code, response.headers, text)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Page:
        response = await treq.get(
            self.base + path, headers=self._headers(headers), allow_redirects=False
        )
        return await self._page(response)

    async def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        *,
        files: dict[str, tuple[str, str, bytes]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Page:
        kwargs: dict[str, Any] = {"headers": self._headers(headers), "allow_redirects": False}
        if files:
            kwargs["data"] = data or {}
            kwargs["files"] = {
                name: (filename, ctype, io.BytesIO(content))
                for name, (filename, ctype, content) in files.items()
            }
        else:
            kwargs["data"] = data or {}
        response = await treq.post(self.base + path, **kwargs)
        return await self._page(response)

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, data: Any = None
    ) -> Page:
        response = await treq.request(
            method, self.base + path, headers=self._headers(headers), data=data,
            allow_redirects=False,
        )  # fmt: skip
        return await self._page(response)

    async def form(
        self, path: str, fields: dict[str, str], *, form_page: str | None = None
    ) -> Page:
        """Open ``form_page`` (default: ``path``), then post ``fields`` with its CSRF token."""
        shown = await self.get(form_page or path)
        return await self.post(path, {"csrf_token": shown.csrf, **fields})

    async def register(self, username: str, password: str = "s3cret-pass!") -> Page:
        page = await self.form(
            "/register/",
            {"username": username, "password": password, "password_again": password},
        )
        assert page.status == 303, page.text[:800]
        return page

    async def login(
        self, username: str, password: str = "s3cret-pass!", next_path: str = ""
    ) -> Page:
        return await self.form(
            "/login/", {"username": username, "password": password, "next": next_path}
        )
