"""`?privileges=true`: every entity answered also lists what the caller may do with it.

The platform adds a `privileges` array to each entity when asked; tools such as the
management console's clients read it to decide which buttons to show. Here the answer follows
the caller's roles, the same checks the endpoints make (SPEC 4.1, 4.2).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from repository_service.auth import CALLER_KEY, READ_ROLES, WRITE_ROLES, Caller
from shared.web.requests import query_param

ALL = ["create", "read", "update", "delete"]
READ = ["read"]
# Who may change which entity (the rest of the `/qrs/` entities follow WRITE_ROLES).
_WRITERS = {
    "User": frozenset({"RootAdmin", "SecurityAdmin"}),
    "License": WRITE_ROLES,
}


def privileges_of(caller: Caller, schema_path: str) -> list[str]:
    """Return the actions `caller` may take on an entity of this schema path."""
    writers = _WRITERS.get(schema_path.split(".")[0], WRITE_ROLES)
    if caller.has_any(writers):
        return list(ALL)
    if caller.has_any(READ_ROLES):
        return list(READ)
    return []


def _wants_privileges(request: web.Request) -> bool:
    return (query_param(request, "privileges") or "").lower() == "true"


def _annotate(value: Any, caller: Caller) -> Any:
    if isinstance(value, list):
        return [_annotate(item, caller) for item in value]
    if isinstance(value, dict) and isinstance(value.get("schemaPath"), str):
        return {**value, "privileges": privileges_of(caller, value["schemaPath"])}
    return value


@web.middleware
async def privileges_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add `privileges` to the entities of a `/qrs/` answer when `privileges=true` is asked."""
    # Read before the handler runs: an ambiguous `privileges` is refused before any write.
    wanted = request.path.startswith("/qrs/") and _wants_privileges(request)
    response = await handler(request)
    caller = request.get(CALLER_KEY)
    if (
        caller is None
        or not wanted
        or not isinstance(response, web.Response)
        or response.content_type != "application/json"
        or not 200 <= response.status < 300
        or response.body is None
    ):
        return response
    assert isinstance(response.body, bytes)
    annotated = _annotate(json.loads(response.body), caller)
    return web.json_response(annotated, status=response.status, headers=_kept(response))


def _kept(response: web.Response) -> dict[str, str]:
    # Content-Type and Content-Length are set again for the new body.
    dropped = {"content-type", "content-length"}
    return {k: v for k, v in response.headers.items() if k.lower() not in dropped}
