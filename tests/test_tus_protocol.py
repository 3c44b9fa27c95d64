"""tus 1.0 at ``/files/``, request by request, against the real proxy over both databases.

Every status the protocol names is provoked here; the third-party clients' tests are in
``tests/test_tus_clients.py``.
"""

from __future__ import annotations

import base64
import hashlib
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from tests.conftest import RequestHeaders, RunningProxy, answer, auth, proxy_with

TUS: RequestHeaders = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}
DATA = bytes(range(256)) * 400  # 102,400 bytes


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def headers(token: str | None, **more: str) -> RequestHeaders:
    found: RequestHeaders = dict(TUS) if token is None else {**TUS, **auth(token)}
    for name, value in more.items():
        found[name.replace("_", "-")] = value
    return found


def h(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else str(values[0])


async def create(
    proxy: RunningProxy, token: str, length: int | None = None, **more: str
) -> tuple[Any, str]:
    extra = {name.replace("_", "-"): value for name, value in more.items()}
    if length is not None:
        extra["Upload-Length"] = str(length)
    extra.setdefault("Upload-Metadata", meta(filename="data.bin"))
    response = await treq.post(f"{proxy.url}/files/", headers=headers(token, **extra))
    await response.content()
    location = h(response, "location") or ""
    return response, location


async def patch(url: str, token: str, offset: int, body: bytes, **more: str) -> tuple[Any, bytes]:
    response = await treq.request(
        "PATCH", url, data=body, headers=headers(token, **STREAM, Upload_Offset=str(offset), **more)
    )
    return response, await response.content()


async def head(url: str, token: str) -> Any:
    response = await treq.head(url, headers=headers(token))
    await response.content()
    return response


async def stored_file(proxy: RunningProxy, token: str, upload_id: str) -> dict[str, Any]:
    code, upload = await answer(
        await treq.get(f"{proxy.url}/storage/tmp-upload/{upload_id}/", headers=auth(token))
    )
    assert code == 200 and upload["status"] == 2, upload
    code, found = await answer(
        await treq.get(f"{proxy.url}/storage/files/{upload['file_id']}/", headers=auth(token))
    )
    assert code == 200
    return dict(found)


@pytest_twisted.ensureDeferred
async def test_options_says_what_the_server_supports(running_proxy: RunningProxy) -> None:
    response = await treq.request("OPTIONS", f"{running_proxy.url}/files/")
    await response.content()
    assert response.code == 204
    assert h(response, "tus-version") == "1.0.0"
    assert set((h(response, "tus-extension") or "").split(",")) >= {
        "creation", "creation-with-upload", "creation-defer-length", "expiration",
        "checksum", "termination", "concatenation", "concatenation-unfinished",
    }  # fmt: skip
    assert h(response, "tus-max-size") == str(2**40)
    assert h(response, "tus-checksum-algorithm") == "sha1,md5,sha256"
    assert h(response, "tus-resumable") is None  # every answer but OPTIONS carries it


@pytest_twisted.ensureDeferred
async def test_a_whole_upload_becomes_a_file_with_its_md5_and_sha256(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    created, url = await create(running_proxy, token, len(DATA))
    assert created.code == 201 and url.startswith(f"{running_proxy.url}/files/")
    assert h(created, "tus-resumable") == "1.0.0"
    assert h(created, "upload-offset") == "0"
    expires = parsedate_to_datetime(h(created, "upload-expires") or "")
    assert expires.tzinfo is not None
    upload_id = url.rsplit("/", 1)[1]
    first, _ = await patch(url, token, 0, DATA[:40000])
    assert first.code == 204 and h(first, "upload-offset") == "40000"
    assert h(first, "upload-expires") == h(created, "upload-expires")
    # One upload, two views: the seed API reports the same offset.
    code, seen = await answer(
        await treq.get(f"{running_proxy.url}/storage/tmp-upload/{upload_id}/", headers=auth(token))
    )
    assert (code, seen["offset"], seen["total"]) == (200, 40000, len(DATA))
    probe = await head(url, token)
    assert (probe.code, h(probe, "upload-offset"), h(probe, "upload-length")) == (
        200, "40000", str(len(DATA)),
    )  # fmt: skip
    assert h(probe, "cache-control") == "no-store"
    assert h(probe, "upload-metadata") == meta(filename="data.bin")
    last, _ = await patch(url, token, 40000, DATA[40000:])
    assert last.code == 204 and h(last, "upload-offset") == str(len(DATA))
    found = await stored_file(running_proxy, token, upload_id)
    assert found["filename"] == "data.bin" and found["size"] == len(DATA)
    assert found["md5"] == hashlib.md5(DATA).hexdigest()
    assert found["sha256"] == hashlib.sha256(DATA).hexdigest()
    done = await head(url, token)
    assert (done.code, h(done, "upload-offset")) == (200, str(len(DATA)))


@pytest_twisted.ensureDeferred
async def test_a_wrong_offset_is_409_and_changes_nothing(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    _, url = await create(running_proxy, token, len(DATA))
    await patch(url, token, 0, DATA[:1000])
    for offset in (0, 500, 2000):
        refused, raw = await patch(url, token, offset, DATA[offset : offset + 1000])
        assert refused.code == 409, raw
        assert h(refused, "upload-offset") == "1000"
        assert h(refused, "tus-resumable") == "1.0.0"
    assert h(await head(url, token), "upload-offset") == "1000"
    ok, _ = await patch(url, token, 1000, DATA[1000:])
    assert ok.code == 204
    found = await stored_file(running_proxy, token, url.rsplit("/", 1)[1])
    assert found["sha256"] == hashlib.sha256(DATA).hexdigest()


@pytest_twisted.ensureDeferred
async def test_versions_and_content_types_are_refused_as_tus_says(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    _, url = await create(running_proxy, token, 10)
    for version in (None, "0.2.2", "2.0"):
        sent: RequestHeaders = {**auth(token), "Upload-Length": "10"}
        if version is not None:
            sent["Tus-Resumable"] = version
        response = await treq.post(f"{running_proxy.url}/files/", headers=sent)
        await response.content()
        assert response.code == 412, version
        assert h(response, "tus-version") == "1.0.0"
        probe = await treq.head(url, headers=sent)
        await probe.content()
        assert probe.code == 412
    plain, _ = await patch(url, token, 0, b"x" * 10, Content_Type="application/octet-stream")
    assert plain.code == 415
    no_offset = await treq.request("PATCH", url, data=b"x", headers=headers(token, **STREAM))
    await no_offset.content()
    assert no_offset.code == 400
    anonymous = await treq.head(url, headers=TUS)
    await anonymous.content()
    assert anonymous.code == 401 and h(anonymous, "tus-resumable") == "1.0.0"


@pytest.mark.parametrize(
    "metadata",
    [
        "filename notbase64!",  # bad base64
        "filename YQ==,filename Yg==",  # a key twice
        "file name YQ==",  # a space in the key
        "filename YQ== extra",  # three parts
    ],
)
@pytest_twisted.ensureDeferred
async def test_metadata_is_read_strictly(running_proxy: RunningProxy, metadata: str) -> None:
    token = await running_proxy.register_and_login()
    response, _ = await create(running_proxy, token, 10, Upload_Metadata=metadata)
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_metadata_names_the_file_and_may_make_it_a_new_version(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    # Uppy sends `name`; `filetype` is kept as the upload's content type.
    _, url = await create(
        running_proxy, token, 3, Upload_Metadata=meta(name="cat.jpg", filetype="image/jpeg")
    )
    await patch(url, token, 0, b"cat")
    first = await stored_file(running_proxy, token, url.rsplit("/", 1)[1])
    assert first["filename"] == "cat.jpg"
    row = await running_proxy.proxy.uploads.status(1, url.rsplit("/", 1)[1])
    assert row.content_type == "image/jpeg" and row.dialect == "tus"
    assert first["content_type"] == "image/jpeg"
    download = await treq.get(first["download_url"], headers=auth(token))
    assert await download.content() == b"cat"
    assert h(download, "content-type") == "image/jpeg"
    assert h(download, "x-content-type-options") == "nosniff"
    _, url = await create(
        running_proxy, token, 4, Upload_Metadata=meta(filename="cat.jpg", parent=first["id"])
    )
    await patch(url, token, 0, b"cat2")
    second = await stored_file(running_proxy, token, url.rsplit("/", 1)[1])
    assert second["id"] == first["id"] and second["version"] == 2
    # A path's last part names a file whose metadata gives no name.
    _, url = await create(running_proxy, token, 1, Upload_Metadata=meta(path="a/b/c.txt"))
    await patch(url, token, 0, b"c")
    assert (await stored_file(running_proxy, token, url.rsplit("/", 1)[1]))["filename"] == "c.txt"
    missing, _ = await create(
        running_proxy, token, 1, Upload_Metadata=meta(filename="x", parent="0" * 32)
    )
    assert missing.code == 404


@pytest_twisted.ensureDeferred
async def test_a_filetype_that_is_not_a_plain_media_type_is_not_kept(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    for filetype in ("text/html\r\nSet-Cookie: x=1", "html", "image/jpeg; charset=x"):
        _, url = await create(
            running_proxy, token, 1, Upload_Metadata=meta(filename="x.bin", filetype=filetype)
        )
        await patch(url, token, 0, b"x")
        found = await stored_file(running_proxy, token, url.rsplit("/", 1)[1])
        assert found["content_type"] == "", filetype
        download = await treq.get(found["download_url"], headers=auth(token))
        await download.content()
        assert h(download, "content-type") == "application/octet-stream"


@pytest_twisted.ensureDeferred
async def test_an_empty_upload_is_a_file_at_once(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    created, url = await create(running_proxy, token, 0)
    assert created.code == 201 and h(created, "upload-offset") == "0"
    found = await stored_file(running_proxy, token, url.rsplit("/", 1)[1])
    assert found["size"] == 0 and found["sha256"] == hashlib.sha256(b"").hexdigest()


@pytest_twisted.ensureDeferred
async def test_creation_with_upload_stores_the_first_bytes(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    response = await treq.post(
        f"{running_proxy.url}/files/",
        data=DATA[:5000],
        headers=headers(
            token, **STREAM, Upload_Length=str(len(DATA)), Upload_Metadata=meta(filename="w")
        ),
    )
    await response.content()
    assert response.code == 201 and h(response, "upload-offset") == "5000"
    url = h(response, "location") or ""
    done, _ = await patch(url, token, 5000, DATA[5000:])
    assert done.code == 204
    found = await stored_file(running_proxy, token, url.rsplit("/", 1)[1])
    assert found["sha256"] == hashlib.sha256(DATA).hexdigest()
    wrong = await treq.post(
        f"{running_proxy.url}/files/",
        data=b"abc",
        headers=headers(token, Content_Type="text/plain", Upload_Length="3"),
    )
    await wrong.content()
    assert wrong.code == 415


@pytest_twisted.ensureDeferred
async def test_a_deferred_length_is_set_once_and_the_maximum_still_holds(
    database_url: str, tmp_path: Path
) -> None:
    async with proxy_with(database_url, tmp_path / "proxy", max_upload_size=1000) as proxy:
        token = await proxy.register_and_login()
        for bad in (
            {"Upload_Defer_Length": "2"},
            {},
            {"Upload_Defer_Length": "1", "Upload_Length": "5"},
        ):
            response, _ = await create(proxy, token, None, **bad)
            assert response.code == 400, bad
        too_big, _ = await create(proxy, token, 1001)
        assert too_big.code == 413
        created, url = await create(proxy, token, Upload_Defer_Length="1")
        assert created.code == 201
        probe = await head(url, token)
        assert h(probe, "upload-defer-length") == "1" and h(probe, "upload-length") is None
        first, _ = await patch(url, token, 0, b"a" * 600)
        assert first.code == 204
        over, _ = await patch(url, token, 600, b"a" * 401)
        assert over.code == 413
        assert h(await head(url, token), "upload-offset") == "600"
        said, _ = await patch(url, token, 600, b"", Upload_Length="800")
        assert said.code == 204
        assert h(await head(url, token), "upload-length") == "800"
        again, _ = await patch(url, token, 600, b"", Upload_Length="900")
        assert again.code == 400
        last, _ = await patch(url, token, 600, b"b" * 200)
        assert last.code == 204
        found = await stored_file(proxy, token, url.rsplit("/", 1)[1])
        assert found["size"] == 800
        assert found["sha256"] == hashlib.sha256(b"a" * 600 + b"b" * 200).hexdigest()


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
@pytest_twisted.ensureDeferred
async def test_a_checksum_is_checked_and_a_mismatch_drops_the_bytes(
    running_proxy: RunningProxy, algorithm: str
) -> None:
    token = await running_proxy.register_and_login()
    _, url = await create(running_proxy, token, len(DATA))

    def checksum(data: bytes) -> str:
        return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"

    bad, raw = await patch(url, token, 0, DATA[:3000], Upload_Checksum=checksum(DATA[1:3001]))
    assert bad.code == 460, raw
    assert h(await head(url, token), "upload-offset") == "0"
    good, _ = await patch(url, token, 0, DATA[:3000], Upload_Checksum=checksum(DATA[:3000]))
    assert good.code == 204 and h(good, "upload-offset") == "3000"
    unknown, _ = await patch(url, token, 3000, DATA[3000:], Upload_Checksum="crc32 AAAAAA==")
    assert unknown.code == 400
    rest, _ = await patch(url, token, 3000, DATA[3000:], Upload_Checksum=checksum(DATA[3000:]))
    assert rest.code == 204
    found = await stored_file(running_proxy, token, url.rsplit("/", 1)[1])
    assert found["sha256"] == hashlib.sha256(DATA).hexdigest()


@pytest_twisted.ensureDeferred
async def test_termination_drops_the_upload(running_proxy: RunningProxy) -> None:
    token = await running_proxy.register_and_login()
    _, url = await create(running_proxy, token, len(DATA))
    await patch(url, token, 0, DATA[:100])
    gone = await treq.delete(url, headers=headers(token))
    await gone.content()
    assert gone.code == 204 and h(gone, "tus-resumable") == "1.0.0"
    assert (await head(url, token)).code == 404
    again, _ = await patch(url, token, 100, DATA[100:200])
    assert again.code == 404


@pytest_twisted.ensureDeferred
async def test_someone_elses_upload_and_an_unknown_one_are_not_found(
    running_proxy: RunningProxy,
) -> None:
    alice = await running_proxy.register_and_login()
    bob = await running_proxy.register_and_login("bob", "other-pass-99")
    _, url = await create(running_proxy, alice, len(DATA))
    for token in (bob,):
        assert (await head(url, token)).code == 404
        refused, _ = await patch(url, token, 0, DATA[:10])
        assert refused.code == 404
        deleted = await treq.delete(url, headers=headers(token))
        await deleted.content()
        assert deleted.code == 404
    assert h(await head(url, alice), "upload-offset") == "0"
    for unknown in ("0" * 32, "not-an-id"):
        assert (await head(f"{running_proxy.url}/files/{unknown}", alice)).code == 404


@pytest_twisted.ensureDeferred
async def test_an_expired_upload_is_410(database_url: str, tmp_path: Path) -> None:
    async with proxy_with(database_url, tmp_path / "proxy", upload_expiry=0.0) as proxy:
        token = await proxy.register_and_login()
        _, url = await create(proxy, token, 10)
        assert (await head(url, token)).code == 410
        late, _ = await patch(url, token, 0, b"x" * 10)
        assert late.code == 410


@pytest_twisted.ensureDeferred
async def test_method_override_turns_a_post_into_a_patch_or_a_delete(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    _, url = await create(running_proxy, token, 6)
    response = await treq.post(
        url,
        data=b"abc",
        headers=headers(token, **STREAM, Upload_Offset="0", X_HTTP_Method_Override="PATCH"),
    )
    await response.content()
    assert response.code == 204 and h(response, "upload-offset") == "3"
    response = await treq.post(url, headers=headers(token, X_HTTP_Method_Override="DELETE"))
    await response.content()
    assert response.code == 204
    assert (await head(url, token)).code == 404


# ---------------------------------------------------------------- concatenation


async def partial(proxy: RunningProxy, token: str, data: bytes, send: bool = True) -> str:
    created, url = await create(
        proxy, token, len(data), Upload_Concat="partial", Upload_Metadata=""
    )
    assert created.code == 201 and h(created, "upload-concat") == "partial"
    if send:
        done, _ = await patch(url, token, 0, data)
        assert done.code == 204
    return url


async def final(proxy: RunningProxy, token: str, urls: list[str], **more: str) -> Any:
    concat = "final;" + " ".join(urls)
    response, _ = await create(
        proxy, token, None, Upload_Concat=concat, Upload_Metadata=meta(filename="joined.bin"),
        **more,
    )  # fmt: skip
    return response


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest_twisted.ensureDeferred
async def test_finished_partials_are_joined_into_one_file_once(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    pieces = [DATA[:30000], DATA[30000:30001], DATA[30001:]]
    urls = [await partial(running_proxy, token, piece) for piece in pieces]
    # A whole partial is not a file by itself.
    code, listing = await answer(
        await treq.get(f"{running_proxy.url}/storage/files/", headers=auth(token))
    )
    assert (code, listing["count"]) == (200, 0)
    # Absolute URLs and paths both name an upload.
    named = [urls[0], "/files/" + upload_id(urls[1]), urls[2]]
    joined = await final(running_proxy, token, named)
    assert joined.code == 201 and h(joined, "upload-offset") == str(len(DATA))
    location = h(joined, "location") or ""
    found = await stored_file(running_proxy, token, upload_id(location))
    assert found["filename"] == "joined.bin" and found["size"] == len(DATA)
    assert found["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert found["md5"] == hashlib.md5(DATA).hexdigest()
    for url in urls:  # the partials' work is done
        assert (await head(url, token)).code == 404
    again = await final(running_proxy, token, named)
    assert again.code == 201 and h(again, "location") == location
    code, listing = await answer(
        await treq.get(f"{running_proxy.url}/storage/files/", headers=auth(token))
    )
    assert listing["count"] == 1, "the repeated final POST made no second file"


@pytest_twisted.ensureDeferred
async def test_a_final_upload_of_unfinished_partials_is_joined_when_the_last_one_ends(
    running_proxy: RunningProxy,
) -> None:
    token = await running_proxy.register_and_login()
    first = await partial(running_proxy, token, DATA[:50000], send=False)
    second = await partial(running_proxy, token, DATA[50000:], send=False)
    joined = await final(running_proxy, token, [first, second])
    assert joined.code == 201 and h(joined, "upload-offset") is None
    location = h(joined, "location") or ""
    probe = await head(location, token)
    assert probe.code == 200 and h(probe, "upload-offset") is None
    assert h(probe, "upload-length") == str(len(DATA))
    assert h(probe, "upload-concat") == f"final;{first} {second}"
    refused, _ = await patch(location, token, 0, DATA[:10])
    assert refused.code == 403
    done, _ = await patch(second, token, 0, DATA[50000:])
    assert done.code == 204
    assert h(await head(location, token), "upload-offset") is None  # the first is unfinished
    half, _ = await patch(first, token, 0, DATA[:20000])
    rest, _ = await patch(first, token, 20000, DATA[20000:50000])
    assert half.code == rest.code == 204
    found = await stored_file(running_proxy, token, upload_id(location))
    assert found["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert h(await head(location, token), "upload-offset") == str(len(DATA))


@pytest_twisted.ensureDeferred
async def test_a_final_upload_is_refused_what_it_cannot_be(running_proxy: RunningProxy) -> None:
    alice = await running_proxy.register_and_login()
    bob = await running_proxy.register_and_login("bob", "other-pass-99")
    part = await partial(running_proxy, alice, b"abc")
    _, whole = await create(running_proxy, alice, 3)
    bobs = await partial(running_proxy, bob, b"def")
    assert (await final(running_proxy, alice, [part], Upload_Length="3")).code == 400
    assert (await final(running_proxy, alice, [whole])).code == 400  # not a partial upload
    assert (await final(running_proxy, alice, [bobs])).code == 404
    assert (
        await final(running_proxy, alice, [f"{running_proxy.url}/files/{'0' * 32}"])
    ).code == 404
    for bad in ("final;", "final;/elsewhere/x", "whole"):
        response, _ = await create(running_proxy, alice, 3, Upload_Concat=bad)
        assert response.code == 400, bad
    assert h(await head(part, alice), "upload-offset") == "3"  # nothing was consumed


@pytest_twisted.ensureDeferred
async def test_the_endpoint_may_be_put_elsewhere(database_url: str, tmp_path: Path) -> None:
    async with proxy_with(database_url, tmp_path / "proxy", tus_path="/upload/tus/") as proxy:
        token = await proxy.register_and_login()
        options = await treq.request("OPTIONS", f"{proxy.url}/upload/tus/")
        await options.content()
        assert options.code == 204 and h(options, "tus-version") == "1.0.0"
        response = await treq.post(
            f"{proxy.url}/upload/tus/",
            headers=headers(
                token, Upload_Length=str(len(DATA)), Upload_Metadata=meta(filename="x")
            ),
        )
        await response.content()
        url = h(response, "location") or ""
        assert response.code == 201 and url.startswith(f"{proxy.url}/upload/tus/")
        first, _ = await patch(url, token, 0, DATA[:1000])
        assert first.code == 204 and h(first, "tus-resumable") == "1.0.0"
        assert h(await head(url, token), "upload-offset") == "1000"
        part = await partial(proxy, token, DATA[1000:])
        assert part.startswith(f"{proxy.url}/upload/tus/")
        done, _ = await patch(url, token, 1000, DATA[1000:])
        assert done.code == 204
        found = await stored_file(proxy, token, upload_id(url))
        assert found["sha256"] == hashlib.sha256(DATA).hexdigest()
        joined = await final(proxy, token, [part])
        assert joined.code == 201 and (h(joined, "location") or "").startswith(
            f"{proxy.url}/upload/tus/"
        )


@pytest.mark.parametrize("bad", ["/", "/storage", "files?x", "/a b/"])
def test_a_tus_path_that_cannot_be_the_endpoint_stops_the_start(bad: str) -> None:
    from common.config import ConfigError, load
    from proxy.config import ProxyConfig

    with pytest.raises(ConfigError, match="PYARCHIVE_TUS_PATH"):
        load(ProxyConfig, "proxy", environ={"PYARCHIVE_TUS_PATH": bad})
    assert load(ProxyConfig, "proxy", environ={"PYARCHIVE_TUS_PATH": "up/tus"}).tus_path == (
        "/up/tus/"
    )
