"""The route table: each endpoint with the models that describe it, for routing and OpenAPI."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel


class NoBody:
    """The `response` of an endpoint that answers without a body by design (204)."""


@dataclass(frozen=True)
class Endpoint:
    """One route and its contract; `response` is the model of the success answer's body, or
    `NoBody` for a 204 (left unset, the body is documented as any JSON)."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | type[NoBody] | None = None
    status: int = 200
    auth: str | None = None
    errors: tuple[int, ...] = ()
    # Successes besides `status`, each with the model of its body (a replay's 200, say).
    other_successes: tuple[tuple[int, type[BaseModel]], ...] = ()
    response_media_type: str = "application/json"
    tags: tuple[str, ...] = ()
    # Request headers the route reads, as OpenAPI parameter objects (`"in": "header"`).
    header_params: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if (self.response is NoBody) != (self.status == 204):
            raise ValueError(f"{self.method} {self.path}: a 204 answers NoBody, and only a 204")
        if any(200 <= status < 300 for status in self.errors):
            raise ValueError(f"{self.method} {self.path}: a success belongs in other_successes")


ENDPOINTS_KEY = web.AppKey("endpoints", list[Endpoint])

# An `{id}` in a route matches a GUID only (any case), so that a keyword in the same place,
# such as `count` or `full` spelt `Count`, is never taken for an id: it falls through to the
# routes that name it (and below `/qrs/` to their case-insensitive match). Anything else there
# is a 404 from the router, in the error envelope like every other.
ID_PATTERN = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"


def route_path(path: str) -> str:
    """Return the router's form of an endpoint path: each `{id}` restricted to a GUID."""
    return path.replace("{id}", "{id:" + ID_PATTERN + "}")


def endpoint_path(route: str) -> str:
    """Return the endpoint path a router path was made from (`{id}` without its pattern)."""
    return route.replace("{id:" + ID_PATTERN + "}", "{id}")


def install(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    """Add the endpoints to the router and remember them for the OpenAPI document."""
    for ep in endpoints:
        app.router.add_route(ep.method, route_path(ep.path), ep.handler)
    if ENDPOINTS_KEY not in app:
        app[ENDPOINTS_KEY] = []
    app[ENDPOINTS_KEY].extend(endpoints)


def _schema_of(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(
        by_alias=True,
        ref_template="#/components/schemas/{model}",
        mode=mode,  # type: ignore[arg-type]
    )
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


_ERROR_SCHEMA = {
    "type": "object",
    "description": "The error envelope every 4xx/5xx answer carries (SPEC 1.4).",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"},
                "message": {"type": "string", "minLength": 1},
                "details": {"description": "What exactly is wrong (per field for 400), or null."},
            },
        }
    },
}

_SECURITY = {
    "admin": {"type": "http", "scheme": "bearer", "description": "Vendor admin token."},
    "licenseKey": {"type": "http", "scheme": "bearer", "description": "Signed license key."},
    "caller": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
}

# Statuses any operation may answer, whatever its route table says: 500 (a bug, generic
# message) and 503 (the database is unreachable, with Retry-After) come from the error
# middleware (SPEC 1.4).
_ALWAYS = frozenset({500, 503})
_STATUS_TEXT = {
    400: "Malformed request or validation failed",
    401: "No or bad credentials",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Body over 1 MiB",
    415: "Content-Type is not application/json",
    429: "Rate limited",
    500: "Unexpected error",
    502: "Upstream unavailable",
    503: "Database unavailable",
}
_RESPONSE_HEADERS = {
    401: {"WWW-Authenticate": "The authentication scheme to use."},
    429: {"Retry-After": "Seconds to wait before retrying."},
    503: {"Retry-After": "Seconds to wait before retrying."},
}

# Conventions of the QRS-compatible API (SPEC 4.1) that hold for a route by its place in the
# route table rather than by its models, documented here so the document tells the truth:
# every `/qrs/` request carries the xrfkey pair (checked before anything else, 403 when they
# differ); collections (`X`, `X/full`, `X/count`) take `filter` and `orderby`; `/qrs/` creations
# (POST answering 201) take `Idempotency-Key`.
_QRS_PREFIX = "/qrs/"
_XRFKEY_SCHEMA = {"type": "string", "pattern": "^[0-9A-Za-z]{16}$"}
_XRFKEY_PARAMS = [
    {
        "name": "xrfkey",
        "in": "query",
        "required": True,
        "description": "16 characters [0-9A-Za-z], the same as the X-Qlik-Xrfkey header.",
        "schema": _XRFKEY_SCHEMA,
    },
    {
        "name": "X-Qlik-Xrfkey",
        "in": "header",
        "required": True,
        "description": "The same value as the xrfkey query parameter.",
        "schema": _XRFKEY_SCHEMA,
    },
]
_COLLECTION_PARAMS = [
    {
        "name": "filter",
        "in": "query",
        "required": False,
        "description": "e.g. name eq 'Sales' and userDirectory sw 'corp' (400 when malformed).",
        "schema": {"type": "string"},
    },
    {
        "name": "orderby",
        "in": "query",
        "required": False,
        "description": "A field name, optionally followed by asc or desc.",
        "schema": {"type": "string"},
    },
]
_IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A replay within 24 h returns the first answer and changes nothing.",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"},
}
_IF_NONE_MATCH_PARAM = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "The ETag of the copy held: 304 without a body when it is still current.",
    "schema": {"type": "string"},
}


def openapi_document(title: str, version: str, endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """Build an OpenAPI 3.1 document from the route table and the pydantic models."""
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    operation_ids = _operation_ids(endpoints)
    collections = _collections(endpoints)
    for ep in endpoints:
        op = _operation(ep, operation_ids[id(ep)], ep.path in collections, components)
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    used_security = {ep.auth for ep in endpoints if ep.auth}
    components_doc: dict[str, Any] = {"schemas": components}
    if used_security:
        components_doc["securitySchemes"] = {k: _SECURITY[k] for k in sorted(used_security)}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": components_doc,
    }


def _operation(
    ep: Endpoint, operation_id: str, collection: bool, components: dict[str, Any]
) -> dict[str, Any]:
    """One operation: its parameters, body, security and every answer it can give."""
    op: dict[str, Any] = {"summary": ep.summary, "operationId": operation_id}
    if ep.tags:
        op["tags"] = list(ep.tags)
    params, error_statuses = _parameters(ep, collection)
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": _schema_of(ep.body, components, "validation")}
            },
        }
        error_statuses |= {400, 413, 415}
    if ep.auth:
        error_statuses.add(401)
        op["security"] = [{ep.auth: []}]
    op["responses"] = _responses(ep, components, error_statuses)
    return op


def _parameters(ep: Endpoint, collection: bool) -> tuple[list[dict[str, Any]], set[int]]:
    """The parameters of an operation, and the error statuses they can cause."""
    path_params = _path_params(ep.path)
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
        for name in path_params
    ]
    error_statuses = set(ep.errors) | _ALWAYS
    if ep.query is not None:
        qschema = ep.query.model_json_schema(by_alias=True)
        required = set(qschema.get("required", []))
        for name, prop in qschema.get("properties", {}).items():
            params.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
        error_statuses.add(400)
    if ep.path.startswith(_QRS_PREFIX):
        params.extend(_XRFKEY_PARAMS)
        error_statuses.add(403)
        if ep.method == "GET" and collection:
            params.extend(_COLLECTION_PARAMS)
            error_statuses.add(400)
        if ep.method == "POST" and ep.status == 201:
            params.append(_IDEMPOTENCY_PARAM)
            error_statuses |= {400, 409}
    if 304 in error_statuses:
        params.append(_IF_NONE_MATCH_PARAM)
    params.extend(ep.header_params)
    if path_params:  # an unknown id, or one that is not even well formed
        error_statuses |= {400, 404}
    return params, error_statuses


def _responses(
    ep: Endpoint, components: dict[str, Any], error_statuses: set[int]
) -> dict[str, Any]:
    """The success answers of an operation, then its errors (all in the error envelope)."""
    responses: dict[str, Any] = {str(ep.status): _success(ep, components, 304 in error_statuses)}
    for status, model in ep.other_successes:
        responses[str(status)] = {
            "description": "Success (see summary)",
            "content": {
                "application/json": {"schema": _schema_of(model, components, "serialization")}
            },
        }
    for status in sorted(error_statuses):
        if status < 400:  # a 304: see the summary
            responses.setdefault(str(status), {"description": "Not modified"})
            continue
        answer: dict[str, Any] = {
            "description": _STATUS_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if status in _RESPONSE_HEADERS:
            answer["headers"] = {
                name: {"required": True, "description": text, "schema": {"type": "string"}}
                for name, text in _RESPONSE_HEADERS[status].items()
            }
        responses[str(status)] = answer
    return responses


def _success(ep: Endpoint, components: dict[str, Any], conditional: bool) -> dict[str, Any]:
    """The documented success answer: the response model, else any JSON (never no body unless
    the status has none)."""
    ok: dict[str, Any] = {"description": "Success"}
    if ep.status in (204, 304):
        return ok
    if isinstance(ep.response, type) and issubclass(ep.response, BaseModel):
        schema = _schema_of(ep.response, components, "serialization")
    elif ep.response_media_type == "application/json":
        schema = {}  # JSON, its shape not described by a model
    else:
        schema = {"type": "string"}
    ok["content"] = {ep.response_media_type: {"schema": schema}}
    if conditional:
        ok["headers"] = {
            "ETag": {
                "required": True,
                "description": "Send it back as If-None-Match.",
                "schema": {"type": "string"},
            }
        }
    return ok


def _operation_ids(endpoints: Sequence[Endpoint]) -> dict[int, str]:
    """`<method>_<handler>`, or `<method>_<path>` where a handler serves several paths, so that
    every operationId is unique as OpenAPI requires."""
    by_handler = [f"{ep.method.lower()}_{ep.handler.__name__}" for ep in endpoints]
    ids: dict[int, str] = {}
    for ep, name in zip(endpoints, by_handler, strict=True):
        if by_handler.count(name) > 1:
            slug = re.sub(r"[^A-Za-z0-9]+", "_", ep.path).strip("_")
            name = f"{ep.method.lower()}_{slug}"
        ids[id(ep)] = name
    return ids


def _collections(endpoints: Sequence[Endpoint]) -> set[str]:
    """Paths of QRS collection reads: `X`, `X/full` and `X/count` when all three are GET routes."""
    gets = {ep.path for ep in endpoints if ep.method == "GET"}
    found: set[str] = set()
    for path in gets:
        if f"{path}/full" in gets and f"{path}/count" in gets:
            found |= {path, f"{path}/full", f"{path}/count"}
    return found


def _path_schema(name: str) -> dict[str, Any]:
    if name == "id":
        return {"type": "string", "format": "uuid", "pattern": f"^{ID_PATTERN}$"}
    return {"type": "string"}


def _path_params(path: str) -> list[str]:
    names = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            names.append(part[1:-1].split(":")[0])
    return names
