"""`/qrs/license/*accesstype*`, `*accessgroup`, the overview and the access requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from repository_service.access import allocations as alloc
from repository_service.access import groups
from repository_service.access.kinds import KIND, AccessType
from repository_service.access.models import (
    AccessGroupCreate,
    AccessGroupUpdate,
    AccessTypeOverview,
    AccessTypesInfo,
    AllocationCreate,
    AnalyzerAccessGroup,
    AnalyzerAccessGroupList,
    AnalyzerAccessType,
    AnalyzerAccessTypeList,
    AnalyzerTimeAccessType,
    AnalyzerTimeAccessTypeList,
    CapacityPoolCreate,
    CapacityPoolUpdate,
    LoginAccessType,
    LoginAccessTypeList,
    LoginGroupCreate,
    LoginGroupUpdate,
    ProfessionalAccessGroup,
    ProfessionalAccessGroupList,
    ProfessionalAccessType,
    ProfessionalAccessTypeList,
    UserAccessGroup,
    UserAccessGroupList,
    UserAccessType,
    UserAccessTypeList,
)
from repository_service.access.overview import access_type_info, overview
from repository_service.access.service import AccessAdmin, parse_id
from repository_service.auth import READ_ROLES, WRITE_ROLES, require_roles
from repository_service.keys import ACCESS_STATE as STATE
from repository_service.keys import POOL
from repository_service.qrs.entities import check_same_id, collection_answer
from repository_service.qrs.idempotency import idempotent
from repository_service.qrs.models import Count
from shared.web.endpoints import Endpoint, NoBody
from shared.web.requests import read_json, validate

ADMIN = web.AppKey("access_admin", AccessAdmin)
TAGS = ("access",)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _body(request: web.Request, url_id: bool = False) -> dict[str, Any]:
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raw = {"_": raw}  # lets validation name what is wrong
    if url_id:
        check_same_id(request.match_info["id"], raw)
    return raw


# ---- allocations ---------------------------------------------------------------------------


def allocation_handlers(kind: AccessType) -> dict[str, Handler]:
    """Return list/get/create/delete handlers for one allocation type."""

    async def listing(request: web.Request) -> web.Response:
        require_roles(request, READ_ROLES)
        state = await request.app[STATE].get()
        total = state.totals.get(KIND[kind].pool, 0)
        entities = await alloc.list_entities(request.app[POOL], kind, total)
        return collection_answer(request, entities, alloc.ENTITY_FIELDS)

    async def get_one(request: web.Request) -> web.Response:
        require_roles(request, READ_ROLES)
        state = await request.app[STATE].get()
        allocation_id = parse_id(request.match_info["id"], alloc.AllocationNotFound)
        entity = await alloc.get_entity(
            request.app[POOL], allocation_id, kind, state.totals.get(KIND[kind].pool, 0)
        )
        return web.json_response(entity)

    async def create(request: web.Request) -> web.Response:
        caller = require_roles(request, WRITE_ROLES)
        body = validate(AllocationCreate, await _body(request))

        async def run() -> tuple[int, object]:
            return 201, await request.app[ADMIN].allocate(caller, kind, body.user)

        return await idempotent(request, caller, run)

    async def delete(request: web.Request) -> web.Response:
        caller = require_roles(request, WRITE_ROLES)
        await request.app[ADMIN].deallocate(caller, kind, request.match_info["id"])
        return web.Response(status=204)

    for name, fn in (("list", listing), ("get", get_one), ("create", create), ("delete", delete)):
        fn.__name__ = f"{name}_{kind}_access"
    return {"list": listing, "get": get_one, "create": create, "delete": delete}


# ---- groups and pools ------------------------------------------------------------------------


def _group_handlers(
    collection: str,
    entities: Callable[[web.Request], Awaitable[list[dict[str, Any]]]],
    fields: tuple[str, ...],
    create: Callable[[web.Request], Awaitable[dict[str, Any]]],
    update: Callable[[web.Request], Awaitable[dict[str, Any]]],
    delete: Callable[[web.Request], Awaitable[None]],
) -> dict[str, Handler]:
    async def listing(request: web.Request) -> web.Response:
        require_roles(request, READ_ROLES)
        return collection_answer(request, await entities(request), fields)

    async def get_one(request: web.Request) -> web.Response:
        require_roles(request, READ_ROLES)
        wanted = request.match_info["id"].lower()
        for entity in await entities(request):
            if entity["id"] == wanted:
                return web.json_response(entity)
        raise groups.GroupNotFound()

    async def post(request: web.Request) -> web.Response:
        caller = require_roles(request, WRITE_ROLES)

        async def run() -> tuple[int, object]:
            return 201, await create(request)

        return await idempotent(request, caller, run)

    async def put(request: web.Request) -> web.Response:
        require_roles(request, WRITE_ROLES)
        return web.json_response(await update(request))

    async def remove(request: web.Request) -> web.Response:
        require_roles(request, WRITE_ROLES)
        await delete(request)
        return web.Response(status=204)

    for name, fn in (
        ("list", listing),
        ("get", get_one),
        ("create", post),
        ("update", put),
        ("delete", remove),
    ):
        fn.__name__ = f"{name}_{collection}"
    return {"list": listing, "get": get_one, "create": post, "update": put, "delete": remove}


def access_group_handlers(kind: str) -> dict[str, Handler]:
    """Handlers of one access-group collection."""

    async def entities(request: web.Request) -> list[dict[str, Any]]:
        rows = await request.app[POOL].fetch(
            "SELECT * FROM access_groups WHERE access_type = $1 ORDER BY created_date, id", kind
        )
        return [groups.access_group_entity(r) for r in rows]

    async def create(request: web.Request) -> dict[str, Any]:
        body = validate(AccessGroupCreate, await _body(request))
        return await request.app[ADMIN].create_group(_caller(request), kind, body)

    async def update(request: web.Request) -> dict[str, Any]:
        body = validate(AccessGroupUpdate, await _body(request, url_id=True))
        return await request.app[ADMIN].update_group(
            _caller(request), kind, request.match_info["id"], body
        )

    async def delete(request: web.Request) -> None:
        await request.app[ADMIN].delete_row(
            _caller(request),
            "access_groups",
            request.match_info["id"],
            KIND[kind].group_schema,
            kind,
        )

    fields = (
        "id",
        "createdDate",
        "modifiedDate",
        "modifiedByUserName",
        "name",
        "rule",
        "schemaPath",
    )
    return _group_handlers(f"{kind}accessgroup", entities, fields, create, update, delete)


def login_group_handlers() -> dict[str, Handler]:
    """Handlers of the login-access groups."""

    async def entities(request: web.Request) -> list[dict[str, Any]]:
        rows = await request.app[POOL].fetch(
            groups._LOGIN_GROUPS + " ORDER BY g.created_date, g.id"
        )
        return [groups.login_group_entity(r) for r in rows]

    async def create(request: web.Request) -> dict[str, Any]:
        body = validate(LoginGroupCreate, await _body(request))
        return await request.app[ADMIN].create_login_group(_caller(request), body)

    async def update(request: web.Request) -> dict[str, Any]:
        body = validate(LoginGroupUpdate, await _body(request, url_id=True))
        return await request.app[ADMIN].update_login_group(
            _caller(request), request.match_info["id"], body
        )

    async def delete(request: web.Request) -> None:
        await request.app[ADMIN].delete_row(
            _caller(request), "login_groups", request.match_info["id"], "LoginAccessType"
        )

    fields = (
        "id",
        "createdDate",
        "modifiedDate",
        "modifiedByUserName",
        "name",
        "assignedTokens",
        "rule",
        "assignedAccessTypes",
        "usedAccessTypes",
        "remainingAccessTypes",
        "schemaPath",
    )
    return _group_handlers("loginaccesstype", entities, fields, create, update, delete)


def capacity_pool_handlers() -> dict[str, Handler]:
    """Handlers of the analyzer-time pools."""

    async def entities(request: web.Request) -> list[dict[str, Any]]:
        rows = await request.app[POOL].fetch(
            groups._POOLS + " ORDER BY c.created_date, c.id", groups.month_start(datetime.now(UTC))
        )
        return [groups.capacity_pool_entity(r) for r in rows]

    async def create(request: web.Request) -> dict[str, Any]:
        body = validate(CapacityPoolCreate, await _body(request))
        return await request.app[ADMIN].create_pool(_caller(request), body)

    async def update(request: web.Request) -> dict[str, Any]:
        body = validate(CapacityPoolUpdate, await _body(request, url_id=True))
        return await request.app[ADMIN].update_pool(
            _caller(request), request.match_info["id"], body
        )

    async def delete(request: web.Request) -> None:
        await request.app[ADMIN].delete_row(
            _caller(request), "capacity_pools", request.match_info["id"], "AnalyzerTimeAccessType"
        )

    fields = (
        "id",
        "createdDate",
        "modifiedDate",
        "modifiedByUserName",
        "name",
        "assignedMinutes",
        "rule",
        "usedMinutes",
        "remainingMinutes",
        "schemaPath",
    )
    return _group_handlers("analyzertimeaccesstype", entities, fields, create, update, delete)


def _caller(request: web.Request) -> Any:
    return require_roles(request, WRITE_ROLES)


# ---- overview and access requests ----------------------------------------------------------


async def access_overview(request: web.Request) -> web.Response:
    """Return the access-type overview."""
    require_roles(request, READ_ROLES)
    state = await request.app[STATE].get()
    return web.json_response(await overview(request.app[POOL], state))


async def access_info(request: web.Request) -> web.Response:
    """Return the deprecated access-type information (tokens and allocations)."""
    require_roles(request, READ_ROLES)
    state = await request.app[STATE].get()
    return web.json_response(access_type_info(await overview(request.app[POOL], state)))


def _collection(
    path: str,
    handlers: dict[str, Handler],
    *,
    body: Any,
    entity: type[BaseModel],
    listing: type[BaseModel],
    update: Any = None,
) -> list[Endpoint]:
    base = f"/qrs/license/{path}"
    name = path
    eps = [
        Endpoint(
            "GET",
            base,
            handlers["list"],
            f"List {name}",
            response=listing,
            auth="caller",
            errors=(400, 403),
            tags=TAGS,
        ),
        Endpoint(
            "GET",
            f"{base}/full",
            handlers["list"],
            f"List {name} in full",
            response=listing,
            auth="caller",
            errors=(400, 403),
            tags=TAGS,
        ),
        Endpoint(
            "GET",
            f"{base}/count",
            handlers["list"],
            f"Count {name}",
            response=Count,
            auth="caller",
            errors=(400, 403),
            tags=TAGS,
        ),
        Endpoint(
            "GET",
            f"{base}/{{id}}",
            handlers["get"],
            f"Get one {name}",
            response=entity,
            auth="caller",
            errors=(403, 404),
            tags=TAGS,
        ),
        Endpoint(
            "POST",
            base,
            handlers["create"],
            f"Create {name}",
            body=body,
            response=entity,
            status=201,
            auth="caller",
            errors=(403, 404, 409),
            tags=TAGS,
        ),
        Endpoint(
            "DELETE",
            f"{base}/{{id}}",
            handlers["delete"],
            f"Delete {name}",
            response=NoBody,
            status=204,
            auth="caller",
            errors=(403, 404),
            tags=TAGS,
        ),
    ]
    if update is not None:
        eps.append(
            Endpoint(
                "PUT",
                f"{base}/{{id}}",
                handlers["update"],
                f"Change {name}",
                body=update,
                response=entity,
                auth="caller",
                errors=(403, 404, 409),
                tags=TAGS,
            )
        )
    return eps


ENDPOINTS = [
    Endpoint(
        "GET",
        "/qrs/license/accesstypeoverview",
        access_overview,
        "Access-type overview",
        response=AccessTypeOverview,
        auth="caller",
        errors=(403,),
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/qrs/license/accesstypeinfo",
        access_info,
        "Access-type information (deprecated; see the overview)",
        response=AccessTypesInfo,
        auth="caller",
        errors=(403,),
        tags=TAGS,
    ),
    *_collection(
        "professionalaccesstype",
        allocation_handlers("professional"),
        body=AllocationCreate,
        entity=ProfessionalAccessType,
        listing=ProfessionalAccessTypeList,
    ),
    *_collection(
        "analyzeraccesstype",
        allocation_handlers("analyzer"),
        body=AllocationCreate,
        entity=AnalyzerAccessType,
        listing=AnalyzerAccessTypeList,
    ),
    *_collection(
        "useraccesstype",
        allocation_handlers("user"),
        body=AllocationCreate,
        entity=UserAccessType,
        listing=UserAccessTypeList,
    ),
    *_collection(
        "loginaccesstype",
        login_group_handlers(),
        body=LoginGroupCreate,
        update=LoginGroupUpdate,
        entity=LoginAccessType,
        listing=LoginAccessTypeList,
    ),
    *_collection(
        "analyzertimeaccesstype",
        capacity_pool_handlers(),
        body=CapacityPoolCreate,
        update=CapacityPoolUpdate,
        entity=AnalyzerTimeAccessType,
        listing=AnalyzerTimeAccessTypeList,
    ),
    *_collection(
        "professionalaccessgroup",
        access_group_handlers("professional"),
        body=AccessGroupCreate,
        update=AccessGroupUpdate,
        entity=ProfessionalAccessGroup,
        listing=ProfessionalAccessGroupList,
    ),
    *_collection(
        "analyzeraccessgroup",
        access_group_handlers("analyzer"),
        body=AccessGroupCreate,
        update=AccessGroupUpdate,
        entity=AnalyzerAccessGroup,
        listing=AnalyzerAccessGroupList,
    ),
    *_collection(
        "useraccessgroup",
        access_group_handlers("user"),
        body=AccessGroupCreate,
        update=AccessGroupUpdate,
        entity=UserAccessGroup,
        listing=UserAccessGroupList,
    ),
]
