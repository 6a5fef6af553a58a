"""`/qrs/user`: the user store."""

from __future__ import annotations

from aiohttp import web

from repository_service.auth import CALLERS, READ_ROLES, USER_ADMINS, require_roles
from repository_service.keys import POOL, SETTINGS
from repository_service.qrs.entities import check_same_id, collection_answer
from repository_service.qrs.idempotency import idempotent
from repository_service.qrs.models import Count
from repository_service.users import repository as repo
from repository_service.users import service
from repository_service.users.models import (
    User,
    UserCondensedList,
    UserCreate,
    UserList,
    UserUpdate,
)
from shared.web.endpoints import Endpoint, NoBody
from shared.web.requests import read_json, validate

CONDENSED = ("id", "userDirectory", "userId", "name")


async def list_users(request: web.Request) -> web.Response:
    """List users (condensed, `/full` or `/count`), with filter and orderby."""
    require_roles(request, READ_ROLES)
    rows = await repo.list_all(request.app[POOL])
    entities = [service.user_entity(r) for r in rows]
    return collection_answer(request, entities, service.USER_FIELDS, condensed=CONDENSED)


async def get_user(request: web.Request) -> web.Response:
    """Return one user."""
    require_roles(request, READ_ROLES)
    row = await repo.get(request.app[POOL], service.parse_user_id(request.match_info["id"]))
    if row is None:
        raise service.UserNotFound()
    return web.json_response(service.user_entity(row))


async def create_user(request: web.Request) -> web.Response:
    """Create a user (RootAdmin, SecurityAdmin)."""
    caller = require_roles(request, USER_ADMINS)
    body = validate(UserCreate, await read_json(request))

    async def create() -> tuple[int, object]:
        return 201, await service.create_user(request.app[POOL], caller, body)

    return await idempotent(request, caller, create)


async def update_user(request: web.Request) -> web.Response:
    """Change a user; roles follow the role rules."""
    caller = require_roles(request, USER_ADMINS)
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raw = {}
    check_same_id(request.match_info["id"], raw)
    body = validate(UserUpdate, raw)
    user_uuid = service.parse_user_id(request.match_info["id"])
    entity = await service.update_user(request.app[POOL], caller, user_uuid, body)
    request.app[CALLERS].forget()
    return web.json_response(entity)


async def delete_user(request: web.Request) -> web.Response:
    """Delete a user."""
    caller = require_roles(request, USER_ADMINS)
    user_uuid = service.parse_user_id(request.match_info["id"])
    quarantine = request.app[SETTINGS].quarantine_seconds
    await service.delete_user(request.app[POOL], caller, user_uuid, quarantine)
    request.app[CALLERS].forget()
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/qrs/user",
        list_users,
        "List users",
        response=UserCondensedList,
        auth="caller",
        errors=(400, 403),
        tags=("user",),
    ),
    Endpoint(
        "GET",
        "/qrs/user/full",
        list_users,
        "List users in full",
        response=UserList,
        auth="caller",
        errors=(400, 403),
        tags=("user",),
    ),
    Endpoint(
        "GET",
        "/qrs/user/count",
        list_users,
        "Count users",
        response=Count,
        auth="caller",
        errors=(400, 403),
        tags=("user",),
    ),
    Endpoint(
        "GET",
        "/qrs/user/{id}",
        get_user,
        "Get a user",
        response=User,
        auth="caller",
        errors=(403, 404),
        tags=("user",),
    ),
    Endpoint(
        "POST",
        "/qrs/user",
        create_user,
        "Create a user",
        body=UserCreate,
        response=User,
        status=201,
        auth="caller",
        errors=(403, 409),
        tags=("user",),
    ),
    Endpoint(
        "PUT",
        "/qrs/user/{id}",
        update_user,
        "Change a user",
        body=UserUpdate,
        response=User,
        auth="caller",
        errors=(403, 404, 409),
        tags=("user",),
    ),
    Endpoint(
        "DELETE",
        "/qrs/user/{id}",
        delete_user,
        "Delete a user",
        response=NoBody,
        status=204,
        auth="caller",
        errors=(403, 404),
        tags=("user",),
    ),
]
