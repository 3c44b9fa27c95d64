"""The console's S3 page (issue 12) on a real proxy, SQLite and PostgreSQL, against moto's S3
server over HTTP: staff only; add (errors beside their field), validate (against moto, and a
bucket that is not there), make active, change without typing the secret again, remove after
a confirm page; fields only in the body; and the secret key in no page once saved."""

from __future__ import annotations

import doctest
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from common.s3 import S3Settings
from proxy.web.pages import console_s3
from proxy.web.render import CONSOLE_SECTIONS
from tests.conftest import RunningProxy, proxy_with
from tests.proc import free_port
from tests.s3server import S3Server
from tests.test_web_console import staff_browser
from tests.webclient import Page, WebClient

SECRET = "Console-S3cret/7Hq2Zr9KpW4mXv8Ns1Lt"


def secret_parts(secret: str = SECRET) -> list[str]:
    """The secret, and pieces of it distinctive enough that none may be shown either."""
    return [secret, secret[:-4], secret[4:20], secret[-12:-4]]


@pytest.fixture
def bucket(s3: S3Server) -> S3Settings:
    """A new empty bucket on moto (any keys open it: moto does not check them)."""
    return s3.bucket(secret_key=SECRET)


@pytest_twisted.async_yield_fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_with(database_url, tmp_path / "proxy") as running:
        yield running


@dataclass
class Recording(WebClient):
    """A staff browser that keeps every page it was shown."""

    seen: list[Page] = field(default_factory=list)

    async def _page(self, response: Any) -> Page:
        shown = await super()._page(response)
        self.seen.append(shown)
        return shown


async def recording_staff(site: RunningProxy) -> Recording:
    boss = await staff_browser(site)
    return Recording(site.url, cookies=dict(boss.cookies))


def form_of(settings: S3Settings, **changes: str) -> dict[str, str]:
    return {
        "name": "main",
        "endpoint_url": settings.endpoint_url or "",
        "region": settings.region,
        "bucket": settings.bucket,
        "prefix": "",
        "access_key": settings.access_key,
        "secret_key": SECRET,
        **changes,
    }


def row(page: Page, name: str) -> str:
    """The table row of connection ``name`` (its opening tag and cells)."""
    found = re.search(rf'<tr data-connection="{re.escape(name)}".*?</tr>', page.text, re.S)
    assert found is not None, page.text[:2000]
    return found[0]


async def add(browser: WebClient, settings: S3Settings, **changes: str) -> Page:
    page = await browser.form("/admin/s3/", form_of(settings, **changes))
    assert page.status == 200 and "added" in page.text, page.text[:2000]
    return page


async def act(browser: WebClient, path: str, fields: dict[str, str] | None = None) -> Page:
    return await browser.form(path, fields or {}, form_page="/admin/s3/")


def test_the_examples_in_the_docstrings_hold() -> None:
    results = doctest.testmod(console_s3)
    assert results.attempted > 0 and results.failed == 0


@pytest_twisted.ensureDeferred
async def test_the_s3_page_is_for_staff_only(site: RunningProxy, bucket: S3Settings) -> None:
    assert (await WebClient(site.url).get("/admin/s3/")).status == 303  # log in first
    member = WebClient(site.url)
    await member.register("alice")
    shown = await member.get("/admin/s3/")
    assert shown.status == 403 and "your account is not staff" in shown.text
    posted = await member.post(
        "/admin/s3/", {"csrf_token": (await member.get("/archives/")).csrf, **form_of(bucket)}
    )
    assert posted.status == 403
    assert await site.proxy.s3_connections.list() == []
    boss = await staff_browser(site)
    listed = await boss.get("/admin/s3/")
    assert listed.status == 200 and "No S3 connection yet" in listed.text
    assert 'href="/admin/s3/" aria-current="page"' in listed.text


@pytest_twisted.ensureDeferred
async def test_a_bad_endpoint_is_refused_with_the_error_beside_its_field(
    site: RunningProxy, bucket: S3Settings
) -> None:
    boss = await staff_browser(site)
    page = await boss.form("/admin/s3/", form_of(bucket, endpoint_url="ftp://files.example"))
    assert page.status == 400
    assert 'id="endpoint_url-error"' in page.text and "endpoint_url must be empty" in page.text
    assert 'value="ftp://files.example"' in page.text  # kept for correcting it
    assert SECRET not in page.text  # the typed secret is not kept in the form
    missing = await boss.form("/admin/s3/", form_of(bucket, bucket=""))
    assert missing.status == 400 and 'id="bucket-error"' in missing.text
    assert await site.proxy.s3_connections.list() == []


@pytest_twisted.ensureDeferred
async def test_staff_add_validate_and_activate_a_connection_to_moto(
    site: RunningProxy, bucket: S3Settings
) -> None:
    boss = await staff_browser(site)
    added = await add(boss, bucket)
    assert 'data-active="no" data-valid="never"' in row(added, "main")
    assert bucket.bucket in row(added, "main")
    checked = await act(boss, "/admin/s3/main/validate")
    assert checked.status == 200 and "main is valid: bucket " in checked.text
    cells = row(checked, "main")
    assert 'data-valid="yes"' in cells and ">valid</span>" in cells
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d UTC', cells)
    active = await act(boss, "/admin/s3/main/activate")
    assert active.status == 200 and "main is now the active connection" in active.text
    assert 'data-active="yes"' in row(active, "main") and ">active</span>" in row(active, "main")
    settings = await site.proxy.s3_connections.active()
    assert settings is not None and settings.bucket == bucket.bucket
    assert settings.secret_key == SECRET


@pytest_twisted.ensureDeferred
async def test_validation_fails_against_a_bucket_that_is_not_there(
    site: RunningProxy, bucket: S3Settings
) -> None:
    boss = await staff_browser(site)
    await add(boss, bucket, name="gone", bucket="no-such-bucket-" + bucket.bucket[2:12])
    checked = await act(boss, "/admin/s3/gone/validate")
    assert checked.status == 200
    assert "gone failed validation: HeadBucket failed" in checked.text
    assert "no such bucket at this endpoint" in checked.text
    assert 'data-valid="no"' in row(checked, "gone") and ">failed</span>" in row(checked, "gone")
    missing = await act(boss, "/admin/s3/nothing/validate")
    assert missing.status == 404 and "No S3 connection named" in missing.text


@pytest_twisted.ensureDeferred
async def test_a_change_without_typing_the_secret_again_keeps_it(
    site: RunningProxy, bucket: S3Settings, s3: S3Server
) -> None:
    boss = await staff_browser(site)
    await add(boss, bucket)
    await act(boss, "/admin/s3/main/validate")
    editing = await boss.get("/admin/s3/main/")
    assert editing.status == 200
    secret_input = re.search(r'<input id="secret_key"[^>]*>', editing.text)
    assert secret_input is not None and "value=" not in secret_input[0]
    assert 'type="password"' in secret_input[0]
    assert f'value="{bucket.bucket}"' in editing.text  # the other fields are filled in
    fields = form_of(bucket, prefix="console/tests", secret_key="")
    del fields["name"]
    changed = await boss.form("/admin/s3/main/", fields)
    assert changed.status == 200 and "main changed (prefix). Validate it again." in changed.text
    assert 'data-valid="never"' in row(changed, "main")  # a change forgets the validation
    checked = await act(boss, "/admin/s3/main/validate")
    assert "main is valid" in checked.text and "console/tests/pyarchive-probe-" in checked.text
    assert (await site.proxy.s3_connections.settings("main")).secret_key == SECRET

    unchanged = await boss.form("/admin/s3/main/", fields)
    assert "main: nothing was changed." in unchanged.text
    assert 'data-valid="yes"' in row(unchanged, "main")  # saving nothing keeps the result

    other = s3.bucket()
    moved = form_of(other, prefix="console/tests", secret_key="Another-Secret-0123456789")
    del moved["name"]
    page = await boss.form("/admin/s3/main/", moved)
    assert "main changed (bucket, secret key)" in page.text
    assert (await site.proxy.s3_connections.settings("main")).secret_key == moved["secret_key"]

    bad = await boss.form("/admin/s3/main/", {**moved, "bucket": "Not A Bucket"})
    assert bad.status == 400 and 'id="bucket-error"' in bad.text
    assert "Change S3 connection" in bad.text and moved["secret_key"] not in bad.text
    assert (await site.proxy.s3_connections.settings("main")).bucket == other.bucket


@pytest_twisted.ensureDeferred
async def test_removing_a_connection_asks_first_and_the_active_one_stays(
    site: RunningProxy, bucket: S3Settings
) -> None:
    boss = await staff_browser(site)
    await add(boss, bucket)
    await add(boss, bucket, name="spare")
    await act(boss, "/admin/s3/main/activate")
    asked = await boss.get("/admin/s3/spare/delete")
    assert asked.status == 200 and "Remove S3 connection “spare”?" in asked.text
    assert 'action="/admin/s3/spare/delete"' in asked.text
    assert [c["name"] for c in await site.proxy.s3_connections.list()] == ["main", "spare"]
    gone = await boss.form("/admin/s3/spare/delete", {})
    assert gone.status == 200 and "S3 connection spare removed." in gone.text
    assert 'data-connection="spare"' not in gone.text
    kept = await boss.get("/admin/s3/main/delete")
    assert "make another one active before removing it" in kept.text
    refused = await act(boss, "/admin/s3/main/delete")
    assert refused.status == 409 and "is the active one" in refused.text
    assert [c["name"] for c in await site.proxy.s3_connections.list()] == ["main"]


@pytest_twisted.ensureDeferred
async def test_fields_in_the_address_are_refused_before_anything_is_saved(
    site: RunningProxy, bucket: S3Settings
) -> None:
    boss = await staff_browser(site)
    token = (await boss.get("/admin/s3/")).csrf
    posted = await boss.post(f"/admin/s3/?secret_key={SECRET}", {"csrf_token": token,
                             **form_of(bucket)})  # fmt: skip
    assert posted.status == 400 and "never in the address" in posted.text
    assert SECRET not in posted.text
    assert await site.proxy.s3_connections.list() == []
    shown = await boss.get(f"/admin/s3/?secret_key={SECRET}")
    assert shown.status == 400 and SECRET not in shown.text
    await add(boss, bucket)
    validated = await boss.post("/admin/s3/main/validate?x=1", {"csrf_token": token})
    assert validated.status == 400
    changed = await boss.post(f"/admin/s3/main/?secret_key={SECRET}x", {"csrf_token": token})
    assert changed.status == 400
    assert (await site.proxy.s3_connections.settings("main")).secret_key == SECRET


@pytest_twisted.ensureDeferred
async def test_the_secret_key_is_in_no_page_once_saved(
    site: RunningProxy, bucket: S3Settings
) -> None:
    boss = await recording_staff(site)
    await add(boss, bucket)
    await add(boss, bucket, name="broken", bucket="no-such-bucket-" + bucket.bucket[2:12])
    await act(boss, "/admin/s3/main/validate")
    await act(boss, "/admin/s3/broken/validate")
    await act(boss, "/admin/s3/main/activate")
    await boss.form("/admin/s3/broken/", {"bucket": "Not A Bucket", "secret_key": ""})
    await boss.form("/admin/s3/", form_of(bucket))  # the name is taken: 409
    for path in [href for href, _ in CONSOLE_SECTIONS] + [
        "/admin/s3/main/", "/admin/s3/broken/delete", "/admin/s3/main/delete",
        "/archives/", "/profile/",
    ]:  # fmt: skip
        await boss.get(path)
    statuses = {shown.status for shown in boss.seen}
    assert {200, 400, 409} <= statuses  # the pages looked at include the error pages
    assert len(boss.seen) >= 20
    for shown in boss.seen:
        for part in secret_parts():
            assert part not in shown.text, (shown.status, part)
    assert "…" + SECRET[-4:] in row(await boss.get("/admin/s3/"), "main")  # only its end


@pytest_twisted.ensureDeferred
async def test_validation_fails_when_nothing_answers_at_the_endpoint(
    site: RunningProxy, bucket: S3Settings
) -> None:
    boss = await staff_browser(site)
    nowhere = f"http://127.0.0.1:{free_port()}"
    await add(boss, bucket, name="nowhere", endpoint_url=nowhere)
    checked = await act(boss, "/admin/s3/nowhere/validate")
    assert checked.status == 200 and "nowhere failed validation: HeadBucket failed" in checked.text
    assert 'data-valid="no"' in row(checked, "nowhere")
    assert SECRET not in checked.text


@pytest_twisted.ensureDeferred
async def test_a_secret_sealed_under_another_key_is_said_and_typed_again(
    database_url: str, tmp_path: Path, bucket: S3Settings
) -> None:
    async with proxy_with(database_url, tmp_path / "first") as first:
        await add(await staff_browser(first), bucket)
    async with proxy_with(database_url, tmp_path / "second") as second:  # another secret_key
        boss = await staff_browser(second, "chief")
        page = await boss.get("/admin/s3/")
        assert "secret cannot be opened here: type it again" in row(page, "main")
        refused = await act(boss, "/admin/s3/main/activate")
        assert refused.status == 409
        assert "main&#39;s secret key cannot be opened with this proxy&#39;s key" in refused.text
        assert "choose Change and type the secret key again" in refused.text
        fields = form_of(bucket)
        del fields["name"]
        fixed = await boss.form("/admin/s3/main/", fields)
        assert "main changed (secret key)" in fixed.text
        assert "secret cannot be opened here" not in row(fixed, "main")
        checked = await act(boss, "/admin/s3/main/validate")
        assert "main is valid" in checked.text and SECRET not in checked.text
