"""The msgspec types of ``proxy.api.types`` say what today's hand-written OpenAPI document says.

``tests/data/openapi-before-contract.json`` is the document as it was written by hand. Every
object schema in it, whether a component or written inline in a path, has a row in ``TABLE``
naming the type that replaces it, and the schema msgspec generates for that type must agree
with it: the same properties, ``required`` set, JSON types, enums, patterns, formats, bounds and
descriptions. The few things msgspec cannot say the same way are listed in ``EXCEPTIONS``.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.api import types

Json = dict[str, Any]

REF = "#/components/schemas/{name}"
BEFORE: Json = json.loads(
    (Path(__file__).parent / "data" / "openapi-before-contract.json").read_text("utf-8")
)
_, GENERATED = msgspec.json.schema_components(types.COMPONENTS, ref_template=REF)


def _answer(path: str, method: str, status: str = "200") -> str:
    """The JSON pointer of an operation's JSON answer schema."""
    escaped = path.replace("~", "~0").replace("/", "~1")
    return f"/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"


def _body(path: str, method: str) -> str:
    """The JSON pointer of an operation's JSON request body schema."""
    escaped = path.replace("~", "~0").replace("/", "~1")
    return f"/paths/{escaped}/{method}/requestBody/content/application~1json/schema"


# (today's JSON pointer, the type that replaces that schema)
TABLE: list[tuple[str, type]] = [
    ("/components/schemas/Error", types.Error),
    ("/components/schemas/Health", types.Health),
    ("/components/schemas/Registration", types.Registration),
    ("/components/schemas/User", types.User),
    ("/components/schemas/Credentials", types.Credentials),
    ("/components/schemas/Token", types.Token),
    ("/components/schemas/Upload", types.Upload),
    ("/components/schemas/ChunkForm", types.ChunkForm),
    ("/components/schemas/WholeFileForm", types.WholeFileForm),
    ("/components/schemas/Completion", types.Completion),
    ("/components/schemas/Version", types.Version),
    ("/components/schemas/File", types.File),
    ("/components/schemas/File/properties/parts/items", types.FilePart),
    ("/components/schemas/File/properties/restore", types.FileRestore),
    ("/components/schemas/FileList", types.FileList),
    ("/components/schemas/Rollback", types.Rollback),
    ("/components/schemas/RemoteAction", types.RemoteAction),
    (_answer("/api/nodes/", "get") + "/items", types.Node),
    (_body("/api/nodes/", "post"), types.NewNode),
    (_body("/api/nodes/{name}/", "patch"), types.NodeChange),
    (_answer("/api/jobs/", "get") + "/items", types.Job),
    (_body("/api/jobs/{name}/", "patch"), types.JobInterval),
    (_answer("/api/jobs/{name}/run", "post"), types.JobRun),
    (_answer("/api/system-log/", "get") + "/items", types.LogEntry),
    (_answer("/api/s3-connections/", "get") + "/items", types.S3Connection),
    (_body("/api/s3-connections/", "post"), types.NewS3Connection),
    (_body("/api/s3-connections/{name}/", "patch"), types.S3ConnectionChange),
]

# What the proxy sends back: these must not take fields the schema does not list.
ANSWERS: list[type] = [
    types.Health,
    types.User,
    types.Token,
    types.Upload,
    types.Version,
    types.File,
    types.FilePart,
    types.FileRestore,
    types.FileReplica,
    types.FileList,
    types.RemoteAction,
    types.Node,
    types.Job,
    types.JobRun,
    types.LogEntry,
    types.S3Connection,
    types.Event,
    types.Changes,
    types.UserAccount,
    types.UserAccounts,
    types.Me,
    types.SignedOut,
    types.AccountFailures,
    types.AddressFailures,
    types.LoginFailures,
    types.ThrottleCleared,
    types.Settings,
]

# What the document lacked although the proxy sent it (drift the generated document fixed):
# the file detail's replicas and mirror fields, and the type of a replica.
ADDED: dict[type, set[str]] = {
    # content_type: tus; path: files have paths (issue 13)
    types.File: {"replicas", "mirror_node", "mirror_detail", "content_type", "path"},
    # the list of unfinished uploads (issue 11); sha256: the completion says it (issue 15)
    types.Upload: {"dialect", "tus_url", "path", "sha256"},
    types.ChunkForm: {"path"},  # issue 13
    types.WholeFileForm: {"path"},
}
# Properties no longer required, and why.
NOT_REQUIRED: dict[type, set[str]] = {
    types.WholeFileForm: {"filename"},  # a `path` may name the file instead (issue 13)
}
# Property descriptions an issue made untrue, rewritten: (type, property) -> the issue.
DESCRIBED_ANEW: dict[tuple[type, str], str] = {
    (types.FileList, "results"): "issue 13: files are listed by path, no longer newest first",
    (types.ChunkForm, "filename"): "issue 13: a `path` may name the file instead",
    (types.File, "remote_state"): "issue 13: listed files carry it too, and every state is named",
}
NEW_TYPES: set[type] = {
    types.FileReplica,
    *(types.Event, types.Changes),  # events: issue 11
    *(types.UserAccount, types.UserAccounts, types.UserChange, types.NewUserAccount),  # 12
    *(types.PasswordReset, types.Me, types.SignedOut),
    # failed logins and the run-time settings: issue 12 too
    *(types.AccountFailures, types.AddressFailures, types.LoginFailures, types.ThrottleCleared),
    *(types.Settings, types.SettingsChange),
}

# (type, property, keyword) -> the value msgspec writes that today's document does not have.
EXCEPTIONS: dict[tuple[type, str, str], Any] = {
    # msgspec describes every bytes type as base64 text and no Meta can remove the keyword;
    # a multipart file part is raw bytes, so the document generator should drop it.
    (types.ChunkForm, "file", "contentEncoding"): "base64",
    (types.WholeFileForm, "file", "contentEncoding"): "base64",
}

# Input fields whose schema now says what the proxy checks (a name's characters, a URL's form,
# a number's range), so that schemathesis (tests/test_schemathesis.py) sends only requests the
# proxy accepts as valid ones and sees it refuse the others: (type, property) -> the keywords
# that adds to today's schema. "type" where null is now allowed too: the proxy takes null for
# "the default" there. The values are the types' own; the live test holds them to the proxy.
CHECKED: dict[tuple[type, str], tuple[str, ...]] = {
    (types.Registration, "username"): ("pattern", "maxLength"),
    (types.Registration, "password"): ("minLength", "maxLength"),
    (types.Registration, "email"): ("enum", "type"),  # "" and null mean none
    (types.ChunkForm, "filename"): ("pattern", "maxLength"),
    (types.WholeFileForm, "filename"): ("pattern", "maxLength"),
    (types.Rollback, "version"): ("maximum",),
    (types.NewNode, "name"): ("pattern",),
    (types.NewNode, "url"): ("pattern", "maxLength"),
    (types.NewNode, "rsync_url"): ("pattern", "maxLength"),
    (types.NewNode, "zone"): ("pattern", "type"),  # "" and null mean "default"
    (types.NodeChange, "zone"): ("pattern",),
    (types.NodeChange, "url"): ("pattern", "maxLength"),
    (types.NodeChange, "rsync_url"): ("pattern", "maxLength"),
    (types.JobInterval, "interval"): ("exclusiveMinimum", "maximum", "pattern"),
    **{
        (connection, name): keywords
        for connection in (types.NewS3Connection, types.S3ConnectionChange)
        for name, keywords in {
            "endpoint_url": ("pattern", "type"),  # null means AWS, as "" does
            "region": ("pattern",),
            "bucket": ("pattern", "minLength", "maxLength"),
            "prefix": ("pattern", "maxLength"),
            "access_key": ("pattern",),
            "secret_key": ("pattern",),
        }.items()
    },
    (types.NewS3Connection, "name"): ("pattern",),
}


# ---------------------------------------------------------------- helpers


def _resolve(document: Json, pointer: str) -> Json:
    """The value at a JSON pointer (RFC 6901)."""
    node: Any = document
    for token in pointer.lstrip("/").split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    assert isinstance(node, dict)
    return node


def _key(schema: Json) -> str:
    return json.dumps(schema, sort_keys=True)


# An object schema today's document writes inline stands for the type its row names, as if it
# were a $ref: msgspec always refers to a Struct's component.
_INLINE: dict[str, str] = {_key(_resolve(BEFORE, p)): t.__name__ for p, t in TABLE}

_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _words(text: str) -> str:
    """A description with its line breaks (a docstring's wrapping) made spaces."""
    return " ".join(text.split())


def _normal(schema: Json) -> Json:
    """A property's schema in one spelling for both writers.

    ``type`` becomes a set, so ``["string", "null"]`` and msgspec's ``anyOf`` of a string and a
    null are the same; an enum's type is read off its values (msgspec writes none) and its
    order does not count (msgspec sorts it); ``const`` is a one-value enum; msgspec's ``title``
    and ``default`` are left out.
    """
    if "properties" in schema:
        return {"$ref": REF.format(name=_INLINE[_key(schema)])}
    out = {k: v for k, v in schema.items() if k not in ("title", "default", "anyOf", "const")}
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if "enum" in out:
        out.setdefault("type", sorted({_JSON_TYPE[type(v)] for v in out["enum"]}))
        out["enum"] = {json.dumps(v) for v in out["enum"]}
    if "type" in out:
        out["type"] = {out["type"]} if isinstance(out["type"], str) else set(out["type"])
    if "description" in out:
        out["description"] = _words(out["description"])
    if "items" in out:
        out["items"] = _normal(out["items"])
    if "anyOf" in schema:
        merged: Json = {"type": set()}
        for branch in map(_normal, schema["anyOf"]):
            merged["type"] |= branch.pop("type", set())
            merged.update(branch)
        out = {**merged, **out}  # the words beside anyOf win over a branch's
    return out


def _object_schemas(node: Any) -> Iterator[Json]:
    """Every object schema with properties anywhere in a document."""
    if isinstance(node, dict):
        if "properties" in node:
            yield node
        for value in node.values():
            yield from _object_schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _object_schemas(value)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize(("pointer", "type_"), TABLE, ids=[t.__name__ for _, t in TABLE])
def test_a_type_generates_the_schema_it_replaces(pointer: str, type_: type) -> None:
    today = _resolve(BEFORE, pointer)
    generated = GENERATED[type_.__name__]

    assert generated["type"] == today["type"] == "object"
    added = ADDED.get(type_, set())
    assert set(generated["properties"]) - added == set(today["properties"])
    relaxed = NOT_REQUIRED.get(type_, set())
    assert set(generated["required"]) == set(today["required"]) - relaxed
    if "description" in today:  # a description may be added, never lost or changed
        assert _words(generated.get("description", "")) == _words(today["description"])

    for name, was in today["properties"].items():
        want, got = _normal(was), _normal(generated["properties"][name])
        for (exempt, prop, keyword), value in EXCEPTIONS.items():
            if (exempt, prop) == (type_, name):
                assert got.pop(keyword) == value
        for keyword in CHECKED.get((type_, name), ()):
            added = got.pop(keyword)
            if keyword == "type":  # widened, never narrowed
                assert want.pop(keyword) < added
        if "description" not in want or (type_, name) in DESCRIBED_ANEW:
            got.pop("description", None)
            want.pop("description", None)
        assert got == want, name


def test_every_object_schema_of_todays_document_has_a_type() -> None:
    covered = {_key(_resolve(BEFORE, pointer)) for pointer, _ in TABLE}
    missing = [s for s in _object_schemas(BEFORE) if _key(s) not in covered]
    assert missing == []


def test_components_lists_every_type_once_under_its_own_name() -> None:
    assert len(set(types.COMPONENTS)) == len(types.COMPONENTS)
    assert set(types.COMPONENTS) == {t for _, t in TABLE} | NEW_TYPES
    assert set(GENERATED) == {t.__name__ for t in types.COMPONENTS}


@pytest.mark.parametrize("type_", ANSWERS, ids=[t.__name__ for t in ANSWERS])
def test_an_answer_lists_all_its_fields(type_: type) -> None:
    assert GENERATED[type_.__name__]["additionalProperties"] is False
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"surprise": 1}, type_)


def test_request_bodies_refuse_unknown_fields_as_the_proxy_does() -> None:
    # Today's document said nothing of them, but the proxy answers an unknown field with 400.
    bodies = set(types.COMPONENTS) - set(ANSWERS) - {types.Error}
    today = {type_: _resolve(BEFORE, pointer) for pointer, type_ in TABLE}
    assert bodies
    for type_ in bodies:
        assert GENERATED[type_.__name__]["additionalProperties"] is False, type_.__name__
        if type_ in today:  # a body new since that document was not in it
            assert "additionalProperties" not in today[type_], type_.__name__


def test_the_checked_fields_are_fields_of_request_bodies() -> None:
    for type_, name in CHECKED:
        assert type_ not in ANSWERS
        assert name in GENERATED[type_.__name__]["properties"], (type_, name)


def test_an_error_may_carry_more_fields() -> None:
    # Today's document says "additionalProperties": true; msgspec cannot write that on a
    # Struct, and leaving the keyword out means the same in JSON Schema.
    assert BEFORE["components"]["schemas"]["Error"]["additionalProperties"] is True
    assert "additionalProperties" not in GENERATED["Error"]
    error = msgspec.json.decode(
        b'{"detail": "Offsets do not match", "offset": 5}', type=types.Error
    )
    assert error == types.Error(detail="Offsets do not match")
