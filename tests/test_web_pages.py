"""The web application's pages, served by a real proxy on a loopback port: accounts,
sessions and their cookies, CSRF, redirects, the headers every page carries, the archives
list and a file's page. What only a browser shows (scripts, live updates, uploads) is in
tests/browser/."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
import treq
from PIL import Image
from twisted.internet.task import Clock

from tests.conftest import RunningProxy, auth, proxy_with
from tests.test_api_files import store
from tests.webclient import WebClient

NASTY = "<img src=x onerror=alert(1)>.png"


@pytest_twisted.async_yield_fixture
async def site(database_url: str, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_with(database_url, tmp_path / "proxy", page_size=2) as running:
        yield running


async def upload(proxy: RunningProxy, token: str, name: str, data: bytes) -> str:
    """A whole file in one request (the seed API); returns its id."""
    return str((await store(proxy, token, name, data))["file_id"])


async def token_of(proxy: RunningProxy, username: str, password: str = "s3cret-pass!") -> str:
    response = await treq.post(
        f"{proxy.url}/api-token-auth/", json={"username": username, "password": password}
    )
    assert response.code == 200, await response.text()
    return str((await response.json())["token"])


# ---------------------------------------------------------------- accounts and sessions


@pytest_twisted.ensureDeferred
async def test_a_members_page_visited_logged_out_goes_to_login_with_next(
    site: RunningProxy,
) -> None:
    page = await WebClient(site.url).get("/archives/?q=a")
    assert page.status == 303
    assert page.location == "/login/?next=/archives/%3Fq%3Da"


@pytest_twisted.ensureDeferred
async def test_register_sets_a_session_cookie_and_shows_the_archives(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    page = await browser.register("alice")
    assert page.location == "/archives/"
    line = next(line for line in browser.set_cookie_lines if "pyarchive_session=" in line)
    assert "HttpOnly" in line and "SameSite=lax" in line.replace("Lax", "lax") and "Path=/" in line
    assert "Secure" not in line  # plain http here; https public URLs make it Secure
    page = await browser.get("/archives/")
    assert page.status == 200
    assert "Your archives" in page.text and "alice" in page.text


@pytest_twisted.ensureDeferred
async def test_register_errors_are_shown_beside_the_field_and_gone_on_refresh(
    site: RunningProxy,
) -> None:
    browser = WebClient(site.url)
    page = await browser.form(
        "/register/",
        {"username": "bob", "password": "s3cret-pass!", "password_again": "different-pass"},
    )
    assert page.status == 400
    assert 'id="password_again-error"' in page.text
    assert "The two passwords are not the same" in page.text
    assert 'value="bob"' in page.text  # what was typed stays
    page = await browser.form(
        "/register/", {"username": "bob", "password": "short", "password_again": "short"}
    )
    assert page.status == 400 and 'id="password-error"' in page.text and "too short" in page.text
    page = await browser.get("/register/")
    assert page.status == 200 and "-error" not in page.text


@pytest_twisted.ensureDeferred
async def test_a_form_posted_without_its_csrf_token_is_refused(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.get("/register/")  # has the visitor's CSRF cookie, but not the token
    fields = {"username": "carol", "password": "s3cret-pass!", "password_again": "s3cret-pass!"}
    assert (await browser.post("/register/", fields)).status == 403
    assert (await browser.post("/register/", {**fields, "csrf_token": "wrong"})).status == 403
    await browser.register("carol")
    page = await browser.post("/logout/", {})
    assert page.status == 403 and "did not come from this site" in page.text
    assert (await browser.get("/archives/")).status == 200  # still logged in


@pytest_twisted.ensureDeferred
async def test_login_goes_to_next_only_when_it_is_a_local_path(site: RunningProxy) -> None:
    await WebClient(site.url).register("dave")
    for given, expected in [
        ("/profile/", "/profile/"),
        ("//evil.example/", "/archives/"),
        ("https://evil.example/", "/archives/"),
        ("/\\evil.example", "/archives/"),
    ]:
        browser = WebClient(site.url)
        page = await browser.login("dave", next_path=given)
        assert (page.status, page.location) == (303, expected), given


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_one_message_for_the_whole_form(site: RunningProxy) -> None:
    await WebClient(site.url).register("erin")
    page = await WebClient(site.url).login("erin", "not-the-password")
    assert page.status == 400
    assert "Unable to log in with provided credentials." in page.text


@pytest_twisted.ensureDeferred
async def test_logout_ends_the_session_on_the_server(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("frank")
    stolen = dict(browser.cookies)
    page = await browser.form("/logout/", {}, form_page="/archives/")
    assert (page.status, page.location) == (303, "/login/")
    replay = WebClient(site.url, cookies=stolen)  # the old cookie, kept by someone
    assert (await replay.get("/archives/")).status == 303


@pytest_twisted.ensureDeferred
async def test_a_password_change_signs_out_other_sessions_and_older_tokens(
    site: RunningProxy,
) -> None:
    here, there = WebClient(site.url), WebClient(site.url)
    await here.register("grace")
    await there.login("grace")
    token = await token_of(site, "grace")
    assert (await treq.get(f"{site.url}/storage/files/", headers=auth(token))).code == 200
    page = await here.form(
        "/profile/password",
        {
            "current_password": "s3cret-pass!",
            "new_password": "n3w-secret-pass",
            "new_password_again": "n3w-secret-pass",
        },
        form_page="/profile/",
    )
    assert page.status == 200, page.text[:500]
    assert "1 other session" in page.text
    assert (await here.get("/archives/")).status == 200  # this one goes on
    assert (await there.get("/archives/")).status == 303
    response = await treq.get(f"{site.url}/storage/files/", headers=auth(token))
    assert response.code == 401
    assert "signed out" in (await response.json())["detail"]
    fresh = await token_of(site, "grace", "n3w-secret-pass")
    assert (await treq.get(f"{site.url}/storage/files/", headers=auth(fresh))).code == 200


@pytest_twisted.ensureDeferred
async def test_a_password_change_needs_the_current_password(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("heidi")
    page = await browser.form(
        "/profile/password",
        {
            "current_password": "wrong",
            "new_password": "n3w-secret-pass",
            "new_password_again": "n3w-secret-pass",
        },
        form_page="/profile/",
    )
    assert page.status == 400 and 'id="current_password-error"' in page.text
    assert (await WebClient(site.url).login("heidi")).status == 303  # unchanged


@pytest_twisted.ensureDeferred
async def test_email_is_checked_and_saved(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("ivan")
    page = await browser.form("/profile/email", {"email": "not an address"}, form_page="/profile/")
    assert page.status == 400 and 'id="email-error"' in page.text
    page = await browser.form(
        "/profile/email", {"email": "ivan@example.org"}, form_page="/profile/"
    )
    assert page.status == 200 and 'value="ivan@example.org"' in page.text


# ---------------------------------------------------------------- login throttling


@pytest_twisted.ensureDeferred
async def test_failed_logins_slow_down_the_account_then_the_wait_ends(
    database_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    clock.advance(1_000_000)
    async with proxy_with(database_url, tmp_path / "p", clock=clock) as proxy:
        await WebClient(proxy.url).register("judy")
        for _ in range(5):
            page = await WebClient(proxy.url).login("judy", "wrong-password")
            assert page.status == 400
        # The right password is refused too while the wait runs, and says how long.
        page = await WebClient(proxy.url).login("judy")
        assert page.status == 429 and "try again in" in page.text
        response = await treq.post(
            f"{proxy.url}/api-token-auth/", json={"username": "judy", "password": "s3cret-pass!"}
        )
        assert response.code == 429 and response.headers.getRawHeaders("retry-after")
        # Another member of the household, from the same address, is not held up.
        await WebClient(proxy.url).register("ken")
        assert (await WebClient(proxy.url).login("ken")).status == 303
        clock.advance(2)
        assert (await WebClient(proxy.url).login("judy")).status == 303


# ---------------------------------------------------------------- the API with a session


@pytest_twisted.ensureDeferred
async def test_the_api_takes_the_session_cookie_and_wants_csrf_for_changes(
    site: RunningProxy,
) -> None:
    browser = WebClient(site.url)
    await browser.register("leo")
    token = await token_of(site, "leo")
    file_id = await upload(site, token, "a.txt", b"hello")
    page = await browser.get("/storage/files/")
    assert page.status == 200 and "a.txt" in page.text
    shown = await browser.get("/archives/")
    csrf = shown.csrf
    refused = await browser.request("DELETE", f"/storage/files/{file_id}/")
    assert refused.status == 403 and "CSRF" in refused.text
    wrong = await browser.request(
        "DELETE", f"/storage/files/{file_id}/", headers={"X-CSRF-Token": "nope"}
    )
    assert wrong.status == 403
    done = await browser.request(
        "DELETE", f"/storage/files/{file_id}/", headers={"X-CSRF-Token": csrf}
    )
    assert done.status == 204


@pytest_twisted.ensureDeferred
async def test_a_tus_upload_from_a_session_needs_csrf(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("mia")
    csrf = (await browser.get("/archives/")).csrf
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "3"}
    assert (await browser.request("POST", "/files/", headers=headers)).status == 403
    made = await browser.request("POST", "/files/", headers={**headers, "X-CSRF-Token": csrf})
    assert made.status == 201, made.text


# ---------------------------------------------------------------- headers and errors


@pytest_twisted.ensureDeferred
async def test_every_page_carries_a_strict_policy(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    for path in ["/login/", "/register/"]:
        page = await browser.get(path)
        policy = page.header("content-security-policy") or ""
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert page.header("x-content-type-options") == "nosniff"
        assert page.header("referrer-policy") == "same-origin"


@pytest_twisted.ensureDeferred
async def test_pages_have_no_inline_script_or_handler(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("nina")
    for path in ["/archives/", "/profile/", "/login/", "/register/"]:
        page = await browser.get(path)
        assert page.status in (200, 303)
        assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None, path
        assert re.search(r"\son[a-z]+=", page.text) is None, path
        assert "style=" not in page.text, path


@pytest_twisted.ensureDeferred
async def test_unknown_pages_are_html_and_unknown_api_paths_stay_json(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("olga")
    page = await browser.get("/archives/0123456789abcdef0123456789abcdef/")
    assert page.status == 404 and (page.header("content-type") or "").startswith("text/html")
    page = await browser.get("/api/no-such-thing")
    assert page.status == 404 and page.header("content-type") == "application/json"


@pytest_twisted.ensureDeferred
async def test_static_files_are_typed_and_never_listed(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    css = await browser.get("/static/app.css")
    assert css.status == 200 and css.header("content-type") == "text/css"
    assert css.header("x-content-type-options") == "nosniff"
    script = await browser.get("/static/live.js")
    assert script.header("content-type") == "text/javascript"
    assert (await browser.get("/static/")).status == 404
    assert (await browser.get("/static/../service.py")).status == 404


# ---------------------------------------------------------------- archives


@pytest_twisted.ensureDeferred
async def test_the_archives_list_escapes_names_searches_and_pages(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("paul")
    token = await token_of(site, "paul")
    for name in ["holiday-1.jpg", NASTY, "holiday-2.jpg"]:
        await upload(site, token, name, name.encode())
    page = await browser.get("/archives/")
    assert "3 files" in page.text
    assert "<img src=x" not in page.text  # page_size is 2: the newest two, escaped
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page.text
    assert "holiday-2.jpg" in page.text and "holiday-1.jpg" not in page.text
    assert 'rel="next"' in page.text
    older = await browser.get("/archives/?page=2")
    assert "holiday-1.jpg" in older.text and 'rel="prev"' in older.text
    found = await browser.get("/archives/?q=HOLIDAY")
    assert "2 files" in found.text and "alert" not in found.text
    literal = await browser.get("/archives/?q=%25")
    assert "No file" in literal.text  # % is a character, not a wildcard
    assert "stored locally (0 replicas)" in page.text


@pytest_twisted.ensureDeferred
async def test_an_unfinished_upload_is_listed_with_its_progress(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("quinn")
    token = await token_of(site, "quinn")
    response = await treq.post(
        f"{site.url}/files/",
        headers={**auth(token), "Tus-Resumable": "1.0.0", "Upload-Length": "4",
                 "Upload-Metadata": "filename aGFsZi5iaW4=",
                 "Content-Type": "application/offset+octet-stream"},
        data=b"ab",
    )  # fmt: skip
    assert response.code == 201
    page = await browser.get("/archives/")
    assert "half.bin" in page.text and "uploading (50 %)" in page.text


@pytest_twisted.ensureDeferred
async def test_a_files_page_shows_its_checksums_and_only_to_its_owner(site: RunningProxy) -> None:
    owner, other = WebClient(site.url), WebClient(site.url)
    await owner.register("rita")
    await other.register("sam")
    data = b"the contents"
    file_id = await upload(site, await token_of(site, "rita"), NASTY, data)
    page = await owner.get(f"/archives/{file_id}/")
    assert page.status == 200
    assert hashlib.sha256(data).hexdigest() in page.text
    assert hashlib.md5(data).hexdigest() in page.text
    assert "&lt;img src=x" in page.text and "<img src=x" not in page.text
    live = await owner.get(f"/archives/{file_id}/live")
    assert live.status == 200 and hashlib.sha256(data).hexdigest() in live.text
    assert "<html" not in live.text
    assert (await other.get(f"/archives/{file_id}/")).status == 404
    assert (await other.get(f"/archives/{file_id}/live")).status == 404
    refused = await other.form(f"/archives/{file_id}/delete", {}, form_page="/archives/")
    assert refused.status == 404


@pytest_twisted.ensureDeferred
async def test_delete_and_rollback_are_confirmed_first(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("tina")
    token = await token_of(site, "tina")
    file_id = await upload(site, token, "notes.txt", b"first")
    await upload(site, token, "notes.txt", b"second version")
    confirm = await browser.get(f"/archives/{file_id}/rollback?version=1")
    assert confirm.status == 200 and "Roll back" in confirm.text
    done = await browser.post(
        f"/archives/{file_id}/rollback", {"csrf_token": confirm.csrf, "version": "1"}
    )
    assert (done.status, done.location) == (303, f"/archives/{file_id}/")
    page = await browser.get(f"/archives/{file_id}/")
    assert hashlib.sha256(b"first").hexdigest() in page.text
    confirm = await browser.get(f"/archives/{file_id}/delete")
    assert "cannot be undone" in confirm.text
    gone = await browser.post(f"/archives/{file_id}/delete", {"csrf_token": confirm.csrf})
    assert (gone.status, gone.location) == (303, "/archives/")
    assert (await browser.get(f"/archives/{file_id}/")).status == 404


# ---------------------------------------------------------------- profile picture


def picture(kind: str, size: tuple[int, int] = (600, 400)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=kind)
    return out.getvalue()


@pytest_twisted.ensureDeferred
async def test_a_profile_picture_is_checked_reencoded_and_served_safely(
    site: RunningProxy,
) -> None:
    browser = WebClient(site.url)
    await browser.register("uma")
    default = await browser.get("/profile/picture.png")
    assert (default.status, default.location) == (303, "/static/default-avatar.svg")
    csrf = (await browser.get("/profile/")).csrf
    sent = picture("JPEG")
    page = await browser.post(
        "/profile/picture", {"csrf_token": csrf}, files={"file": ("me.jpg", "image/jpeg", sent)}
    )
    assert page.status == 200 and "Your picture was saved." in page.text
    served = await treq.get(
        f"{site.url}/profile/picture.png", headers=browser._headers(), allow_redirects=False
    )
    body = await served.content()
    assert served.code == 200
    assert served.headers.getRawHeaders("content-type") == ["image/png"]
    assert served.headers.getRawHeaders("x-content-type-options") == ["nosniff"]
    image = Image.open(io.BytesIO(body))
    assert image.format == "PNG" and max(image.size) == 256 and body != sent


@pytest.mark.parametrize(
    "name, content, status, words",
    [
        ("page.html", b"<script>alert(1)</script>", 400, "must be a PNG or JPEG"),
        ("fake.png", b"\x89PNG\r\n\x1a\nnot really", 400, "PNG or JPEG"),
        ("anim.gif", b"GIF89a" + b"\0" * 20, 400, "PNG or JPEG"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_profile_picture_that_is_not_a_png_or_jpeg_is_refused(
    site: RunningProxy, name: str, content: bytes, status: int, words: str
) -> None:
    browser = WebClient(site.url)
    await browser.register("vera")
    csrf = (await browser.get("/profile/")).csrf
    page = await browser.post(
        "/profile/picture", {"csrf_token": csrf}, files={"file": (name, "image/png", content)}
    )
    assert page.status == status and words in page.text
    assert (await browser.get("/profile/picture.png")).status == 303  # still the default


@pytest_twisted.ensureDeferred
async def test_the_upload_page_lists_unfinished_tus_uploads_with_their_fingerprint(
    site: RunningProxy,
) -> None:
    browser = WebClient(site.url)
    await browser.register("walt")
    token = await token_of(site, "walt")
    metadata = "filename YmlnLmlzbw==,fingerprint YWJjMTIz"  # big.iso, abc123
    response = await treq.post(
        f"{site.url}/files/",
        headers={**auth(token), "Tus-Resumable": "1.0.0", "Upload-Length": "10",
                 "Upload-Metadata": metadata, "Content-Type": "application/offset+octet-stream"},
        data=b"1234",
    )  # fmt: skip
    assert response.code == 201
    upload_id = response.headers.getRawHeaders("location")[0].rsplit("/", 1)[1]
    page = await browser.get("/archives/new/")
    assert page.status == 200
    assert 'data-tus-endpoint="/files/"' in page.text
    assert f'data-upload-url="/files/{upload_id}"' in page.text
    assert 'data-fingerprint="abc123"' in page.text and 'data-offset="4"' in page.text
    assert 'data-size="10"' in page.text and "choose this file again to resume" in page.text
    assert '<script type="module" src="/static/dist/upload.js"></script>' in page.text


@pytest_twisted.ensureDeferred
async def test_the_session_cookie_is_secure_when_the_public_url_is_https(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(
        database_url, tmp_path / "p", public_url="https://archive.example.org"
    ) as proxy:
        browser = WebClient(proxy.url)
        await browser.register("xena")
        line = next(line for line in browser.set_cookie_lines if "pyarchive_session=" in line)
        assert "Secure" in line and "HttpOnly" in line


@pytest_twisted.ensureDeferred
async def test_many_failures_from_one_address_slow_it_down_but_never_lock_it_out(
    database_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    clock.advance(1_000_000)
    async with proxy_with(database_url, tmp_path / "p", clock=clock) as proxy:
        await WebClient(proxy.url).register("yuri")
        # 21 failures spread over many names (none of them throttled on its own)...
        for index in range(21):
            page = await WebClient(proxy.url).login(f"guess{index}", "wrong-password")
            assert page.status == 400, index
        # ...and the address waits a little, even for a right password.
        page = await WebClient(proxy.url).login("yuri")
        assert page.status == 429
        wait = int(re.search(r"try again in (\d+) s", page.text)[1])  # type: ignore[index]
        assert 1 <= wait <= 60
        clock.advance(wait + 1)
        assert (await WebClient(proxy.url).login("yuri")).status == 303


@pytest_twisted.ensureDeferred
async def test_the_profile_shows_the_storage_used_by_every_version(site: RunningProxy) -> None:
    browser = WebClient(site.url)
    await browser.register("zora")
    token = await token_of(site, "zora")
    await upload(site, token, "a.bin", b"x" * 1000)
    await upload(site, token, "a.bin", b"y" * 600)  # a second version counts too
    page = await browser.get("/profile/")
    assert '<strong id="storage-used">1.6 KiB</strong>' in page.text
