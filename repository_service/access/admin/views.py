"""`/qrs/license/*accesstype` and `*accessgroup`: thin handlers over the admin use cases and
the repository, and the access-type overview. The routes are in `routes.py`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from repository_service.access.admin import repository as repo
from repository_service.access.admin.allocations import AllocationNotFound
from repository_service.access.admin.entities import (
    ACCESS_GROUP_FIELDS,
    ALLOCATION_FIELDS,
    Entity,
    access_group_entity,
    allocation_entity,
)
from repository_service.access.admin.models import (
    AccessGroupCreate,
    AccessGroupUpdate,
    AllocationCreate,
    QuotaCreate,
    QuotaUpdate,
)
from repository_service.access.admin.overview import access_type_info, overview
from repository_service.access.admin.quotas import Quota
from repository_service.access.admin.service import AccessAdmin, GroupNotFound, parse_id
from repository_service.access.kinds import KIND, AccessType
from repository_service.auth import READ_ROLES, WRITE_ROLES, Caller, require_roles
from repository_service.keys import ACCESS_STATE as STATE
from repository_service.keys import POOL
from repository_service.qrs.entities import check_same_id, collection_answer
from repository_service.qrs.idempotency import idempotent
from shared.web.requests import read_json, validate

ADMIN = web.AppKey("access_admin", AccessAdmin)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Handlers = dict[str, Handler]


async def _body(request: web.Request, url_id: bool = False) -> dict[str, Any]:
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raw = {"_": raw}  # lets validation name what is wrong
    if url_id:
        check_same_id(request.match_info["id"], raw)
    return raw


def _named(collection: str, handlers: Handlers) -> Handlers:
    """Name each handler after what it does and its collection (`list_useraccessgroup`)."""
    for name, fn in handlers.items():
        fn.__name__ = f"{name}_{collection}"
    return handlers


async def _total(request: web.Request, kind: AccessType) -> int:
    """Return the seats the license gives the pool of `kind` (0 without a license)."""
    state = await request.app[STATE].get()
    return state.totals.get(KIND[kind].pool, 0)


# ---- allocations ---------------------------------------------------------------------------


def allocation_handlers(kind: AccessType) -> Handlers:
    """Return list/get/create/delete handlers for one allocation type."""

    async def listing(request: web.Request) -> web.Response:
        require_roles(request, READ_ROLES)
        total = await _total(request, kind)
        rows = await repo.list_allocations(request.app[POOL], kind)
        entities = [allocation_entity(r, total) for r in rows]
        return collection_answer(request, entities, ALLOCATION_FIELDS)

    async def get_one(request: web.Request) -> web.Response:
        require_roles(request, READ_ROLES)
        total = await _total(request, kind)
        allocation_id = parse_id(request.match_info["id"], AllocationNotFound)
        row = await repo.get_allocation(request.app[POOL], allocation_id, kind)
        if row is None:
            raise AllocationNotFound()
        return web.json_response(allocation_entity(row, total))

    async def create(request: web.Request) -> web.Response:
        caller = require_roles(request, WRITE_ROLES)
        body = validate(AllocationCreate, await _body(request))

        async def run() -> tuple[int, object]:
            return 201, await request.app[ADMIN].allocate(caller, kind, body)

        return await idempotent(request, caller, run)

    async def delete(request: web.Request) -> web.Response:
        caller = require_roles(request, WRITE_ROLES)
        await request.app[ADMIN].deallocate(caller, kind, request.match_info["id"])
        return web.Response(status=204)

    handlers: Handlers = {"list": listing, "get": get_one, "create": create, "delete": delete}
    return _named(f"{kind}_access", handlers)


# ---- access groups and quota groups --------------------------------------------------------


class GroupCollection(Protocol):
    """What the handlers of one group collection call: its entities and its use cases."""

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields of its entities that a filter or orderby may name."""

    @property
    def create_body(self) -> type[BaseModel]:
        """The model of a POST body."""

    @property
    def update_body(self) -> type[BaseModel]:
        """The model of a PUT body."""

    async def entities(self, request: web.Request) -> list[Entity]: ...

    async def create(self, request: web.Request, caller: Caller) -> Entity: ...

    async def update(self, request: web.Request, caller: Caller) -> Entity: ...

    async def delete(self, request: web.Request, caller: Caller) -> None: ...


def group_handlers(collection: str, groups: GroupCollection) -> Handlers:
    """Return list/get/create/update/delete handlers for one group collection."""

    async def listing(request: web.Request) -> web.Response:
        require_roles(request, READ_ROLES)
        return collection_answer(request, await groups.entities(request), groups.fields)

    async def get_one(request: web.Request) -> web.Response:
        require_roles(request, READ_ROLES)
        wanted = request.match_info["id"].lower()
        for entity in await groups.entities(request):
            if entity["id"] == wanted:
                return web.json_response(entity)
        raise GroupNotFound()

    async def create(request: web.Request) -> web.Response:
        caller = require_roles(request, WRITE_ROLES)

        async def run() -> tuple[int, object]:
            return 201, await groups.create(request, caller)

        return await idempotent(request, caller, run)

    async def update(request: web.Request) -> web.Response:
        caller = require_roles(request, WRITE_ROLES)
        return web.json_response(await groups.update(request, caller))

    async def delete(request: web.Request) -> web.Response:
        caller = require_roles(request, WRITE_ROLES)
        await groups.delete(request, caller)
        return web.Response(status=204)

    handlers: Handlers = {
        "list": listing,
        "get": get_one,
        "create": create,
        "update": update,
        "delete": delete,
    }
    return _named(collection, handlers)


class AccessGroups:
    """The access groups of one allocation type."""

    fields = ACCESS_GROUP_FIELDS
    create_body = AccessGroupCreate
    update_body = AccessGroupUpdate

    def __init__(self, kind: AccessType) -> None:
        self.kind = kind

    async def entities(self, request: web.Request) -> list[Entity]:
        rows = await repo.list_access_groups(request.app[POOL], self.kind)
        return [access_group_entity(r) for r in rows]

    async def create(self, request: web.Request, caller: Caller) -> Entity:
        body = validate(self.create_body, await _body(request))
        return await request.app[ADMIN].create_group(caller, self.kind, body)

    async def update(self, request: web.Request, caller: Caller) -> Entity:
        body = validate(self.update_body, await _body(request, url_id=True))
        ident = request.match_info["id"]
        return await request.app[ADMIN].update_group(caller, self.kind, ident, body)

    async def delete(self, request: web.Request, caller: Caller) -> None:
        await request.app[ADMIN].delete_group(caller, self.kind, request.match_info["id"])


class QuotaGroups:
    """The login-access groups or the analyzer-time pools."""

    def __init__(
        self,
        quota: Quota,
        fields: tuple[str, ...],
        create: type[QuotaCreate],
        update: type[QuotaUpdate],
    ) -> None:
        self.quota = quota
        self.fields = fields
        self.create_body = create
        self.update_body = update

    async def entities(self, request: web.Request) -> list[Entity]:
        rows = await repo.list_quota_groups(request.app[POOL], self.quota.table)
        return [self.quota.entity(r) for r in rows]

    async def create(self, request: web.Request, caller: Caller) -> Entity:
        body = validate(self.create_body, await _body(request))
        return await request.app[ADMIN].create_quota_group(caller, self.quota, body)

    async def update(self, request: web.Request, caller: Caller) -> Entity:
        body = validate(self.update_body, await _body(request, url_id=True))
        ident = request.match_info["id"]
        return await request.app[ADMIN].update_quota_group(caller, self.quota, ident, body)

    async def delete(self, request: web.Request, caller: Caller) -> None:
        ident = request.match_info["id"]
        await request.app[ADMIN].delete_quota_group(caller, self.quota, ident)


# ---- overview ------------------------------------------------------------------------------


def _answer(model: BaseModel) -> web.Response:
    # `privileges` is added by the middleware when asked for, never sent empty.
    return web.json_response(model.model_dump(mode="json", by_alias=True, exclude={"privileges"}))


async def access_overview(request: web.Request) -> web.Response:
    """Return the access-type overview."""
    require_roles(request, READ_ROLES)
    state = await request.app[STATE].get()
    return _answer(await overview(request.app[POOL], state))


async def access_info(request: web.Request) -> web.Response:
    """Return the deprecated access-type information (tokens and allocations)."""
    require_roles(request, READ_ROLES)
    state = await request.app[STATE].get()
    return _answer(access_type_info(await overview(request.app[POOL], state)))
