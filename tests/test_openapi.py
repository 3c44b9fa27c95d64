"""The API description and its documentation page, checked without starting a server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import OpenAPIV31SpecValidator

from proxy.api import docs_page
from proxy.api.docs_page import redoc_asset_path, redoc_html
from proxy.api.openapi import openapi_spec
from proxy.api.openapi import operations as declared_operations

# Read off the route declarations, not kept by hand.
ROUTES = [(op.method, op.path) for op in declared_operations()]

SERVER = "http://127.0.0.1:8000"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs/redoc/"),
    ("GET", "/docs/redoc/redoc.standalone.js"),
    ("POST", "/api/auth/register"),
    ("POST", "/api-token-auth/"),
    ("OPTIONS", "/files/"),  # tus: what the server supports (and CORS preflights)
    ("OPTIONS", "/files/{upload_id}"),
}


@pytest.fixture
def spec() -> dict[str, Any]:
    return openapi_spec(SERVER)


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def takes_input(spec: dict[str, Any], method: str, path: str) -> bool:
    op = operations(spec)[method, path]
    return bool(
        op.get("requestBody") or op.get("parameters") or spec["paths"][path].get("parameters")
    )


def schema_validator(spec: dict[str, Any], name: str) -> Draft202012Validator:
    """A JSON Schema validator for one component, resolving $refs against the whole spec."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return Draft202012Validator(schema, format_checker=FormatChecker())


# ---------------------------------------------------------------- the document


def test_the_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    OpenAPIV31SpecValidator(spec).validate()
    assert spec["openapi"].startswith("3.1.")


def test_the_spec_names_pyarchive_its_version_and_the_given_server(spec: dict[str, Any]) -> None:
    assert spec["info"]["title"] == "PyArchive"
    assert isinstance(spec["info"]["version"], str) and spec["info"]["version"]
    assert spec["servers"] == [{"url": SERVER}]


def test_every_call_builds_a_fresh_document() -> None:
    first = openapi_spec(SERVER)
    first["components"]["schemas"]["Error"]["properties"].clear()
    first["paths"].clear()
    second = openapi_spec(SERVER)
    assert "detail" in second["components"]["schemas"]["Error"]["properties"]
    assert set(operations(second)) == set(ROUTES)


def test_routes_and_the_spec_list_the_same_operations(spec: dict[str, Any]) -> None:
    assert len(ROUTES) == len(set(ROUTES))
    assert set(ROUTES) == set(operations(spec))


def test_operation_ids_are_unique(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for op in operations(spec).values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "route", [route for route in ROUTES if takes_input(openapi_spec(SERVER), *route)], ids=" ".join
)
def test_an_operation_that_takes_input_documents_how_input_is_refused(
    spec: dict[str, Any], route: tuple[str, str]
) -> None:
    statuses = operations(spec)[route]["responses"]
    assert any(status.startswith("4") and status != "401" for status in statuses)


def test_only_login_registration_health_and_docs_are_open(spec: dict[str, Any]) -> None:
    open_ops = {route for route, op in operations(spec).items() if op.get("security") == []}
    assert open_ops == PUBLIC
    assert spec["security"] == [{"jwt": []}]
    for route, op in operations(spec).items():
        if route not in PUBLIC:
            assert "401" in op["responses"], route


def test_the_token_goes_in_the_authorization_header_as_jwt_or_bearer(
    spec: dict[str, Any],
) -> None:
    scheme = spec["components"]["securitySchemes"]["jwt"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "JWT <token>" in scheme["description"]
    assert "Bearer <token>" in scheme["description"]


def test_reusable_schemas_are_defined(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert {"Error", "Upload", "File", "Version", "FileList", "Token"} <= set(schemas)
    assert schemas["Error"]["required"] == ["detail"]
    assert schemas["Error"]["additionalProperties"] is True


@pytest.mark.parametrize(
    ("method", "path", "media_types"),
    [
        ("PUT", "/storage/tmp-upload/", {"multipart/form-data", "application/octet-stream"}),
        (
            "PUT",
            "/storage/tmp-upload/{upload_id}/",
            {"multipart/form-data", "application/octet-stream"},
        ),
        ("POST", "/storage/tmp-upload/", {"multipart/form-data", "application/octet-stream"}),
        (
            "POST",
            "/storage/tmp-upload/{upload_id}/",
            {"application/x-www-form-urlencoded", "multipart/form-data", "application/json"},
        ),
        ("POST", "/api-token-auth/", {"application/x-www-form-urlencoded", "application/json"}),
        ("POST", "/api/auth/register", {"application/json"}),
        (
            "POST",
            "/storage/files/{file_id}/rollback/",
            {"application/json", "application/x-www-form-urlencoded"},
        ),
    ],
)
def test_request_bodies_come_in_the_documented_forms(
    spec: dict[str, Any], method: str, path: str, media_types: set[str]
) -> None:
    assert set(operations(spec)[method, path]["requestBody"]["content"]) == media_types


def test_chunk_puts_require_content_range(spec: dict[str, Any]) -> None:
    header = spec["components"]["parameters"]["ContentRange"]
    assert (header["in"], header["name"], header["required"]) == ("header", "Content-Range", True)
    for path in ("/storage/tmp-upload/", "/storage/tmp-upload/{upload_id}/"):
        refs = [p["$ref"] for p in operations(spec)["PUT", path]["parameters"]]
        assert "#/components/parameters/ContentRange" in refs


def test_downloads_document_partial_content_and_unsatisfiable_ranges(
    spec: dict[str, Any],
) -> None:
    responses = operations(spec)["GET", "/storage/download/{file_id}/"]["responses"]
    assert {"200", "206", "416"} <= set(responses)
    assert "Content-Range" in responses["206"]["headers"]
    assert {"ETag", "Content-Disposition"} <= set(responses["200"]["headers"])


def test_the_seed_walkthroughs_upload_answer_fits_the_upload_schema(
    spec: dict[str, Any],
) -> None:
    upload = {
        "id": "6f1c2a8e1d4b4c8a9d2e3b5a7c9e1f20",
        "url": "http://127.0.0.1:8000/storage/tmp-upload/6f1c2a8e1d4b4c8a9d2e3b5a7c9e1f20/",
        "file": None,
        "filename": "some-image.png",
        "offset": 32634,
        "created_at": "2018-05-13T11:54:32.190080Z",
        "status": 1,
        "completed_at": None,
        "user": 1,
        "parent": None,
        "expires": "2018-05-14T11:54:32.190080Z",
    }
    validator = schema_validator(spec, "Upload")
    validator.validate(upload)
    complete = {
        **upload,
        "status": 2,
        "completed_at": "2018-05-13T11:55:00Z",
        "file": "http://127.0.0.1:8000/storage/download/0b8f4f7e52a44d399a571f3c1e2d4b6a/",
        "file_id": "0b8f4f7e52a44d399a571f3c1e2d4b6a",
        "version": 1,
        "total": 32634,
    }
    validator.validate(complete)
    assert not validator.is_valid({**upload, "status": 3})
    assert not validator.is_valid({k: v for k, v in upload.items() if k != "offset"})


def test_a_file_lists_its_versions(spec: dict[str, Any]) -> None:
    version = {
        "number": 2,
        "size": 5,
        "md5": "5d41402abc4b2a76b9719d911017c592",
        "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "created_at": "2026-11-22T10:00:00Z",
    }
    file = {
        "id": "0b8f4f7e52a44d399a571f3c1e2d4b6a",
        "filename": "hello.txt",
        **{key: version[key] for key in ("size", "md5", "sha256", "created_at")},
        "download_url": "http://127.0.0.1:8000/storage/download/0b8f4f7e52a44d399a571f3c1e2d4b6a/",
        "versions": [version, {**version, "number": 1}],
    }
    page = {"count": 1, "next": None, "previous": None, "results": [file]}
    schema_validator(spec, "FileList").validate(page)
    assert not schema_validator(spec, "File").is_valid({**file, "versions": [{"number": 1}]})


def test_every_error_example_is_a_valid_error(spec: dict[str, Any]) -> None:
    validator = schema_validator(spec, "Error")
    examples = [
        example["value"]
        for op in operations(spec).values()
        for response in op["responses"].values()
        for example in response.get("content", {})
        .get("application/json", {})
        .get("examples", {})
        .values()
    ]
    assert examples
    for example in examples:
        validator.validate(example)
    assert {"detail": "Offsets do not match", "offset": 1048576} in examples


# ---------------------------------------------------------------- the page


def test_the_page_loads_the_spec_and_redoc_from_the_proxy_itself() -> None:
    page = redoc_html().decode("utf-8")
    assert '<redoc spec-url="/openapi.json">' in page
    assert '<script src="/docs/redoc/redoc.standalone.js"></script>' in page
    assert "http://" not in page and "https://" not in page
    assert "Content-Security-Policy" in page and "default-src 'self'" in page


def test_the_page_escapes_the_urls_it_is_given() -> None:
    page = redoc_html(spec_url='/api?a=1&b="2"', asset_url="/static/r.js").decode("utf-8")
    assert 'spec-url="/api?a=1&amp;b=&quot;2&quot;"' in page
    assert '<script src="/static/r.js"></script>' in page


def test_the_asset_lives_in_the_proxy_packages_vendor_directory() -> None:
    package = Path(docs_page.__file__).resolve().parent.parent
    assert docs_page.REDOC_ASSET == package / "static" / "vendor" / "redoc.standalone.js"


def test_the_asset_path_is_none_until_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset = tmp_path / "redoc.standalone.js"
    monkeypatch.setattr(docs_page, "REDOC_ASSET", asset)
    assert redoc_asset_path() is None
    asset.write_text("/* redoc */")
    assert redoc_asset_path() == asset


def test_without_npm_fetch_assets_says_the_docs_page_is_unavailable_and_succeeds(
    tmp_path: Path,
) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "fetch-assets"
    (tmp_path / "scripts").mkdir()
    shutil.copy(script, tmp_path / "scripts" / "fetch-assets")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dirname = shutil.which("dirname")
    bash = shutil.which("bash")
    assert dirname is not None and bash is not None
    os.symlink(dirname, bin_dir / "dirname")
    result = subprocess.run(
        [bash, str(tmp_path / "scripts" / "fetch-assets")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert "npm not found" in result.stderr and "unavailable" in result.stderr
    assert not (tmp_path / "proxy").exists()
