"""Every route of the proxy's HTTP API, declared once, beside its handler.

A handler is a method marked with ``@operation(...)``: method, path, who may call it, the
success status and answer type, the request body's type or description, and every other
answer it can give. From that one declaration come:

- the Klein route (``install_routes``), with the path's ``{name}`` turned into ``<name>``;
- the access check: ``public`` handlers get the request only, ``user`` handlers also the
  caller's token claims, ``staff`` handlers the claims of a staff caller (others: 403);
- the OpenAPI operation (``proxy.api.openapi`` reads ``declared()``), including 401 for
  every non-public route, 403 for every staff route, and 415 for every route with a body;
- the route list the tests hold against Klein's URL map.

Answer and body types are msgspec Structs (``proxy.api.types``); msgspec turns them into
JSON Schema. Chunk bodies and downloads, which a type cannot describe, keep a small
hand-written OpenAPI fragment (``request_body``, ``responses``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
from klein import Klein
from twisted.web.iweb import IRequest

from common.errors import Forbidden
from common.tokens import TokenClaims

Access = Literal["public", "user", "staff"]
Json = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])

_PATH_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Operation:
    """One route: what it is, who may call it, what it takes and what it answers."""

    method: str
    path: str  # an OpenAPI path template: "/storage/files/{file_id}/"
    operation_id: str
    tag: str
    summary: str
    access: Access = "user"
    description: str = ""
    status: int = 200  # the success status
    answer: Any = None  # a type msgspec can describe, or None: no JSON body
    answer_description: str = "OK."
    answer_headers: Json = field(default_factory=dict)
    body: Any = None  # a Struct whose fields are the accepted fields, or None
    body_media: tuple[str, ...] = ("application/json", "application/x-www-form-urlencoded")
    body_required: bool = True
    request_body: Json | None = None  # hand-written where a type cannot say it
    responses: Mapping[int, Json] = field(default_factory=dict)  # every other answer
    parameters: tuple[Json, ...] = ()  # query and header parameters (path ones are derived)
    # A path parameter's type where it is not a shared id (``FileId``...): {"name": Name}.
    path_types: Mapping[str, Any] = field(default_factory=dict)
    also: tuple[str, ...] = ()  # further methods Klein routes here (e.g. HEAD)

    @property
    def klein_path(self) -> str:
        """The path in werkzeug's syntax.

        >>> Operation("GET", "/a/{file_id}/b", "x", "t", "s").klein_path
        '/a/<file_id>/b'
        """
        return _PATH_PARAMETER.sub(r"<\1>", self.path)

    @property
    def path_parameters(self) -> list[str]:
        return _PATH_PARAMETER.findall(self.path)

    @property
    def has_body(self) -> bool:
        return self.body is not None or self.request_body is not None


def operation(**declaration: Any) -> Callable[[F], F]:
    """Mark a handler method with its route's declaration (see ``Operation``)."""
    op = Operation(**declaration)

    def mark(handler: F) -> F:
        handler.__operation__ = op  # type: ignore[attr-defined]
        return handler

    return mark


def declared(cls: type) -> Iterator[tuple[str, Operation]]:
    """The (method name, declaration) of every marked handler of ``cls``, in MRO order."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, member in vars(klass).items():
            op = getattr(member, "__operation__", None)
            if isinstance(op, Operation) and name not in seen:
                seen.add(name)
                yield name, op


def install_routes(cls: type, app: Klein, authenticate: str = "_caller") -> None:
    """Turn every declaration of ``cls`` into a Klein route with its access check.

    ``authenticate`` names the method that reads the caller's claims off a request (raising
    401); staff routes refuse a caller who is not staff with 403.
    """
    for name, op in declared(cls):
        handler = getattr(cls, name)
        app.route(op.klein_path, methods=[op.method, *op.also], endpoint=name)(
            _guarded(handler, op, authenticate)
        )


def _guarded(handler: Callable[..., Any], op: Operation, authenticate: str) -> Callable[..., Any]:
    async def endpoint(instance: Any, request: IRequest, **params: Any) -> Any:
        if op.access == "public":
            result = handler(instance, request, **params)
        else:
            caller: TokenClaims = getattr(instance, authenticate)(request)
            if op.access == "staff" and not caller.is_staff:
                raise Forbidden("Staff only")
            result = handler(instance, request, caller, **params)
        return await result if inspect.isawaitable(result) else result

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def accepted(body: type) -> set[str]:
    """The field names a declared body type accepts (what ``small_fields`` allows)."""
    return {f.encode_name for f in msgspec.structs.fields(body)}
