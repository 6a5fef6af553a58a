"""`?privileges=true`: every entity answered also lists what the caller may do with it.

The platform adds a `privileges` array to each entity when asked; tools such as the
management console's clients read it to decide which buttons to show, so it must never offer
an action the endpoint would refuse. Here the answer follows the caller's roles with the same
checks the endpoints make (SPEC 4.1, 4.2), including those that depend on the entity: only a
RootAdmin deletes a RootAdmin, nobody deletes themselves, only a RootAdmin deletes the license.

A user's `deleteProhibited` stays what it is on the platform, a property of the user rather
than of who asks: the same entity is shown to every caller, kept in the audit log and compared
by ETag, so the caller's own answer is `privileges`, not a field that changes with the caller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from repository_service.auth import (
    CALLER_KEY,
    READ_ROLES,
    ROLE_ROOT,
    USER_ADMINS,
    WRITE_ROLES,
    Caller,
)
from shared.web.requests import query_param

ACTIONS = ("create", "read", "update", "delete")
_ROOT = frozenset({ROLE_ROOT})
# Answers nobody changes: whoever could call the endpoint may read them, nothing more.
_READ_ONLY = frozenset({"About", "AuditResult", "AccessTypeOverview", "AccessTypesInfo"})
# Allocations are made and removed, never changed (no PUT route).
_NO_UPDATE = frozenset({"ProfessionalAccessType", "AnalyzerAccessType", "UserAccessType"})
# Who may take each action on an entity, by the first part of its schema path; the rest of the
# `/qrs/` entities (rules, groups, pools, allocations) follow WRITE_ROLES.
_ROLES: dict[str, dict[str, frozenset[str]]] = {
    "User": {"create": USER_ADMINS, "update": USER_ADMINS, "delete": USER_ADMINS},
    "License": {"create": WRITE_ROLES, "update": WRITE_ROLES, "delete": _ROOT},
}


def may_delete_user(caller: Caller, user_id: str, roles: Sequence[str]) -> bool:
    """Tell whether `caller` (a user admin) may delete this user, as `DELETE /qrs/user/{id}`
    decides: a RootAdmin only by a RootAdmin, and nobody themselves."""
    if ROLE_ROOT in roles and ROLE_ROOT not in caller.roles:
        return False
    return str(caller.id).lower() != user_id.lower()


def privileges_of(caller: Caller, entity: dict[str, Any]) -> list[str]:
    """Return the actions `caller` may take on `entity` (one with a `schemaPath`)."""
    kind = str(entity["schemaPath"]).split(".")[0]
    if kind in _READ_ONLY:
        return ["read"]
    if not caller.has_any(READ_ROLES):
        return []
    roles = _ROLES.get(kind, {})
    allowed = ["read"]
    for action in ("create", "update", "delete"):
        if action == "update" and kind in _NO_UPDATE:
            continue
        if caller.has_any(roles.get(action, WRITE_ROLES)):
            allowed.append(action)
    if kind == "User" and "delete" in allowed:
        if not may_delete_user(caller, str(entity.get("id", "")), entity.get("roles") or ()):
            allowed.remove("delete")
    return sorted(allowed, key=ACTIONS.index)


def wants_privileges(request: web.Request) -> bool:
    """Tell whether the request asks for `privileges` (the parameter name in any case)."""
    return (query_param(request, "privileges") or "").lower() == "true"


def with_privileges(request: web.Request, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `privileges` to full entities when asked, before a list is condensed (a condensed
    entity no longer holds what its privileges depend on, such as a user's roles)."""
    caller = request.get(CALLER_KEY)
    if caller is None or not wants_privileges(request):
        return entities
    return [_annotate(e, caller) for e in entities]


def _annotate(value: Any, caller: Caller) -> Any:
    if isinstance(value, list):
        return [_annotate(item, caller) for item in value]
    if (
        isinstance(value, dict)
        and isinstance(value.get("schemaPath"), str)
        and "privileges" not in value
    ):
        return {**value, "privileges": privileges_of(caller, value)}
    return value


@web.middleware
async def privileges_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add `privileges` to the entities of a `/qrs/` answer when `privileges=true` is asked."""
    # Read before the handler runs: an ambiguous `privileges` is refused before any write.
    wanted = request.path.startswith("/qrs/") and wants_privileges(request)
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
