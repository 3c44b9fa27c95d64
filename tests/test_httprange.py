"""The pure range, validator and download-header rules of ``common.httprange``."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import httprange
from common.errors import RangeNotSatisfiable
from common.httprange import (
    MAX_RANGES,
    ByteRange,
    content_disposition,
    format_http_date,
    if_range_allows,
    not_modified,
    parse_http_date,
    parse_range,
)

SIZE = 1234
ETAG = '"v1"'
# Sun, 06 Nov 1994 08:49:37 GMT
MODIFIED = 784111777.25


def test_the_examples_in_the_docstrings_hold() -> None:
    failed, attempted = doctest.testmod(httprange, optionflags=doctest.ELLIPSIS)
    assert attempted > 0
    assert failed == 0


# ByteRange


def test_a_byte_range_counts_both_ends() -> None:
    assert ByteRange(0, 0).length == 1
    assert ByteRange(10, 19).length == 10


def test_a_byte_range_describes_itself_as_a_content_range() -> None:
    assert ByteRange(500, 999).content_range(1000) == "bytes 500-999/1000"


@pytest.mark.parametrize(("start", "end"), [(-1, 3), (5, 4)])
def test_a_byte_range_that_ends_before_it_starts_cannot_be_made(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="not a byte range"):
        ByteRange(start, end)


def test_a_byte_range_is_a_frozen_value() -> None:
    byte_range = ByteRange(1, 2)
    with pytest.raises(AttributeError):
        byte_range.start = 0  # type: ignore[misc]
    assert byte_range == ByteRange(1, 2)


# parse_range: what it selects


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-499", [(0, 499)]),
        ("bytes=500-999", [(500, 999)]),
        ("bytes=500-", [(500, SIZE - 1)]),
        ("bytes=-500", [(SIZE - 500, SIZE - 1)]),
        ("bytes=0-0,-1", [(0, 0), (SIZE - 1, SIZE - 1)]),
        ("bytes=0-0, -1", [(0, 0), (SIZE - 1, SIZE - 1)]),
        ("bytes=10-19,0-9", [(10, 19), (0, 9)]),
        ("bytes=1233-1233", [(1233, 1233)]),
    ],
)
def test_a_satisfiable_range_selects_those_bytes(
    header: str, expected: list[tuple[int, int]]
) -> None:
    assert parse_range(header, SIZE) == [ByteRange(s, e) for s, e in expected]


def test_an_end_past_the_last_byte_is_clamped_to_it() -> None:
    assert parse_range("bytes=1000-5000", SIZE) == [ByteRange(1000, SIZE - 1)]


def test_a_suffix_longer_than_the_file_selects_all_of_it() -> None:
    assert parse_range("bytes=-5000", SIZE) == [ByteRange(0, SIZE - 1)]


def test_the_unit_is_case_insensitive_and_may_be_padded() -> None:
    assert parse_range("Bytes =0-1", SIZE) == [ByteRange(0, 1)]


def test_empty_list_elements_are_ignored() -> None:
    assert parse_range("bytes=, 0-1,,", SIZE) == [ByteRange(0, 1)]


def test_leading_zeros_do_not_change_a_number() -> None:
    assert parse_range("bytes=0010-0019", SIZE) == [ByteRange(10, 19)]


def test_unsatisfiable_ranges_among_satisfiable_ones_are_dropped() -> None:
    assert parse_range("bytes=5000-6000,0-1", SIZE) == [ByteRange(0, 1)]


# parse_range: when the header is ignored (None: send 200)


def test_no_header_means_the_whole_file() -> None:
    assert parse_range(None, SIZE) is None


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",
        "bytes=",
        "bytes= , ",
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=-",
        "bytes=5-4",
        "bytes=0-1,5-4",
        "bytes=+1-2",
        "bytes=1_0-20",
        "bytes=١-٢",  # Arabic-Indic digits are digits to int(), not to HTTP
        "bytes=0x10-0x20",
        "bytes=1 - 2",
        "items=0-1",
        "0-1",
    ],
)
def test_a_malformed_header_or_another_unit_is_ignored(header: str) -> None:
    assert parse_range(header, SIZE) is None


def test_more_than_the_maximum_number_of_ranges_is_ignored() -> None:
    allowed = ",".join(f"{i}-{i}" for i in range(MAX_RANGES))
    assert parse_range(f"bytes={allowed}", SIZE) is not None
    too_many = ",".join(f"{i}-{i}" for i in range(MAX_RANGES + 1))
    assert parse_range(f"bytes={too_many}", SIZE) is None


def test_overlapping_ranges_adding_up_to_more_than_the_file_are_ignored() -> None:
    assert parse_range("bytes=0-,0-", SIZE) is None
    assert parse_range("bytes=0-999,500-", SIZE) is None


def test_overlapping_ranges_within_the_size_of_the_file_are_kept() -> None:
    assert parse_range("bytes=0-9,5-14", SIZE) == [ByteRange(0, 9), ByteRange(5, 14)]


def test_an_empty_file_ignores_any_range() -> None:
    assert parse_range("bytes=0-0", 0) is None
    assert parse_range("bytes=-1", 0) is None


def test_a_malformed_header_on_an_empty_file_is_still_ignored() -> None:
    assert parse_range("bytes=x", 0) is None


# parse_range: unsatisfiable (416)


@pytest.mark.parametrize("header", ["bytes=1234-", "bytes=5000-6000", "bytes=-0", "bytes=2000-,-0"])
def test_a_valid_header_selecting_nothing_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, SIZE)
    assert raised.value.status == 416
    assert raised.value.extra == {"size": SIZE}
    assert raised.value.body() == {"detail": "Requested range not satisfiable", "size": SIZE}


# parse_range: abuse


def test_a_number_with_a_huge_digit_count_does_not_blow_up() -> None:
    huge = "9" * 20_000
    assert parse_range(f"bytes=0-{huge}", SIZE) == [ByteRange(0, SIZE - 1)]
    assert parse_range(f"bytes=-{huge}", SIZE) == [ByteRange(0, SIZE - 1)]
    with pytest.raises(RangeNotSatisfiable):
        parse_range(f"bytes={huge}-", SIZE)


def test_a_huge_number_padded_with_zeros_is_still_compared_by_value() -> None:
    assert parse_range("bytes=" + "0" * 10_000 + "5-6", SIZE) == [ByteRange(5, 6)]
    assert parse_range("bytes=7-" + "0" * 10_000 + "6", SIZE) is None


def test_a_huge_end_before_a_huger_start_is_invalid() -> None:
    assert parse_range("bytes=" + "9" * 5000 + "-" + "9" * 4999, SIZE) is None


# parse_range: property


@st.composite
def range_specs(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["int", "open", "suffix"]))
    first = draw(st.integers(min_value=0, max_value=10**12))
    if kind == "suffix":
        return f"-{first}"
    if kind == "open":
        return f"{first}-"
    return f"{first}-{first + draw(st.integers(min_value=0, max_value=10**12))}"


@given(
    size=st.integers(min_value=0, max_value=10**9),
    specs=st.lists(range_specs(), min_size=1, max_size=40),
)
def test_every_range_returned_lies_within_the_file(size: int, specs: list[str]) -> None:
    try:
        ranges = parse_range("bytes=" + ",".join(specs), size)
    except RangeNotSatisfiable as unsatisfiable:
        assert unsatisfiable.extra["size"] == size
        return
    if ranges is None:
        return
    assert 1 <= len(ranges) <= min(len(specs), MAX_RANGES)
    for byte_range in ranges:
        assert 0 <= byte_range.start <= byte_range.end < size
    assert sum(byte_range.length for byte_range in ranges) <= size


@given(size=st.integers(min_value=1, max_value=10**9), spec=range_specs())
def test_a_single_valid_range_is_either_served_or_unsatisfiable(size: int, spec: str) -> None:
    try:
        ranges = parse_range(f"bytes={spec}", size)
    except RangeNotSatisfiable:
        return
    assert ranges is not None
    assert len(ranges) == 1


# if_range_allows


def test_without_if_range_the_range_is_honoured() -> None:
    assert if_range_allows(None, ETAG, MODIFIED)


def test_if_range_with_the_current_strong_etag_honours_the_range() -> None:
    assert if_range_allows('"v1"', ETAG, MODIFIED)
    assert if_range_allows('  "v1" ', ETAG, MODIFIED)


def test_if_range_with_another_etag_does_not() -> None:
    assert not if_range_allows('"v2"', ETAG, MODIFIED)


def test_a_weak_etag_never_matches_if_range() -> None:
    assert not if_range_allows('W/"v1"', ETAG, MODIFIED)
    assert not if_range_allows('W/"v1"', 'W/"v1"', MODIFIED)
    assert not if_range_allows('"v1"', 'W/"v1"', MODIFIED)


def test_if_range_with_the_exact_modification_second_honours_the_range() -> None:
    assert if_range_allows("Sun, 06 Nov 1994 08:49:37 GMT", ETAG, MODIFIED)
    assert if_range_allows("Sunday, 06-Nov-94 08:49:37 GMT", ETAG, MODIFIED)
    assert if_range_allows("Sun Nov  6 08:49:37 1994", ETAG, MODIFIED)


@pytest.mark.parametrize("date", ["Sun, 06 Nov 1994 08:49:36 GMT", "Sun, 06 Nov 1994 08:49:38 GMT"])
def test_if_range_with_any_other_date_does_not(date: str) -> None:
    assert not if_range_allows(date, ETAG, MODIFIED)


@pytest.mark.parametrize("value", ["", "v1", "yesterday", "784111777"])
def test_an_unparseable_if_range_does_not_honour_the_range(value: str) -> None:
    assert not if_range_allows(value, ETAG, MODIFIED)


# not_modified


def test_if_none_match_with_the_current_etag_is_not_modified() -> None:
    assert not_modified('"v1"', None, ETAG, MODIFIED)
    assert not_modified('"a", "v1"', None, ETAG, MODIFIED)


def test_if_none_match_compares_weakly() -> None:
    assert not_modified('W/"v1"', None, ETAG, MODIFIED)
    assert not_modified('"v1"', None, 'W/"v1"', MODIFIED)


def test_if_none_match_star_matches_any_etag() -> None:
    assert not_modified(" * ", None, ETAG, MODIFIED)


def test_if_none_match_with_other_etags_is_modified() -> None:
    assert not not_modified('"v2", W/"v3"', None, ETAG, MODIFIED)
    assert not not_modified("v1", None, ETAG, MODIFIED)


def test_an_etag_holding_a_comma_is_not_split() -> None:
    assert not_modified('"a,b"', None, '"a,b"', MODIFIED)
    assert not not_modified('"a,b"', None, '"a"', MODIFIED)


def test_if_modified_since_at_or_after_the_modification_is_not_modified() -> None:
    assert not_modified(None, "Sun, 06 Nov 1994 08:49:37 GMT", ETAG, MODIFIED)
    assert not_modified(None, "Mon, 07 Nov 1994 08:49:37 GMT", ETAG, MODIFIED)


def test_if_modified_since_before_the_modification_is_modified() -> None:
    assert not not_modified(None, "Sun, 06 Nov 1994 08:49:36 GMT", ETAG, MODIFIED)


def test_an_unparseable_if_modified_since_is_modified() -> None:
    assert not not_modified(None, "soon", ETAG, MODIFIED)


def test_if_none_match_overrides_if_modified_since() -> None:
    assert not not_modified('"v2"', "Sun, 06 Nov 1994 08:49:37 GMT", ETAG, MODIFIED)


def test_no_conditions_means_modified() -> None:
    assert not not_modified(None, None, ETAG, MODIFIED)


# HTTP dates


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ],
)
def test_all_three_http_date_forms_are_read(value: str) -> None:
    assert parse_http_date(value) == 784111777


def test_a_two_digit_year_below_70_is_this_century() -> None:
    assert parse_http_date("Thursday, 01-Jan-26 00:00:00 GMT") == 1767225600


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "",
    ],
)
def test_anything_else_is_not_an_http_date(value: str) -> None:
    assert parse_http_date(value) is None


def test_a_formatted_date_reads_back_to_the_second() -> None:
    assert parse_http_date(format_http_date(MODIFIED)) == int(MODIFIED)


# content_disposition


def test_a_plain_name_appears_in_both_parameters() -> None:
    assert content_disposition("backup.tar") == (
        "attachment; filename=\"backup.tar\"; filename*=UTF-8''backup.tar"
    )


def test_a_non_ascii_name_is_percent_encoded_with_an_ascii_stand_in() -> None:
    value = content_disposition("Ünïcode résumé.pdf")
    assert value == (
        'attachment; filename="Unicode resume.pdf"; '
        "filename*=UTF-8''%C3%9Cn%C3%AFcode%20r%C3%A9sum%C3%A9.pdf"
    )


def test_a_name_without_any_ascii_gets_placeholders_in_the_stand_in() -> None:
    assert content_disposition("日本.txt").startswith('attachment; filename="__.txt";')


@pytest.mark.parametrize(
    "name", ['a"b.txt', "a\\b.txt", "a\r\nSet-Cookie: x=1", "a\x00\x1f\x7fb", 'x"; y="z']
)
def test_quotes_backslashes_and_control_characters_never_break_the_header(
    name: str,
) -> None:
    value = content_disposition(name)
    assert value.isascii()
    assert all(" " <= char <= "~" for char in value)
    stand_in = value.split('filename="', 1)[1].split('"; filename*=', 1)[0]
    assert '"' not in stand_in
    assert "\\" not in stand_in
    assert value.count('"') == 2


def test_the_stand_in_has_no_percent_sign_a_client_might_decode() -> None:
    assert 'filename="100_ done.txt"' in content_disposition("100% done.txt")


def test_an_empty_name_still_gives_a_stand_in() -> None:
    assert content_disposition("") == "attachment; filename=\"download\"; filename*=UTF-8''"


def test_a_name_with_a_lone_surrogate_is_still_encoded() -> None:
    assert content_disposition("bad\udcff.bin").endswith("filename*=UTF-8''bad%3F.bin")


@given(st.text())
def test_any_name_gives_a_single_printable_ascii_header_value(name: str) -> None:
    value = content_disposition(name)
    assert all(" " <= char <= "~" for char in value)
    assert value.count('"') == 2
    assert value.startswith('attachment; filename="')
