"""``common.s3``: sealed secrets, the wire form of a connection, key names."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from common.s3 import (
    S3Settings,
    SecretBox,
    SecretError,
    make_client,
    secret_hint,
    settings_from_wire,
    settings_to_wire,
    valid_bucket,
    valid_prefix,
)

if TYPE_CHECKING:
    from tests.s3server import S3Server

SETTINGS = S3Settings(
    bucket="archive", region="eu-west-1", access_key="AKIA1", secret_key="very-secret-value-9876",
    endpoint_url="http://127.0.0.1:9000", prefix="team/pa", name="main",
)  # fmt: skip


def test_a_sealed_secret_opens_only_with_the_same_key_and_purpose() -> None:
    box = SecretBox("configured key", "s3 connection secrets")
    sealed = box.seal("very-secret-value-9876")
    assert "very-secret-value-9876" not in sealed
    assert box.open(sealed) == "very-secret-value-9876"
    for other in (SecretBox("another key", "s3 connection secrets"),
                  SecretBox("configured key", "s3 transport")):  # fmt: skip
        with pytest.raises(SecretError):
            other.open(sealed)
    tampered = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    with pytest.raises(SecretError):
        box.open(tampered)
    with pytest.raises(SecretError):
        box.open("not a token at all")


def test_the_wire_form_carries_the_secret_sealed_and_round_trips() -> None:
    wire = settings_to_wire(SETTINGS, "cluster secret")
    assert "very-secret-value-9876" not in repr(wire)
    assert settings_from_wire(wire, "cluster secret") == SETTINGS
    with pytest.raises(ValueError):
        settings_from_wire(wire, "a different cluster secret")
    with pytest.raises(ValueError):
        settings_from_wire({**wire, "prefix": "../x"}, "cluster secret")
    with pytest.raises(ValueError):
        settings_from_wire({"bucket": "b"}, "cluster secret")


def test_settings_never_show_their_secret() -> None:
    assert "very-secret" not in repr(SETTINGS)
    assert "very-secret" not in str(SETTINGS.public())
    assert SETTINGS.public()["secret_key_hint"] == "…9876"
    assert secret_hint("short") == "…"
    assert SETTINGS.object_key("ab" * 32) == "team/pa/" + "ab" * 32
    assert SETTINGS.metadata_prefix == "team/pa/metadata/"


@pytest.mark.parametrize("prefix", ["pa", "a/b", "x.y-z_1"])
def test_good_prefixes(prefix: str) -> None:
    assert valid_prefix(prefix)


@pytest.mark.parametrize("prefix", ["", "/a", "a/", "a//b", "a b", "../x", "a/./b", "a/.."])
def test_bad_prefixes(prefix: str) -> None:
    assert not valid_prefix(prefix)


def test_bucket_names() -> None:
    assert valid_bucket("my-archive.2026")
    assert not valid_bucket("My_Bucket")
    assert not valid_bucket("a..b")


def test_clients_made_at_once_from_many_threads_share_one_loaded_model_and_all_work(
    s3: S3Server,
) -> None:
    settings = s3.bucket()
    made: list[Any] = []
    errors: list[BaseException] = []

    def make() -> None:
        try:
            client = make_client(settings)
            client.head_bucket(Bucket=settings.bucket)
            made.append(client)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(made) == 8
    # S3's service model was read once, not once per client (a session each read it again).
    assert len({id(client._loader) for client in made}) == 1
