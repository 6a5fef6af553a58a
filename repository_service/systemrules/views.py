"""`/qrs/systemrule`: license rules as system rules, and the license rule audit."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from repository_service.auth import READ_ROLES, WRITE_ROLES, require_roles
from repository_service.qrs.entities import check_same_id, collection_answer
from repository_service.qrs.idempotency import idempotent
from repository_service.qrs.models import Count
from repository_service.systemrules.models import (
    AuditParameters,
    AuditResult,
    SystemRule,
    SystemRuleCondensedList,
    SystemRuleCreate,
    SystemRuleList,
    SystemRuleUpdate,
)
from repository_service.systemrules.service import (
    CONDENSED,
    RULE_FIELDS,
    LicenseRules,
    RuleNotFound,
    parse_rule_id,
)
from shared.web.endpoints import Endpoint, NoBody
from shared.web.errors import ValidationFailed
from shared.web.requests import read_json, validate

LICENSE_RULES = web.AppKey("license_rules", LicenseRules)
TAGS = ("systemrule",)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raise ValidationFailed("The body must be a JSON object.")
    return raw


async def list_rules(request: web.Request) -> web.Response:
    """List license rules (condensed, `/full` or `/count`), with filter and orderby."""
    require_roles(request, READ_ROLES)
    entities = await request.app[LICENSE_RULES].list()
    return collection_answer(request, entities, RULE_FIELDS, condensed=CONDENSED)


async def get_rule(request: web.Request) -> web.Response:
    """Return one license rule."""
    require_roles(request, READ_ROLES)
    wanted = str(parse_rule_id(request.match_info["id"]))
    for entity in await request.app[LICENSE_RULES].list():
        if entity["id"] == wanted:
            return web.json_response(entity)
    raise RuleNotFound()


async def create_rule(request: web.Request) -> web.Response:
    """Give an access group its license rule."""
    caller = require_roles(request, WRITE_ROLES)
    body = validate(SystemRuleCreate, await _body(request))

    async def create() -> tuple[int, object]:
        return 201, await request.app[LICENSE_RULES].create(caller, body)

    return await idempotent(request, caller, create)


async def update_rule(request: web.Request) -> web.Response:
    """Change a license rule (optimistic concurrency on modifiedDate)."""
    caller = require_roles(request, WRITE_ROLES)
    raw = await _body(request)
    check_same_id(request.match_info["id"], raw)
    body = validate(SystemRuleUpdate, raw)
    rule_id = parse_rule_id(request.match_info["id"])
    return web.json_response(await request.app[LICENSE_RULES].update(caller, rule_id, body))


async def delete_rule(request: web.Request) -> web.Response:
    """Remove a license rule; its access group then grants nobody."""
    caller = require_roles(request, WRITE_ROLES)
    await request.app[LICENSE_RULES].delete(caller, parse_rule_id(request.match_info["id"]))
    return web.Response(status=204)


async def license_audit(request: web.Request) -> web.Response:
    """Tell which users the license rules grant which access groups."""
    require_roles(request, READ_ROLES)
    body = validate(AuditParameters, await _body(request))
    return web.json_response(await request.app[LICENSE_RULES].audit(body))


def _get(
    path: str,
    handler: Any,
    summary: str,
    errors: tuple[int, ...],
    response: type[BaseModel],
) -> Endpoint:
    return Endpoint(
        "GET", path, handler, summary, response=response, auth="caller", errors=errors, tags=TAGS
    )


ENDPOINTS = [
    _get(
        "/qrs/systemrule",
        list_rules,
        "List license rules",
        (400, 403),
        SystemRuleCondensedList,
    ),
    _get(
        "/qrs/systemrule/full", list_rules, "List license rules in full", (400, 403), SystemRuleList
    ),
    _get("/qrs/systemrule/count", list_rules, "Count license rules", (400, 403), Count),
    Endpoint(
        "POST",
        "/qrs/systemrule/license/audit",
        license_audit,
        "Audit the license rules",
        body=AuditParameters,
        response=AuditResult,
        auth="caller",
        errors=(400, 403),
        tags=TAGS,
    ),
    _get("/qrs/systemrule/{id}", get_rule, "Get a license rule", (403, 404), SystemRule),
    Endpoint(
        "POST",
        "/qrs/systemrule",
        create_rule,
        "Create a license rule for an access group",
        body=SystemRuleCreate,
        response=SystemRule,
        status=201,
        auth="caller",
        errors=(400, 403, 409),
        tags=TAGS,
    ),
    Endpoint(
        "PUT",
        "/qrs/systemrule/{id}",
        update_rule,
        "Change a license rule",
        body=SystemRuleUpdate,
        response=SystemRule,
        auth="caller",
        errors=(400, 403, 404, 409),
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/qrs/systemrule/{id}",
        delete_rule,
        "Remove a license rule",
        response=NoBody,
        status=204,
        auth="caller",
        errors=(403, 404),
        tags=TAGS,
    ),
]
