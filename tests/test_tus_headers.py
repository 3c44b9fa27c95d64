"""The tus header rules on their own (``proxy.api.tus_headers``), and the modules' examples."""

from __future__ import annotations

import base64
import doctest
import hashlib

import pytest

from common.errors import BadRequest
from proxy.api import tus_headers
from proxy.api.tus_headers import (
    PreconditionFailed,
    check_version,
    number,
    parse_checksum,
    parse_metadata,
)
from proxy.uploads import tus


@pytest.mark.parametrize("module", [tus_headers, tus], ids=lambda m: m.__name__)
def test_the_examples_in_the_docstrings_hold(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_only_version_1_0_0_is_spoken() -> None:
    check_version("1.0.0")
    for other in (None, "", "0.2.2", "1.0", "1.0.0,0.2.2"):
        with pytest.raises(PreconditionFailed) as refused:
            check_version(other)
        assert refused.value.status == 412 and refused.value.extra["version"] == "1.0.0"


@pytest.mark.parametrize("value", ["-1", "1.5", "", "١٠", "1" * 20, "0x10"])
def test_a_byte_count_is_a_plain_non_negative_number(value: str) -> None:
    with pytest.raises(BadRequest):
        number(value, "Upload-Length")


def test_metadata_values_are_base64_text_and_keys_alone_are_empty() -> None:
    name = base64.b64encode("Straße 1.txt".encode()).decode()
    assert parse_metadata(f"filename {name}, flag,empty ") == {
        "filename": "Straße 1.txt", "flag": "", "empty": "",
    }  # fmt: skip
    for bad in ("a b c", "a,a", "k " + base64.b64encode(b"\xff").decode(), "x" * 5000):
        with pytest.raises(BadRequest):
            parse_metadata(bad)


def test_checksums_name_a_known_algorithm_and_a_digest_of_its_size() -> None:
    digest = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    found = parse_checksum(f"sha256 {digest}")
    assert found is not None and found.digest == hashlib.sha256(b"x").digest()
    for bad in (f"crc32 {digest}", f"sha1 {digest}", "sha256 !!!", "sha256"):
        with pytest.raises(BadRequest):
            parse_checksum(bad)
