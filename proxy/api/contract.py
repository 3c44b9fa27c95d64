"""Every route of the proxy's HTTP API, declared once, beside its handler.

A handler is a method marked with ``@operation(...)``: method, path, who may call it, the
success status and answer type, the request body's type or description, and every other
answer it can give. From that one declaration come:

- the Klein route (``install_routes``), with the path's ``{name}`` turned into ``<name>``;
- the access check: ``public`` handlers get the request only, ``user`` handlers also the
  caller's token claims, ``staff`` handlers the claims of a staff caller (others: 403);
- decoding and validation of a small body: its fields (query, JSON, urlencoded or multipart,
  read by the method ``body_reader`` names) are converted to the declared Struct by msgspec,
  which checks types, patterns, lengths and ranges; a handler gets the decoded ``body`` and
  the caller gets 400 ``{"detail", "field"}`` naming the first field that is wrong;
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
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import msgspec
from klein import Klein
from twisted.web.iweb import IRequest

from common.errors import BadRequest, Forbidden
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
    body_reader: str = "_fields"  # the handler's method that reads the body's fields
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
    struct = body_struct(op.body)
    allowed = accepted(struct) if struct is not None else set()

    async def endpoint(instance: Any, request: IRequest, **params: Any) -> Any:
        args: list[Any] = [instance, request]
        if op.access != "public":
            found = getattr(instance, authenticate)(request)
            caller: TokenClaims = await found if inspect.isawaitable(found) else found
            if op.access == "staff" and not caller.is_staff:
                raise Forbidden("Staff only")
            args.append(caller)
        if struct is not None:
            fields = await getattr(instance, op.body_reader)(request, allowed)
            params["body"] = decode_body(fields, op.body)
        result = handler(*args, **params)
        return await result if inspect.isawaitable(result) else result

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def body_struct(body: Any) -> type[msgspec.Struct] | None:
    """The Struct a declared body decodes to (through ``Annotated``), or None."""
    if get_origin(body) is Annotated:
        body = get_args(body)[0]
    if isinstance(body, type) and issubclass(body, msgspec.Struct):
        return body
    return None


def accepted(body: Any) -> set[str]:
    """The field names a declared body type accepts (what the body reader allows)."""
    struct = body_struct(body)
    assert struct is not None, f"{body!r} is not a Struct"
    return {f.encode_name for f in msgspec.structs.fields(struct)}


_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_AT_FIELD = re.compile(r"(?P<what>.*) - at `\$\.(?P<field>\w+)`(?P<deeper>.*)")
_SHORT = re.compile(r"Expected `str` of length >= (\d+)")
_LONG = re.compile(r"Expected `str` of length <= (\d+)")
_KIND = re.compile(r"Expected `(\w+)`, got `\w+`")
_KINDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false"}


def decode_body(fields: Mapping[str, Any], body: Any) -> Any:
    """The declared body type from a request's fields, or 400 naming the field at fault.

    Conversion is lax: a number may come as text (``"3"``), as form fields always do.
    """
    try:
        return msgspec.convert(dict(fields), body, strict=False)
    except msgspec.ValidationError as exc:
        raise _refusal(str(exc), fields, body) from None


def _refusal(message: str, fields: Mapping[str, Any], body: Any) -> BadRequest:
    """msgspec's reason in the words the API has always used: ``name is required``..."""
    if missing := _MISSING.fullmatch(message):
        name = missing["field"]
        return BadRequest(f"{name} is required", field=name)
    at = _AT_FIELD.fullmatch(message)
    if at is None:
        return BadRequest(message)
    what, name = at["what"], at["field"]
    if short := _SHORT.fullmatch(what):
        if fields.get(name) == "":
            return BadRequest(f"{name} is required", field=name)
        return BadRequest(f"{name} is too short: at least {short[1]} characters", field=name)
    if long := _LONG.fullmatch(what):
        return BadRequest(f"{name} is too long: at most {long[1]} characters", field=name)
    if (kind := _KIND.fullmatch(what)) and kind[1] in _KINDS:
        return BadRequest(f"{name} must be {_KINDS[kind[1]]}", field=name)
    if what.startswith("Expected `str` matching regex") and (hint := _description(body, name)):
        return BadRequest(f"{name} is malformed: {hint[:1].lower()}{hint[1:]}", field=name)
    return BadRequest(f"{name} is not valid: {what[:1].lower()}{what[1:]}", field=name)


def _description(body: Any, name: str) -> str:
    """The document's description of a body field (what a malformed value should look like)."""
    _, components = msgspec.json.schema_components([body])
    struct = body_struct(body)
    found = components.get(struct.__name__ if struct else "", {}).get("properties", {})
    return str(found.get(name, {}).get("description", "")).rstrip(".")


def set_fields(body: msgspec.Struct) -> dict[str, Any]:
    """A decoded body's fields that were given (``UNSET`` ones left out), by wire name."""
    return {
        f.encode_name: getattr(body, f.name)
        for f in msgspec.structs.fields(body)
        if getattr(body, f.name) is not msgspec.UNSET
    }
