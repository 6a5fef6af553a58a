"""`/qrs/about`, its API description and enums, and `/qrs/ssl/ping`: what clients written
for the platform's QRS read first (qsAPI's `QRS()` reads the version before anything else)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from repository_service.about.models import About, ApiDescription, ApiEnums, Ping
from repository_service.access.kinds import SESSION_TYPE_NAMES
from shared.web.endpoints import ENDPOINTS_KEY, Endpoint, NoBody
from shared.web.requests import query_param

# The QRS API level this service reproduces (the platform's repository API 38.35): clients
# compare it with the lowest version they support, and choose newer calls by it.
BUILD_VERSION = "38.35.0.0"
BUILD_DATE = "11/30/2026 12:00:00 AM"
TAGS = ("about",)
NODE_TYPE_CENTRAL = 1


@dataclass(frozen=True)
class EnumDescription:
    """One enum as the platform describes it: its values and the properties that use it."""

    values: tuple[str, ...]
    usages: tuple[str, ...]


# Keyed by enum name, as the platform does; `Usages` names the `<Entity>.<property>` using it.
ENUMS: dict[str, EnumDescription] = {
    "NodeTypeEnum": EnumDescription(("0: Undefined", "1: Central", "2: Rim"), ("About.NodeType",)),
    "AccessTypeEnum": EnumDescription(
        ("0: None", *(f"{n}: {name}" for n, name in sorted(SESSION_TYPE_NAMES.items()))),
        ("AccessTypeResult.AccessType",),
    ),
    "AccessTypeResultCodeEnum": EnumDescription(
        (
            "0: Ok",
            "1: UnknownUser",
            "2: LicenseNotAvailable",
            "3: NoAvailableAccessType",
            "4: NoAvailableAccessTypePendingUserSync",
            "5: MaxParallelSessionsExceeded",
            "6: ExcessAssignment",
        ),
        ("AccessTypeResult.AccessTypeResultCode",),
    ),
    "RuleContextEnum": EnumDescription(
        ("0: BothQlikSenseAndQMC", "1: QlikSenseOnly", "2: QMCOnly"), ("SystemRule.RuleContext",)
    ),
}


async def about(request: web.Request) -> web.Response:
    """Describe this repository: version, database, node type."""
    return web.json_response(
        {
            "buildVersion": BUILD_VERSION,
            "buildDate": BUILD_DATE,
            "databaseProvider": "PostgreSQL",
            "nodeType": NODE_TYPE_CENTRAL,
            "sharedPersistence": True,
            "requiresBootstrap": False,
            "singleNodeOnly": False,
            "schemaPath": "About",
        }
    )


async def api_description(request: web.Request) -> web.Response:
    """List the `/qrs/` routes as "VERB /path" strings (`?method=` keeps one verb).

    `extended=true` adds what the platform adds, `[resource=..., bodytype=..., returntype=...]`;
    with `format=JSON` as well each entry is the JSON text of `{"method", "path", "extended"}`,
    still a string, as the platform answers and its clients parse (each entry on its own).
    `format=JSON` alone changes nothing: qsAPI sends it by default and reads "VERB /path"."""
    method = (query_param(request, "method") or "").upper() or None
    extended = (query_param(request, "extended") or "").lower() == "true"
    as_json = (query_param(request, "format") or "").lower() == "json"
    routes = sorted(
        {
            (ep.method, ep.path, _extended(ep) if extended else None)
            for ep in request.app[ENDPOINTS_KEY]
            if ep.path.startswith("/qrs/") and (method is None or ep.method == method)
        }
    )
    answer = []
    for verb, path, more in routes:
        if as_json and more:
            entry = {"method": verb, "path": path, "extended": more}
            answer.append(json.dumps(entry, separators=(",", ":")))
        else:
            answer.append(f"{verb} {path}" + (f" {more}" if more else ""))
    return web.json_response(answer)


def _extended(ep: Endpoint) -> str:
    body = ep.body.__name__ if ep.body is not None else "Void"
    returns = "Void"
    if ep.response is None and ep.status != 204 and ep.response_media_type == "application/json":
        returns = "Object"
    elif ep.response is not None and ep.response is not NoBody:
        returns = ep.response.__name__
    return f"[resource=manual, bodytype={body}, returntype={returns}]"


async def api_enums(request: web.Request) -> web.Response:
    """List the enums the `/qrs/` entities use: each name with its `Values` ("number: name")
    and `Usages` (the properties that hold it), as the platform answers."""
    return web.json_response(
        {
            name: {"Values": list(enum.values), "Usages": list(enum.usages)}
            for name, enum in ENUMS.items()
        }
    )


async def ssl_ping(request: web.Request) -> web.Response:
    """Answer that the service is reachable with these credentials."""
    return web.json_response("Ping successful.")


ENDPOINTS = [
    Endpoint(
        "GET",
        "/qrs/about",
        about,
        "About this repository",
        response=About,
        auth="caller",
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/qrs/about/api/description",
        api_description,
        "List the QRS API routes",
        response=ApiDescription,
        auth="caller",
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/qrs/about/api/enums",
        api_enums,
        "List the QRS API enums",
        response=ApiEnums,
        auth="caller",
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/qrs/ssl/ping",
        ssl_ping,
        "Check the connection",
        response=Ping,
        auth="caller",
        tags=TAGS,
    ),
]
