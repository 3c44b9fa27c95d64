"""The document generated from the route declarations against the hand-written one it
replaced (frozen in tests/data/openapi-before-contract.json): nothing documented is lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.api.openapi import openapi_spec, operations

BEFORE = json.loads((Path(__file__).parent / "data" / "openapi-before-contract.json").read_text())
NOW = openapi_spec("http://127.0.0.1:8000")
METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): {**op, "path_parameters": item.get("parameters", [])}
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = doc["components"][kind][name]
    return node


def _shape(doc: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """What a schema promises about a JSON value's structure: object keys, array items."""
    schema = _resolve(doc, schema)
    if not isinstance(schema, dict) or depth > 4:
        return None
    for variant in schema.get("anyOf", []):  # msgspec writes nullable values as anyOf
        if _resolve(doc, variant).get("type") != "null":
            return _shape(doc, variant, depth)
    if "properties" in schema:
        props = schema["properties"]
        return {name: _shape(doc, value, depth + 1) for name, value in props.items()}
    if schema.get("type") == "array":
        return [_shape(doc, schema.get("items"), depth + 1)]
    return None


def _covers(now: Any, before: Any) -> bool:
    """``now`` promises at least what ``before`` did (it may document more)."""
    if isinstance(before, dict):
        return isinstance(now, dict) and all(
            key in now and _covers(now[key], value) for key, value in before.items()
        )
    if isinstance(before, list):
        return isinstance(now, list) and _covers(now[0], before[0])
    return True


def _parameters(doc: dict[str, Any], op: dict[str, Any]) -> set[tuple[str, str]]:
    found = [_resolve(doc, p) for p in [*op["path_parameters"], *op.get("parameters", [])]]
    return {(p["in"], p["name"]) for p in found}


BEFORE_OPS, NOW_OPS = _operations(BEFORE), _operations(NOW)


def test_the_comparison_can_fail() -> None:
    before = {"a": None, "b": [{"c": None}]}
    assert _covers({"a": None, "b": [{"c": None, "d": None}], "e": None}, before)
    assert not _covers({"a": None, "b": [{"d": None}]}, before)
    assert not _covers({"b": [{"c": None}]}, before)


# Operations added since the move, by the issue that added them.
ADDED = {
    # tus 1.0 (issue 10)
    ("OPTIONS", "/files/"),
    ("OPTIONS", "/files/{upload_id}"),
    ("POST", "/files/"),
    ("HEAD", "/files/{upload_id}"),
    ("PATCH", "/files/{upload_id}"),
    ("DELETE", "/files/{upload_id}"),
    # the unfinished uploads, for the web application's resume (issue 11)
    ("GET", "/storage/tmp-upload/"),
    # accounts administered by staff, and one's own (issue 12)
    ("GET", "/api/users/"),
    ("POST", "/api/users/"),
    ("GET", "/api/users/{username}/"),
    ("PATCH", "/api/users/{username}/"),
    ("POST", "/api/users/{username}/password"),
    ("GET", "/api/me"),
    ("POST", "/api/me/sign-out-everywhere"),
    # live events (issue 11)
    ("GET", "/api/events"),
    ("GET", "/api/changes"),
    # moving a file to another path (issue 13)
    ("PATCH", "/storage/files/{file_id}/"),
    # failed logins and clearing a throttle, run-time settings (issue 12)
    ("GET", "/api/login-failures/"),
    ("DELETE", "/api/login-failures/accounts/{username}"),
    ("DELETE", "/api/login-failures/addresses/{address}"),
    ("GET", "/api/settings/"),
    ("PATCH", "/api/settings/"),
}


# Query arguments added to operations documented before, by the issue that added them.
ADDED_PARAMETERS = {
    # the system log's time range and pages, for the console (issue 12)
    ("GET", "/api/system-log/"): {("query", "until"), ("query", "before")},
    # files have paths (issue 13)
    ("PUT", "/storage/tmp-upload/"): {("query", "path")},
    ("POST", "/storage/tmp-upload/"): {("query", "path")},
    # ... and the keyset cursor (issue 15)
    ("GET", "/storage/files/"): {
        ("query", "page_size"),
        ("query", "prefix"),
        ("query", "path"),
        ("query", "after"),
    },
}
# Summaries that said something an issue made untrue, and what they say now.
RESTATED = {
    # issue 13: files are listed by path (a stable order for paging), no longer newest first
    ("GET", "/storage/files/"): "List your files by path, a page at a time",
}


def test_every_operation_documented_before_is_documented_now_and_no_more() -> None:
    assert set(NOW_OPS) == set(BEFORE_OPS) | ADDED
    assert len(operations()) == len(NOW_OPS)


@pytest.mark.parametrize("key", sorted(BEFORE_OPS), ids=" ".join)
def test_each_operation_keeps_what_it_documented(key: tuple[str, str]) -> None:
    before, now = BEFORE_OPS[key], NOW_OPS[key]
    for field in ("operationId", "tags", "security"):
        assert now.get(field) == before.get(field), field
    assert now.get("summary") == RESTATED.get(key, before.get("summary"))
    # Kept word for word; more may follow (e.g. issue 13's `path`).
    assert now.get("description", "").startswith(before.get("description", ""))
    added = ADDED_PARAMETERS.get(key, set())
    assert _parameters(NOW, now) == _parameters(BEFORE, before) | added
    assert not added & _parameters(BEFORE, before)
    assert set(before["responses"]) <= set(now["responses"])
    for status, answer in before["responses"].items():
        was, is_ = _resolve(BEFORE, answer), _resolve(NOW, now["responses"][status])
        # Kept word for word; more may follow (e.g. issue 12's quota on a 413).
        assert is_["description"].startswith(was["description"]), status
        assert sorted(is_.get("content", {})) == sorted(was.get("content", {})), status
        assert sorted(is_.get("headers", {})) == sorted(was.get("headers", {})), status
        for media, content in was.get("content", {}).items():
            shape = _shape(NOW, is_["content"][media].get("schema"))
            assert _covers(shape, _shape(BEFORE, content.get("schema"))), (status, media)
    if "requestBody" in before:
        was_body, now_body = before["requestBody"], now["requestBody"]
        assert sorted(now_body["content"]) == sorted(was_body["content"])
        # A body may become optional where the proxy takes none (documenting more), never
        # newly required.
        assert now_body.get("required", False) <= was_body.get("required", False)
        for media, content in was_body["content"].items():
            shape = _shape(NOW, now_body["content"][media]["schema"])
            assert _covers(shape, _shape(BEFORE, content["schema"])), media
    else:
        assert "requestBody" not in now


def test_answers_allow_no_undeclared_property_and_errors_allow_more() -> None:
    schemas = NOW["components"]["schemas"]
    assert schemas["Error"]["additionalProperties"] is True
    for name in ("Upload", "File", "FileList", "Node", "Job", "S3Connection", "User"):
        assert schemas[name]["additionalProperties"] is False, name
