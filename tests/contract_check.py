"""Every JSON answer the service tests see is checked against the generated OpenAPI document:
the operation is found by method and path, the status must be one it declares, and the body
must fit that status's schema (answers allow no undeclared property)."""

from __future__ import annotations

import re
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker

from proxy.api.openapi import openapi_spec


@cache
def _document() -> dict[str, Any]:
    return openapi_spec("http://127.0.0.1")


@cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    found = []
    for path in _document()["paths"]:
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path))
        found.append((re.compile(pattern + r"\Z"), path))
    return found


def _operation(method: str, url: str) -> dict[str, Any] | None:
    path = urlsplit(url).path
    for pattern, template in _templates():
        if pattern.match(path):
            op = _document()["paths"][template].get(method.lower())
            return op if isinstance(op, dict) else None
    return None


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = _document()["components"][kind][name]
    return node


def check_answer(method: str, url: str, status: int, body: Any) -> None:
    """Fail unless ``body`` is what the document says ``method url`` answers with ``status``."""
    op = _operation("GET" if method == "HEAD" else method, url)
    if op is None:
        return  # no such route: the routing error (404/405) is not an operation's answer
    responses = op["responses"]
    assert str(status) in responses, f"{method} {url} answered {status}, not documented"
    content = _resolve(responses[str(status)]).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return
    root = {**schema, "components": _document()["components"]}
    errors = sorted(
        Draft202012Validator(root, format_checker=FormatChecker()).iter_errors(body), key=str
    )
    assert not errors, f"{method} {url} {status}: {errors[0].message} at {list(errors[0].path)}"


def declared_routes(
    *prefixes: str, name: str, bodies: dict[str, dict[str, Any]] | None = None
) -> list[tuple[str, str, dict[str, Any] | None]]:
    """The declared routes under ``prefixes`` as (method, path, body) for a request, with
    ``{name}`` filled in; where the route takes a body, ``bodies[method]`` (else ``{}``). Read
    off the declarations, so a route added there is covered by the tests that use this list."""
    from proxy.api.openapi import operations

    samples = bodies or {}
    return [
        (
            op.method,
            op.path.replace("{name}", name),
            samples.get(op.method, {}) if op.has_body else None,
        )
        for op in operations()
        if op.path.startswith(prefixes)
    ]
