"""A real S3 endpoint for tests: moto's server on a free 127.0.0.1 port, over real HTTP.

    server = S3Server().start()          # or the ``s3`` fixture (tests/conftest.py)
    settings = server.bucket()           # a new, empty bucket; S3Settings to reach it
    client = server.client()             # a boto3 client for checking what is in it
    server.stop(); ...; server.start()   # an outage: same port, same data afterwards
    server.count("UploadPart")           # requests of one kind the server has answered
    server.close()

moto keeps its data in this process, so it survives ``stop()``/``start()``, and every server in
one test process shares it: use a fresh bucket (``bucket()``) per test. Every request the server
answers is recorded as ``(method, path, query)`` in ``requests``; ``count`` names the S3
operations the mirror uses.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from common.s3 import S3Settings, make_client
from tests.proc import free_port

ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret-0123456789"
REGION = "us-east-1"

# (method, "has this query parameter") for the operations tests count.
_OPERATIONS: dict[str, Callable[[str, dict[str, list[str]]], bool]] = {
    "UploadPart": lambda m, q: m == "PUT" and "partNumber" in q and "uploadId" in q,
    "CreateMultipartUpload": lambda m, q: m == "POST" and "uploads" in q,
    "CompleteMultipartUpload": lambda m, q: m == "POST" and "uploadId" in q,
    "ListParts": lambda m, q: m == "GET" and "uploadId" in q,
    "AbortMultipartUpload": lambda m, q: m == "DELETE" and "uploadId" in q,
    "GetObject": lambda m, q: m == "GET" and not q,
    "HeadObject": lambda m, q: m == "HEAD",
}


class _Recording:
    """WSGI middleware noting each request before moto answers it."""

    def __init__(self, app: Any, requests: list[tuple[str, str, str]]) -> None:
        self._app = app
        self._requests = requests
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self._lock:
            self._requests.append(
                (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
            )
        return self._app(environ, start_response)  # type: ignore[no-any-return]


class _RecordingMotoServer(ThreadedMotoServer):
    def __init__(self, port: int, requests: list[tuple[str, str, str]]) -> None:
        super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
        self._requests = requests

    def _server_entry(self) -> None:
        app = _Recording(DomainDispatcherApplication(create_backend_app), self._requests)
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


class S3Server:
    """moto's S3 on ``127.0.0.1:port`` (a free port unless given)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.requests: list[tuple[str, str, str]] = []
        self._server: _RecordingMotoServer | None = None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> S3Server:
        if self._server is None:
            self._server = _RecordingMotoServer(self.port, self.requests)
            self._server.start()
        return self

    def stop(self) -> None:
        """Stop answering (connections are refused); the data stays for ``start()``."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    close = stop

    def settings(self, bucket: str, **changes: Any) -> S3Settings:
        values: dict[str, Any] = {
            "bucket": bucket,
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "endpoint_url": self.endpoint_url,
            "prefix": "pyarchive",
            "name": "test",
            **changes,
        }
        return S3Settings(**values)

    def bucket(self, **changes: Any) -> S3Settings:
        """A new empty bucket (named ``t-<random>``) and the settings that reach it."""
        settings = self.settings(f"t-{uuid.uuid4().hex[:20]}", **changes)
        self.client(settings).create_bucket(Bucket=settings.bucket)
        return settings

    def client(self, settings: S3Settings | None = None) -> Any:
        """A boto3 client (blocking) for the server, to look at or change what it holds."""
        return make_client(settings or self.settings("unused"))

    def part_uploads(self, key: str) -> dict[int, int]:
        """How many times each part number of object ``key`` was uploaded (UploadPart)."""
        counts: dict[int, int] = {}
        for method, path, query in list(self.requests):
            fields = parse_qs(query, keep_blank_values=True)
            if path.endswith("/" + key) and _OPERATIONS["UploadPart"](method, fields):
                number = int(fields["partNumber"][0])
                counts[number] = counts.get(number, 0) + 1
        return counts

    def count(self, operation: str, key: str | None = None) -> int:
        """How many requests of ``operation`` (e.g. ``UploadPart``) were answered so far,
        only those for object ``key`` (``<prefix>/<sha256>``) if given."""
        matches = _OPERATIONS[operation]
        found = 0
        for method, path, query in list(self.requests):
            if key is not None and not path.endswith("/" + key):
                continue
            if matches(method, parse_qs(query, keep_blank_values=True)):
                found += 1
        return found
