"""A declared body is decoded and validated by the contract before the handler runs.

The handler of a route declared with ``body=SomeStruct`` gets ``body``: a ``SomeStruct`` whose
fields msgspec has checked against the type (kinds, patterns, lengths, ranges). What is wrong
is answered as 400 ``{"detail", "field"}`` in the words the API has always used.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
import pytest
import pytest_twisted
from klein import Klein
from treq.testing import StubTreq
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from common.errors import BadRequest
from common.tokens import TokenClaims
from common.weberrors import answer_errors_as_json
from proxy.api import types as t
from proxy.api.contract import decode_body, install_routes, operation, set_fields
from proxy.api.forms import parse_small_body


class Thing(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern="^[a-z]{1,8}$", description="Lower-case letters.")]
    size: Annotated[int, msgspec.Meta(ge=1)]
    label: Annotated[str, msgspec.Meta(min_length=1, max_length=4)] | msgspec.UnsetType = (
        msgspec.UNSET
    )


def _refused(fields: dict[str, Any], body: Any = Thing) -> tuple[str, Any]:
    with pytest.raises(BadRequest) as caught:
        decode_body(fields, body)
    return caught.value.detail, caught.value.extra.get("field")


def test_a_valid_body_becomes_the_declared_type_with_form_text_read_as_numbers() -> None:
    thing = decode_body({"name": "abc", "size": "3"}, Thing)
    assert thing == Thing(name="abc", size=3)
    assert set_fields(thing) == {"name": "abc", "size": 3}  # label was not given
    assert set_fields(decode_body({"name": "a", "size": 1, "label": "x"}, Thing))["label"] == "x"


@pytest.mark.parametrize(
    ("fields", "detail", "field"),
    [
        ({"size": 1}, "name is required", "name"),
        ({"name": "abc", "size": 1, "label": ""}, "label is required", "label"),
        ({"name": "abc", "size": 1, "label": "toolong"}, "label is too long: at most 4", "label"),
        ({"name": "ABC", "size": 1}, "name is malformed: lower-case letters", "name"),
        ({"name": 7, "size": 1}, "name must be text", "name"),
        ({"name": "abc", "size": "many"}, "size must be a whole number", "size"),
        ({"name": "abc", "size": True}, "size must be a whole number", "size"),
        ({"name": "abc", "size": 0}, "size is not valid: expected `int` >= 1", "size"),
    ],
)
def test_what_is_wrong_is_named_in_the_apis_words(
    fields: dict[str, Any], detail: str, field: str
) -> None:
    found, named = _refused(fields)
    assert found.startswith(detail), found
    assert named == field


def test_the_proxys_own_bodies_are_refused_in_the_same_words() -> None:
    assert _refused({"username": "alice", "password": "short"}, t.Registration) == (
        "password is too short: at least 8 characters",
        "password",
    )
    assert _refused({"version": "two"}, t.Rollback) == ("version must be a whole number", "version")
    assert _refused({"md5": "zz"}, t.Completion) == (
        "md5 is malformed: hex md5 of the whole file",
        "md5",
    )
    # A PATCH's type is an Annotated Struct: it decodes the same way.
    change = decode_body({"bucket": "b-1"}, t.S3ConnectionPatch)
    assert isinstance(change, t.S3ConnectionChange) and change.bucket == "b-1"


class Things:
    """A route declared the way the proxy's are, served in memory."""

    app = Klein()

    def __init__(self) -> None:
        self.got: list[Thing] = []

    def _caller(self, request: IRequest) -> TokenClaims:
        return TokenClaims(1, "alice", False)

    async def _fields(self, request: IRequest, allowed: set[str]) -> dict[str, Any]:
        return parse_small_body(request.content.read(), request.getHeader("content-type"))

    @operation(
        method="POST", path="/things/", operation_id="add", tag="t", summary="Add", body=Thing
    )
    async def add(self, request: IRequest, caller: TokenClaims, body: Thing) -> bytes:
        self.got.append(body)
        request.setResponseCode(201)
        return b""


install_routes(Things, Things.app)
answer_errors_as_json(Things.app, Logger())


@pytest_twisted.ensureDeferred
async def test_the_handler_gets_the_decoded_body_and_never_runs_on_a_bad_one() -> None:
    things = Things()
    client: Any = StubTreq(things.app.resource())  # its methods are made at run time
    ok = await client.post(
        "http://x/things/",
        data=b"name=abc&size=2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert ok.code == 201
    assert things.got == [Thing(name="abc", size=2)]
    bad = await client.post(
        "http://x/things/", json={"name": "abc", "size": 0}, headers={"accept": "application/json"}
    )
    answer = json.loads(await bad.content())
    assert bad.code == 400
    assert answer["field"] == "size"
    assert things.got == [Thing(name="abc", size=2)]  # the handler did not run


def test_an_empty_zone_means_the_default_as_the_document_says() -> None:
    # Found by schemathesis: with `Name | Literal[""]` msgspec held "" to Name's pattern.
    fields = {"name": "n1", "url": "http://h:1", "rsync_url": "rsync://h:2/incoming"}
    assert decode_body({**fields, "zone": ""}, t.NewNode).zone == ""
    assert decode_body({**fields, "zone": None}, t.NewNode).zone is None
    assert decode_body(fields, t.NewNode).zone == "default"
    assert _refused({**fields, "zone": "a b"}, t.NewNode)[1] == "zone"


def test_a_blank_json_body_is_invalid_json_but_no_body_is_no_fields() -> None:
    # Found by schemathesis: a PATCH whose JSON body was " " was taken as "{}".
    assert parse_small_body(b"", "application/json") == {}
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_small_body(b" ", "application/json")
