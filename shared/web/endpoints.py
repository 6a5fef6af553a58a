"""The route table: each endpoint with the models that describe it, for routing and OpenAPI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel


@dataclass(frozen=True)
class Endpoint:
    """One route and its contract."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: str | None = None
    errors: tuple[int, ...] = ()
    response_media_type: str = "application/json"
    tags: tuple[str, ...] = ()


ENDPOINTS_KEY = web.AppKey("endpoints", list[Endpoint])


def install(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    """Add the endpoints to the router and remember them for the OpenAPI document."""
    for ep in endpoints:
        app.router.add_route(ep.method, ep.path, ep.handler)
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
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}

_SECURITY = {
    "admin": {"type": "http", "scheme": "bearer", "description": "Vendor admin token."},
    "licenseKey": {"type": "http", "scheme": "bearer", "description": "Signed license key."},
    "caller": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
}


def openapi_document(title: str, version: str, endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """Build an OpenAPI 3.1 document from the route table and the pydantic models."""
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
            "responses": {},
        }
        if ep.tags:
            op["tags"] = list(ep.tags)
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(ep.path)
        ]
        if ep.query is not None:
            qschema = ep.query.model_json_schema(by_alias=True)
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                params.append(
                    {"name": name, "in": "query", "required": name in required, "schema": prop}
                )
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": _schema_of(ep.body, components, "validation")}
                },
            }
        ok: dict[str, Any] = {"description": "Success"}
        if ep.response is not None:
            schema = _schema_of(ep.response, components, "serialization")
            ok["content"] = {ep.response_media_type: {"schema": schema}}
        elif ep.response_media_type != "application/json":
            ok["content"] = {ep.response_media_type: {"schema": {"type": "string"}}}
        op["responses"][str(ep.status)] = ok
        error_statuses = set(ep.errors)
        if ep.body is not None:
            error_statuses |= {400, 413, 415}
        if ep.auth:
            error_statuses |= {401}
            op["security"] = [{ep.auth: []}]
        for status in sorted(error_statuses | {500}):
            if status < 400:  # another success or a 304: no envelope
                op["responses"].setdefault(str(status), {"description": "See summary"})
                continue
            op["responses"][str(status)] = {
                "description": "Error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
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


def _path_params(path: str) -> list[str]:
    names = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            names.append(part[1:-1].split(":")[0])
    return names
