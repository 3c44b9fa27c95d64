"""Pure logic, without a reactor: parsing Content-Range, tokens, pagination, filenames, the
chunk rules, configuration, database URLs, small bodies, and upload claims."""

from __future__ import annotations

import doctest
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from twisted.python.threadpool import ThreadPool

import common.backoff
import common.contentrange
import common.durable
import common.hex32
from common.config import ConfigError, load, parse_duration, parse_size
from common.contentrange import MAX_SIZE, ContentRange, parse_content_range
from common.db import DatabaseUrlError, parse_database_url
from common.errors import BadRequest, Gone, NotFound, Unauthorized
from common.tokens import TokenClaims, issue_token, token_from_header, verify_token
from proxy.api.forms import check_fields, parse_small_body
from proxy.catalog.files import Page, paginate, parse_version
from proxy.config import ProxyConfig
from proxy.uploads.progress import UploadProgress
from proxy.uploads.rules import MAX_FILENAME_BYTES, check_chunk, validate_filename
from proxy.uploads.uploadstore import COMPLETE, UPLOADING, Upload

# ---------------------------------------------------------------- Content-Range


def test_the_content_range_examples_in_the_docstrings_hold() -> None:
    results = doctest.testmod(common.contentrange)
    assert results.attempted >= 5
    assert results.failed == 0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 0-0/1", ContentRange(0, 0, 1)),
        ("bytes 0-99/100", ContentRange(0, 99, 100)),
        ("  bytes 5-9/10  ", ContentRange(5, 9, 10)),
        ("bytes 100-199/*", ContentRange(100, 199, None)),
        (f"bytes 0-{MAX_SIZE - 1}/{MAX_SIZE}", ContentRange(0, MAX_SIZE - 1, MAX_SIZE)),
        ("bytes 1-32634/32634", ContentRange(1, 32634, 32634)),
    ],
)
def test_a_well_formed_content_range_parses_into_start_end_and_total(
    header: str, expected: ContentRange
) -> None:
    assert parse_content_range(header) == expected


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "required"),
        ("", "Malformed"),
        ("bytes=0-9/10", "Malformed"),
        ("Bytes 0-9/10", "Malformed"),
        ("bytes 0-9", "Malformed"),
        ("bytes -5-9/10", "Malformed"),
        ("bytes 0--9/10", "Malformed"),
        ("bytes 0-9/-10", "Malformed"),
        ("bytes 0-9/10/11", "Malformed"),
        ("bytes 0-9/1e3", "Malformed"),
        ("bytes 0 - 9/10", "Malformed"),
        ("bytes 0-9/*/*", "Malformed"),
        ("bytes \u0661-\u0662/\u0663", "Malformed"),  # Arabic-Indic digits are not numbers here
        (f"bytes 0-{'9' * 21}/*", "Malformed"),
        (f"bytes 0-{'9' * 30}/{'9' * 30}", "Malformed"),
        (f"bytes 0-0/{MAX_SIZE + 1}", "too large"),
        (f"bytes {MAX_SIZE + 1}-{MAX_SIZE + 1}/*", "too large"),
        ("bytes 9-0/10", "end is before its start"),
        ("bytes 0-10/10", "beyond the total"),
        ("bytes 0-0/0", "beyond the total"),
        ("bytes 2-11/11", "beyond the total"),
    ],
)
def test_a_bad_content_range_is_refused_with_the_reason(header: str | None, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        parse_content_range(header)
    assert caught.value.status == 400


def test_the_length_of_a_range_counts_both_ends() -> None:
    assert ContentRange(0, 0, 1).length == 1
    assert ContentRange(100, 199, None).length == 100


def test_only_the_whole_file_from_1_looks_one_based() -> None:
    seed = parse_content_range("bytes 1-32634/32634")
    assert seed.looks_one_based
    assert seed.shifted_to_zero() == ContentRange(0, 32633, 32634)
    assert seed.shifted_to_zero().length == seed.length
    assert not ContentRange(1, 10, 300).looks_one_based
    assert not ContentRange(1, 10, None).looks_one_based
    assert not ContentRange(0, 9, 10).looks_one_based


# ---------------------------------------------------------------- tokens

SECRET = "unit-test-secret-of-a-decent-length"
ALICE = TokenClaims(7, "alice", False)


def test_a_token_carries_its_claims_until_it_expires() -> None:
    token = issue_token(SECRET, ALICE, now=1000.0, lifetime=60.0)
    assert verify_token(SECRET, token, now=1000.0) == ALICE
    assert verify_token(SECRET, token, now=1059.0) == ALICE
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=1060.0)
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=10**9)


def test_a_token_is_decoded_once_and_its_expiry_checked_on_every_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    token = issue_token(SECRET, TokenClaims(8, "bea", False, 3), now=5000.0, lifetime=60.0)
    for now in (5000.0, 5010.0, 5059.0):
        assert verify_token(SECRET, token, now=now) == TokenClaims(8, "bea", False, 3)
    assert decoded == [token]
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=5060.0)  # kept, and still expired at its time
    # Kept by secret and token: under another secret the same text is checked afresh.
    with pytest.raises(Unauthorized, match="Invalid token"):
        verify_token("another-secret-of-a-decent-length!!", token, now=5000.0)
    # A forged token is checked in full each time, and never kept.
    header, payload, signature = token.split(".")
    other_end = "AA" if signature[-2:] != "AA" else "BB"
    forged = ".".join([header, payload, signature[:-2] + other_end])
    for _ in range(2):
        with pytest.raises(Unauthorized, match="Invalid token"):
            verify_token(SECRET, forged, now=5000.0)
    assert decoded.count(forged) == 2


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = issue_token("another-secret-of-a-decent-length!!", ALICE, now=1000.0, lifetime=60)
    with pytest.raises(Unauthorized, match="Invalid token"):
        verify_token(SECRET, token, now=1000.0)


def test_a_token_with_changed_claims_is_refused() -> None:
    token = issue_token(SECRET, ALICE, now=1000.0, lifetime=60.0)
    header, _, signature = token.split(".")
    other = issue_token(SECRET, TokenClaims(1, "admin", True), now=1000.0, lifetime=60.0)
    forged = ".".join([header, other.split(".")[1], signature])
    with pytest.raises(Unauthorized, match="Invalid token"):
        verify_token(SECRET, forged, now=1000.0)


@pytest.mark.parametrize(
    "payload",
    [
        {"sub": "7", "username": "alice", "staff": False, "iat": 1000},  # no exp
        {"username": "alice", "staff": False, "iat": 1000, "exp": 2000},  # no sub
        {"sub": "seven", "username": "alice", "staff": False, "iat": 1000, "exp": 2000},
        {"sub": "7", "staff": False, "iat": 1000, "exp": 2000},  # no username
    ],
    ids=["no exp", "no sub", "sub not a number", "no username"],
)
def test_a_validly_signed_token_without_the_claims_it_needs_is_refused(
    payload: dict[str, Any],
) -> None:
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token, now=1500.0)


def test_a_token_using_the_none_algorithm_is_refused() -> None:
    payload = {"sub": "7", "username": "alice", "staff": True, "iat": 1000, "exp": 2000}
    token = jwt.encode(payload, "", algorithm="none")  # PyJWT takes "" as no key for "none"
    with pytest.raises(Unauthorized, match="Invalid token"):
        verify_token(SECRET, token, now=1500.0)


@pytest.mark.parametrize("scheme", ["JWT", "Bearer", "jwt", "bearer"])
def test_the_token_is_taken_from_a_jwt_or_bearer_header(scheme: str) -> None:
    assert token_from_header(f"{scheme} abc.def.ghi") == "abc.def.ghi"
    assert token_from_header(f"  {scheme}   abc.def.ghi  ") == "abc.def.ghi"


@pytest.mark.parametrize("value", [None, "", "JWT", "JWT   ", "Basic abc", "Token abc", "abc"])
def test_a_missing_or_malformed_authorization_header_is_refused(value: str | None) -> None:
    with pytest.raises(Unauthorized):
        token_from_header(value)


def test_upload_rules_examples_in_the_docstrings_hold() -> None:
    import proxy.uploads.rules

    results = doctest.testmod(proxy.uploads.rules)
    assert results.attempted > 0 and results.failed == 0


# ---------------------------------------------------------------- pagination


def test_pagination_examples_in_the_docstring_hold() -> None:
    import proxy.catalog.files

    assert doctest.testmod(proxy.catalog.files).failed == 0


@pytest.mark.parametrize(
    ("count", "page", "expected"),
    [
        (0, None, Page(1, 0, False, False)),
        (0, "", Page(1, 0, False, False)),
        (0, "1", Page(1, 0, False, False)),
        (20, "1", Page(1, 0, False, False)),
        (21, "1", Page(1, 0, True, False)),
        (21, "2", Page(2, 20, False, True)),
        (25, None, Page(1, 0, True, False)),
        (25, "2", Page(2, 20, False, True)),
        (60, "2", Page(2, 20, True, True)),
        (60, "03", Page(3, 40, False, True)),
    ],
)
def test_a_page_number_selects_its_slice_and_says_whether_others_exist(
    count: int, page: str | None, expected: Page
) -> None:
    assert paginate(count, page, 20) == expected


@pytest.mark.parametrize(
    ("count", "page"),
    [
        (0, "2"),
        (25, "3"),
        (25, "0"),
        (25, "-1"),
        (25, "abc"),
        (25, "1.0"),
        (25, " 1"),
        (25, "9" * 30),
        (25, "\u00b2"),  # "²": str.isdigit() says yes, int() says no
        (25, "\u0661"),  # "١": int() would read it as 1
    ],
)
def test_a_page_that_does_not_exist_is_not_found(count: int, page: str) -> None:
    with pytest.raises(NotFound, match="Invalid page"):
        paginate(count, page, 20)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("1", 1), ("12", 12), (3, 3), (3.0, 3)],  # JSON's 3.0 is 3
)
def test_a_version_number_is_a_positive_whole_number(value: object, expected: int | None) -> None:
    assert parse_version(value) == expected


@pytest.mark.parametrize("value", ["0", 0, -1, "x", "1.5", 1.5, True, "\u00b9", [1], "9" * 12])
def test_anything_else_as_a_version_is_refused(value: object) -> None:
    with pytest.raises(BadRequest, match="version"):
        parse_version(value)


# ---------------------------------------------------------------- filenames


@pytest.mark.parametrize(
    "name",
    ["report 2024.pdf", "Résumé.txt", "...", ".hidden", "a..b", "x" * MAX_FILENAME_BYTES, "日本"],
)
def test_a_display_name_is_kept_as_given(name: str) -> None:
    assert validate_filename(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (None, "required"),
        (7, "required"),
        ("", "required"),
        ("  ", "required"),
        ("a/b", "may not contain"),
        ("/etc/passwd", "may not contain"),
        ("a\\b", "may not contain"),
        ("../up", "may not contain"),
        (".", "may not be"),
        ("..", "may not be"),
        ("a\x00b", "control characters"),
        ("a\tb", "control characters"),
        ("a\nb", "control characters"),
        ("a\x1fb", "control characters"),
        ("a\x7fb", "control characters"),
        ("a\x9fb", "control characters"),
        ("x" * (MAX_FILENAME_BYTES + 1), "longer than"),
        ("é" * 128, "longer than"),  # 256 bytes in UTF-8
        ("a\udc80b", "not valid Unicode"),
    ],
)
def test_a_filename_that_could_become_a_path_or_break_a_header_is_refused(
    name: object, reason: str
) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        validate_filename(name)
    assert caught.value.extra == {"field": "filename"}


# ---------------------------------------------------------------- chunk rules

NOW = 1_000_000.0
UPLOAD = Upload(
    id="0" * 32,
    owner_id=1,
    filename="data.bin",
    parent_id=None,
    total=300,
    received=100,
    status=UPLOADING,
    created_at=NOW - 10,
    expires_at=NOW + 10,
    completed_at=None,
    file_id=None,
    version=None,
)


@pytest.mark.parametrize(
    "chunk",
    [ContentRange(100, 199, 300), ContentRange(100, 299, 300), ContentRange(100, 100, None)],
)
def test_a_chunk_at_the_offset_inside_the_total_passes(chunk: ContentRange) -> None:
    check_chunk(UPLOAD, chunk, NOW)


def test_a_chunk_without_a_known_total_may_start_one() -> None:
    check_chunk(replace(UPLOAD, total=None), ContentRange(100, 10_000, 20_000), NOW)


@pytest.mark.parametrize("start", [0, 99, 101, 200])
def test_a_chunk_at_another_offset_is_refused_with_the_current_one(start: int) -> None:
    with pytest.raises(BadRequest, match="Offsets do not match") as caught:
        check_chunk(UPLOAD, ContentRange(start, 299, 300), NOW)
    assert caught.value.body() == {"detail": "Offsets do not match", "offset": 100}


def test_a_chunk_changing_the_total_is_refused() -> None:
    with pytest.raises(BadRequest, match="Total size does not match") as caught:
        check_chunk(UPLOAD, ContentRange(100, 199, 301), NOW)
    assert caught.value.extra == {"total": 300, "offset": 100}


def test_a_chunk_beyond_the_total_is_refused() -> None:
    with pytest.raises(BadRequest, match="beyond the total"):
        check_chunk(UPLOAD, ContentRange(100, 300, None), NOW)


def test_a_chunk_for_an_expired_upload_is_gone() -> None:
    with pytest.raises(Gone):
        check_chunk(UPLOAD, ContentRange(100, 199, 300), UPLOAD.expires_at)
    with pytest.raises(Gone):
        check_chunk(UPLOAD, ContentRange(100, 199, 300), UPLOAD.expires_at + 1)


def test_a_chunk_for_a_completed_upload_is_refused_before_anything_else() -> None:
    done = replace(UPLOAD, status=COMPLETE, expires_at=NOW - 1)
    with pytest.raises(BadRequest, match="already been completed"):
        check_chunk(done, ContentRange(0, 1, 2), NOW)


# ---------------------------------------------------------------- configuration


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "proxy.conf"
    path.write_text(text)
    return str(path)


def test_settings_rise_from_defaults_to_file_to_environment_to_overrides(tmp_path: Path) -> None:
    config_file = write_config(
        tmp_path,
        "[proxy]\nmax_chunk_size = 8MiB\nupload_expiry = 2h\npage_size = 50\nlisten = tcp:1\n",
    )
    environ = {"PYARCHIVE_UPLOAD_EXPIRY": "30m", "PYARCHIVE_PAGE_SIZE": "40"}
    config = load(
        ProxyConfig,
        "proxy",
        config_file=config_file,
        environ=environ,
        overrides={"page_size": 30, "listen": None},
    )
    defaults = ProxyConfig()
    assert config.token_lifetime == defaults.token_lifetime == 86400.0  # default
    assert config.max_chunk_size == 8 * 2**20  # file
    assert config.upload_expiry == 1800.0  # environment over file
    assert config.page_size == 30  # override over environment
    assert config.listen == "tcp:1"  # a None override leaves the file's value


def test_without_a_file_or_environment_the_defaults_hold() -> None:
    assert load(ProxyConfig, "proxy", environ={}) == ProxyConfig()


def test_a_dashed_key_in_the_file_names_the_same_setting(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "[proxy]\nmax-chunk-size = 1KiB\n")
    assert load(ProxyConfig, "proxy", config_file=config_file, environ={}).max_chunk_size == 1024


def test_another_roles_section_in_the_file_is_ignored(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "[node]\nanything = 1\n")
    assert load(ProxyConfig, "proxy", config_file=config_file, environ={}) == ProxyConfig()


def test_an_unknown_setting_in_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "[proxy]\nmax_chunk = 8MiB\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'max_chunk' in \[proxy\]"):
        load(ProxyConfig, "proxy", config_file=config_file, environ={})


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(ProxyConfig, "proxy", config_file=str(tmp_path / "absent.conf"), environ={})


def test_a_bad_size_in_the_file_is_an_error_naming_the_file_and_key(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, "[proxy]\nmax_chunk_size = lots\n")
    with pytest.raises(ConfigError, match=r"proxy\.conf \[proxy\] max_chunk_size: not a size"):
        load(ProxyConfig, "proxy", config_file=config_file, environ={})


def test_a_bad_value_in_the_environment_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="PYARCHIVE_MAX_CHUNK_SIZE: not a size"):
        load(ProxyConfig, "proxy", environ={"PYARCHIVE_MAX_CHUNK_SIZE": "64 MB please"})
    with pytest.raises(ConfigError, match="PYARCHIVE_UPLOAD_EXPIRY: not a duration"):
        load(ProxyConfig, "proxy", environ={"PYARCHIVE_UPLOAD_EXPIRY": "a day"})


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("1K", 1024), ("1KiB", 1024), ("64MiB", 64 * 2**20), ("2g", 2 * 2**30)],
)
def test_sizes_read_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("250ms", 0.25), ("24h", 86400.0)])
def test_durations_read_their_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


# ---------------------------------------------------------------- database URLs


def test_a_sqlite_url_names_a_file() -> None:
    assert parse_database_url("sqlite:////var/lib/db.sqlite3").path == "/var/lib/db.sqlite3"
    assert parse_database_url("sqlite:///tmp/x/meta.sqlite3").path == "/tmp/x/meta.sqlite3"
    assert parse_database_url("sqlite:///tmp/a%20b.sqlite3").path == "/tmp/a b.sqlite3"


def test_a_postgresql_url_becomes_connection_keywords_and_a_schema() -> None:
    url = parse_database_url("postgresql://postgres:pw%40rd@127.0.0.1:5432/pyarchive?schema=t_1")
    assert url.dialect == "postgresql"
    assert url.dsn == {
        "dbname": "pyarchive",
        "host": "127.0.0.1",
        "port": "5432",
        "user": "postgres",
        "password": "pw@rd",
    }
    assert url.schema == "t_1"
    assert parse_database_url("postgres://localhost").dsn == {
        "dbname": "postgres",
        "host": "localhost",
    }


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "mysql://root@localhost/db",
        "db.sqlite3",
        "postgresql://localhost/db?schema=x;drop",
        "postgresql://localhost/db?schema=a-b",
    ],
)
def test_an_unusable_database_url_is_refused(url: str) -> None:
    with pytest.raises(DatabaseUrlError):
        parse_database_url(url)


# ---------------------------------------------------------------- small bodies


@pytest.mark.parametrize(
    ("body", "content_type", "fields"),
    [
        (b'{"md5": "abc"}', "application/json", {"md5": "abc"}),
        (b'{"version": 2}', "application/json; charset=utf-8", {"version": 2}),
        (b'{"a": 1}', None, {"a": 1}),
        (b"username=al%20ice&password=p%26w", "application/x-www-form-urlencoded", None),
        (b"md5=", "application/x-www-form-urlencoded", {"md5": ""}),
        (b"", "application/json", {}),
        (b"  \r\n", "text/plain", {}),
    ],
)
def test_a_small_body_is_read_as_json_or_a_form(
    body: bytes, content_type: str | None, fields: dict[str, Any] | None
) -> None:
    expected = fields if fields is not None else {"username": "al ice", "password": "p&w"}
    assert parse_small_body(body, content_type) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "reason", "status"),
    [
        (b"{not json", "application/json", "not valid JSON", 400),
        (b"[1, 2]", "application/json", "must be a JSON object", 400),
        (b'"text"', None, "must be a JSON object", 400),
        (b"\xff\xfe", "application/json", "not valid JSON", 400),
        (b"a=\xff", "application/x-www-form-urlencoded", "not UTF-8", 400),
        (b"<xml/>", "application/xml", "Unsupported Content-Type", 415),
    ],
)
def test_an_unreadable_small_body_is_refused(
    body: bytes, content_type: str | None, reason: str, status: int
) -> None:
    with pytest.raises(BadRequest, match=reason) as caught:
        parse_small_body(body, content_type)
    assert caught.value.status == status


def test_a_form_with_too_many_fields_is_refused() -> None:
    body = "&".join(f"f{n}=x" for n in range(60)).encode()
    with pytest.raises(BadRequest, match="too many fields"):
        parse_small_body(body, "application/x-www-form-urlencoded")


def test_unknown_fields_are_named_in_the_refusal() -> None:
    check_fields({"md5": "x"}, {"md5"})
    with pytest.raises(BadRequest, match="Unknown fields: colour, size") as caught:
        check_fields({"md5": "x", "size": "1", "colour": "red"}, {"md5"})
    assert caught.value.extra == {"fields": ["colour", "size"]}


# ---------------------------------------------------------------- upload claims


@pytest.fixture
def progress() -> UploadProgress:
    return UploadProgress(None, ThreadPool())  # type: ignore[arg-type]  # no md5 lanes here


def test_a_free_upload_is_claimed_at_once(progress: UploadProgress) -> None:
    first = object()
    claimed = progress.claim("u", first)
    assert claimed.called
    assert not progress.try_claim("u", object())
    assert progress.try_claim("other upload", object())


def test_claims_are_handed_over_in_the_order_they_were_asked_for(
    progress: UploadProgress,
) -> None:
    holder, second, third = object(), object(), object()
    assert progress.try_claim("u", holder)
    order: list[object] = []
    progress.claim("u", second).addCallback(lambda _: order.append(second))
    progress.claim("u", third).addCallback(lambda _: order.append(third))
    assert order == []

    progress.release("u", holder)
    assert order == [second]
    assert not progress.try_claim("u", object())  # handed straight over, never free

    progress.release("u", second)
    assert order == [second, third]
    progress.release("u", third)
    assert progress.try_claim("u", object())


def test_a_release_by_someone_not_holding_the_claim_changes_nothing(
    progress: UploadProgress,
) -> None:
    holder, waiter = object(), object()
    assert progress.try_claim("u", holder)
    handed = progress.claim("u", waiter)
    progress.release("u", waiter)  # not the holder yet
    progress.release("u", object())
    assert not handed.called
    progress.release("u", holder)
    assert handed.called


def test_the_offset_is_what_was_last_acknowledged_until_forgotten_and_only_its_owner_sees_it(
    progress: UploadProgress,
) -> None:
    assert progress.offset("u", 7) is None
    progress.acknowledged("u", 0, 100, None, owner=7)
    progress.acknowledged("u", 100, 250, None, owner=7)
    assert (progress.offset("u", 7), progress.offset("u", 8)) == (250, None)
    progress.learn_offset("u", 0, owner=8)  # never over one it knows
    assert (progress.offset("u", 7), progress.offset("u", 8)) == (250, None)
    progress.forget("u")
    assert progress.offset("u", 7) is None
    progress.learn_offset("u", 250, owner=7)
    assert (progress.offset("u", 7), progress.offset("u", 8)) == (250, None)


# ---------------------------------------------------------------- shared helpers


def test_the_examples_of_the_hex_id_check_and_the_retry_waits_hold() -> None:
    for module in (common.hex32, common.backoff):
        results = doctest.testmod(module)
        assert results.attempted >= 2 and results.failed == 0, module.__name__


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_a_positioned_write_writes_every_byte_even_when_the_system_writes_less(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrap: Any
) -> None:
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, at: real_pwrite(fd, data[:3], at))
    path = tmp_path / "blob"
    path.write_bytes(b"-" * 12)
    fd = os.open(path, os.O_WRONLY)
    try:
        common.durable.pwrite_all(fd, wrap(b"0123456789"), 1)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"-0123456789-"


class _FakeReactor:
    """Just enough of a reactor for ``serve_forever``: ``run`` runs the start-up calls."""

    def __init__(self) -> None:
        self.when_running: list[Any] = []
        self.stopped = False

    def callWhenRunning(self, f: Any) -> None:
        self.when_running.append(f)

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        pass

    def run(self) -> None:
        for f in self.when_running:
            f()

    def stop(self) -> None:
        self.stopped = True


class _Host:
    host, port = "127.0.0.1", 8080


class _Port:
    def getHost(self) -> _Host:
        return _Host()


class _StartedService:
    async def start(self) -> Any:
        return _Port()

    async def stop(self) -> None:
        pass


def test_a_started_service_leaves_what_start_up_built_out_of_the_collectors_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import gc

    from common.running import serve_forever

    gc.unfreeze()
    try:
        reactor = _FakeReactor()
        serve_forever(reactor, _StartedService(), "test", lambda a: f"serving on {a.port}")
        assert capsys.readouterr().out == "serving on 8080\n"
        assert not reactor.stopped
        assert gc.get_freeze_count() > 0  # what existed at start-up is frozen
    finally:
        gc.unfreeze()


_LOGIN_IN_A_FRESH_PROCESS = """
import sys, threading
from common.running import return_large_blocks
if sys.argv[1] == "fixed":
    assert return_large_blocks()
from common.passwords import hash_password  # hashes once as it loads
def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss_kib()
for _ in range(2):  # as a login does: on one of the database threads
    t = threading.Thread(target=hash_password, args=("a password of some length",))
    t.start()
    t.join()
print(rss_kib() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_password_hash_gives_its_19_mib_back_to_the_system_once_done() -> None:
    import subprocess
    import sys

    from common.passwords import MEMORY_KIB
    from common.running import MMAP_THRESHOLD

    assert MMAP_THRESHOLD < MEMORY_KIB * 1024  # argon2's block is above the threshold

    def growth_kib(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _LOGIN_IN_A_FRESH_PROCESS, mode],
            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        return int(done.stdout.strip())

    # glibc's own adjustment keeps the block in the thread's heap: the control shows what the
    # test would see without the fixed threshold
    assert growth_kib("glibc-default") > MEMORY_KIB * 3 // 4
    assert growth_kib("fixed") < MEMORY_KIB // 4
