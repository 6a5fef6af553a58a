"""The routes of the admin side: the overview and, for each allocation type, access-group
collection and quota-group collection, the QRS collection endpoints."""

from __future__ import annotations

from itertools import chain

from pydantic import BaseModel

from repository_service.access.admin import quotas
from repository_service.access.admin.entities import CAPACITY_POOL_FIELDS, LOGIN_GROUP_FIELDS
from repository_service.access.admin.models import (
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
from repository_service.access.admin.overview import AccessTypeOverview, AccessTypesInfo
from repository_service.access.admin.views import (
    AccessGroups,
    GroupCollection,
    Handlers,
    QuotaGroups,
    access_info,
    access_overview,
    allocation_handlers,
    group_handlers,
)
from repository_service.access.kinds import AccessType
from repository_service.qrs.models import Count
from shared.web.endpoints import Endpoint, NoBody

TAGS = ("access",)


def _collection(
    path: str,
    handlers: Handlers,
    *,
    body: type[BaseModel],
    entity: type[BaseModel],
    listing: type[BaseModel],
    update: type[BaseModel] | None = None,
) -> list[Endpoint]:
    """Return the endpoints of one collection: list, full, count, get, create, delete and,
    when it takes an `update` body, change."""
    base = f"/qrs/license/{path}"
    one = f"{base}/{{id}}"

    def endpoint(
        method: str,
        url: str,
        action: str,
        summary: str,
        response: type[BaseModel] | type[NoBody],
        errors: tuple[int, ...],
        *,
        request_body: type[BaseModel] | None = None,
        status: int = 200,
    ) -> Endpoint:
        return Endpoint(
            method,
            url,
            handlers[action],
            summary,
            body=request_body,
            response=response,
            status=status,
            auth="caller",
            errors=errors,
            tags=TAGS,
        )

    read, write = (400, 403), (403, 404, 409)
    endpoints = [
        endpoint("GET", base, "list", f"List {path}", listing, read),
        endpoint("GET", f"{base}/full", "list", f"List {path} in full", listing, read),
        endpoint("GET", f"{base}/count", "list", f"Count {path}", Count, read),
        endpoint("GET", one, "get", f"Get one {path}", entity, (403, 404)),
        endpoint(
            "POST", base, "create", f"Create {path}", entity, write, request_body=body, status=201
        ),
        endpoint("DELETE", one, "delete", f"Delete {path}", NoBody, (403, 404), status=204),
    ]
    if update is not None:
        endpoints.append(
            endpoint("PUT", one, "update", f"Change {path}", entity, write, request_body=update)
        )
    return endpoints


def _allocations(
    kind: AccessType, entity: type[BaseModel], listing: type[BaseModel]
) -> list[Endpoint]:
    handlers = allocation_handlers(kind)
    return _collection(
        f"{kind}accesstype", handlers, body=AllocationCreate, entity=entity, listing=listing
    )


def _groups(
    path: str, groups: GroupCollection, entity: type[BaseModel], listing: type[BaseModel]
) -> list[Endpoint]:
    return _collection(
        path,
        group_handlers(path, groups),
        body=groups.create_body,
        update=groups.update_body,
        entity=entity,
        listing=listing,
    )


# Per allocation type, the models of one allocation (and one access group) and of the list.
_ALLOCATIONS: dict[AccessType, tuple[type[BaseModel], type[BaseModel]]] = {
    "professional": (ProfessionalAccessType, ProfessionalAccessTypeList),
    "analyzer": (AnalyzerAccessType, AnalyzerAccessTypeList),
    "user": (UserAccessType, UserAccessTypeList),
}
_ACCESS_GROUPS: dict[AccessType, tuple[type[BaseModel], type[BaseModel]]] = {
    "professional": (ProfessionalAccessGroup, ProfessionalAccessGroupList),
    "analyzer": (AnalyzerAccessGroup, AnalyzerAccessGroupList),
    "user": (UserAccessGroup, UserAccessGroupList),
}
_LOGIN_GROUPS = QuotaGroups(
    quotas.LOGIN_GROUPS, LOGIN_GROUP_FIELDS, LoginGroupCreate, LoginGroupUpdate
)
_CAPACITY_POOLS = QuotaGroups(
    quotas.CAPACITY_POOLS, CAPACITY_POOL_FIELDS, CapacityPoolCreate, CapacityPoolUpdate
)

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
    *chain.from_iterable(_allocations(kind, *models) for kind, models in _ALLOCATIONS.items()),
    *_groups("loginaccesstype", _LOGIN_GROUPS, LoginAccessType, LoginAccessTypeList),
    *_groups(
        "analyzertimeaccesstype",
        _CAPACITY_POOLS,
        AnalyzerTimeAccessType,
        AnalyzerTimeAccessTypeList,
    ),
    *chain.from_iterable(
        _groups(f"{kind}accessgroup", AccessGroups(kind), *models)
        for kind, models in _ACCESS_GROUPS.items()
    ),
]
