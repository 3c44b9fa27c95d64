"""CORS for browser pages on other origins, and the public address behind a reverse proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from common.config import ConfigError
from proxy.api.edge import parse_networks
from tests.conftest import auth, proxy_with, request_headers

TUS = {"Tus-Resumable": "1.0.0"}
APP = "https://photos.example"


def h(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else str(values[0])


async def create(url: str, token: str, **headers: str) -> Any:
    sent = request_headers({**TUS, "Upload-Length": "3", **headers})
    response = await treq.post(f"{url}/files/", headers={**sent, **auth(token)})
    await response.content()
    return response


@pytest_twisted.ensureDeferred
async def test_an_allowed_origin_gets_preflights_and_the_tus_headers_exposed(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(database_url, tmp_path / "p", cors_origins=APP) as proxy:
        token = await proxy.register_and_login()
        created = await create(proxy.url, token, Origin=APP)
        assert created.code == 201
        assert h(created, "access-control-allow-origin") == APP
        exposed = {
            name.strip() for name in (h(created, "access-control-expose-headers") or "").split(",")
        }
        assert {"Location", "Upload-Offset", "Upload-Length", "Upload-Expires"} <= exposed
        assert {"Upload-Metadata", "Tus-Resumable", "Tus-Version", "Tus-Extension"} <= exposed
        location = h(created, "location") or ""
        preflight = await treq.request(
            "OPTIONS",
            location,
            headers=request_headers(
                {
                    "Origin": APP,
                    "Access-Control-Request-Method": "PATCH",
                    "Access-Control-Request-Headers": "upload-offset, tus-resumable, content-type",
                }
            ),
        )
        assert await preflight.content() == b""
        assert preflight.code == 204
        assert h(preflight, "access-control-allow-origin") == APP
        assert "PATCH" in (h(preflight, "access-control-allow-methods") or "")
        allowed = (h(preflight, "access-control-allow-headers") or "").lower()
        assert {"upload-offset", "tus-resumable", "content-type", "authorization"} <= {
            name.strip() for name in allowed.split(",")
        }
        # A JSON route too: an allowed origin's page may use the whole API.
        listing = await treq.get(
            f"{proxy.url}/storage/files/", headers={**auth(token), "Origin": APP}
        )
        await listing.content()
        assert h(listing, "access-control-allow-origin") == APP
        # Any other origin gets no CORS headers, so its browser refuses to read the answer.
        other = await create(proxy.url, token, Origin="https://evil.example")
        assert other.code == 201 and h(other, "access-control-allow-origin") is None
        refused = await treq.request(
            "OPTIONS", location,
            headers=request_headers(
                {"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"}
            ),
        )  # fmt: skip
        await refused.content()
        assert h(refused, "access-control-allow-origin") is None


@pytest_twisted.ensureDeferred
async def test_cors_is_off_by_default(database_url: str, tmp_path: Path) -> None:
    async with proxy_with(database_url, tmp_path / "p") as proxy:
        token = await proxy.register_and_login()
        created = await create(proxy.url, token, Origin=APP)
        assert created.code == 201 and h(created, "access-control-allow-origin") is None


@pytest_twisted.ensureDeferred
async def test_forwarded_scheme_and_host_count_only_from_a_trusted_proxy(
    database_url: str, tmp_path: Path
) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "archive.example"}
    async with proxy_with(database_url, tmp_path / "a") as proxy:
        token = await proxy.register_and_login()
        ignored = await create(proxy.url, token, **forwarded)
        assert (h(ignored, "location") or "").startswith(f"{proxy.url}/files/")
    async with proxy_with(
        database_url, tmp_path / "b", trusted_proxies="10.0.0.0/8, 127.0.0.1"
    ) as proxy:
        token = await proxy.register_and_login("bob", "other-pass-99")  # the same database
        trusted = await create(proxy.url, token, **forwarded)
        assert (h(trusted, "location") or "").startswith("https://archive.example/files/")
        rfc = await create(proxy.url, token, Forwarded='for=1.2.3.4;proto=https;host="b.example"')
        assert (h(rfc, "location") or "").startswith("https://b.example/files/")
        bad = await create(
            proxy.url,
            token,
            **{"X-Forwarded-Host": "evil.example/path", "X-Forwarded-Proto": "ftp"},
        )
        assert (h(bad, "location") or "").startswith(f"{proxy.url}/files/")
        # Every URL the proxy writes comes from the same place: here the document's server.
        spec = await treq.get(f"{proxy.url}/openapi.json", headers=request_headers(forwarded))
        assert (await spec.json())["servers"] == [{"url": "https://archive.example"}]


def test_a_bad_trusted_proxy_address_stops_the_start() -> None:
    from common.config import load
    from proxy.config import ProxyConfig

    with pytest.raises(ConfigError, match="PYARCHIVE_TRUSTED_PROXIES"):
        load(ProxyConfig, "proxy", environ={"PYARCHIVE_TRUSTED_PROXIES": "not-an-address"})
    assert [str(n) for n in parse_networks("::1, 192.168.0.0/16")] == ["::1/128", "192.168.0.0/16"]


@pytest_twisted.ensureDeferred
async def test_public_url_names_every_location_whatever_is_forwarded(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(
        database_url, tmp_path / "p", public_url="https://backup.example/",
        trusted_proxies="127.0.0.1",
    ) as proxy:  # fmt: skip
        token = await proxy.register_and_login()
        created = await create(proxy.url, token, **{"X-Forwarded-Host": "other.example"})
        assert (h(created, "location") or "").startswith("https://backup.example/files/")
