"""`/qrs/about`, its API description and enums, and `/qrs/ssl/ping`: what clients written
for the platform's QRS read first (qsAPI's `QRS()` reads the version before anything else)."""

from __future__ import annotations

from aiohttp import web

from shared.web.endpoints import ENDPOINTS_KEY, Endpoint

# The QRS API level this service reproduces (the platform's repository API 38.35): clients
# compare it with the lowest version they support, and choose newer calls by it.
BUILD_VERSION = "38.35.0.0"
BUILD_DATE = "11/30/2026 12:00:00 AM"
TAGS = ("about",)
NODE_TYPE_CENTRAL = 1

ENUMS: dict[str, list[str]] = {
    "About.NodeType": ["0: Undefined", "1: Central", "2: Rim"],
    "AccessTypeResult.AccessType": [
        "0: None",
        "1: UserAccessType",
        "2: LoginAccessType",
        "3: AnalyzerAccessType",
        "4: ProfessionalAccessType",
        "5: AnalyzerTimeAccessType",
    ],
    "AccessTypeResult.AccessTypeResultCode": [
        "0: Ok",
        "1: UnknownUser",
        "2: LicenseNotAvailable",
        "3: NoAvailableAccessType",
        "4: NoAvailableAccessTypePendingUserSync",
        "5: MaxParallelSessionsExceeded",
        "6: ExcessAssignment",
    ],
    "SystemRule.RuleContext": ["0: BothQlikSenseAndQMC", "1: QlikSenseOnly", "2: QMCOnly"],
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
    """List the `/qrs/` routes as "VERB /path" strings (`?method=` keeps one verb)."""
    method = next(
        (v.upper() for k, v in request.query.items() if k.lower() == "method" and v), None
    )
    routes = sorted(
        {
            f"{ep.method} {ep.path}"
            for ep in request.app[ENDPOINTS_KEY]
            if ep.path.startswith("/qrs/") and (method is None or ep.method == method)
        }
    )
    return web.json_response(routes)


async def api_enums(request: web.Request) -> web.Response:
    """List the enums the `/qrs/` entities use, each value as "number: name"."""
    return web.json_response({name: {"values": values} for name, values in ENUMS.items()})


async def ssl_ping(request: web.Request) -> web.Response:
    """Answer that the service is reachable with these credentials."""
    return web.json_response("Ping successful.")


ENDPOINTS = [
    Endpoint("GET", "/qrs/about", about, "About this repository", auth="caller", tags=TAGS),
    Endpoint(
        "GET",
        "/qrs/about/api/description",
        api_description,
        "List the QRS API routes",
        auth="caller",
        tags=TAGS,
    ),
    Endpoint(
        "GET", "/qrs/about/api/enums", api_enums, "List the QRS API enums", auth="caller", tags=TAGS
    ),
    Endpoint("GET", "/qrs/ssl/ping", ssl_ping, "Check the connection", auth="caller", tags=TAGS),
]
