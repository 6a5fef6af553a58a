"""License rules the platform's way: each access group's `rule` shown as a system rule.

There is one source of truth: the `rule` column of `access_groups`. A system rule of category
License is a view of it (`resourceFilter: "License.<Type>AccessGroup_<group id>"`), so a rule
changed through `/qrs/systemrule` is the group's rule and the reverse; the rule language is
the one of `access/rules.py`, which is the platform's (`((user.name like "*"))`,
`user.group = "Sales"`).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from repository_service.access.admin.entities import access_group_entity
from repository_service.access.kinds import KIND, KINDS
from repository_service.access.rule_cache import RuleCache
from repository_service.access.rules import parse_rule, subject_of
from repository_service.audit import log as audit
from repository_service.auth import Caller
from repository_service.qrs.entities import check_not_modified_since, iso_ms
from repository_service.qrs.filters import parse_filter
from repository_service.systemrules.models import (
    AuditParameters,
    SystemRuleCreate,
    SystemRuleUpdate,
)
from repository_service.users import repository as users
from repository_service.users.service import USER_FIELDS, user_entity
from shared.db import one
from shared.sql import Queries
from shared.web.errors import ApiError, Conflict, NotFound

q = Queries(Path(__file__).with_name("queries.sql"))

RULE_FIELDS = (
    "id",
    "createdDate",
    "modifiedDate",
    "modifiedByUserName",
    "category",
    "subcategory",
    "type",
    "name",
    "rule",
    "resourceFilter",
    "actions",
    "comment",
    "disabled",
    "ruleContext",
    "seedId",
    "version",
    "tags",
    "schemaPath",
)
CONDENSED = (
    "id",
    "category",
    "subcategory",
    "type",
    "name",
    "rule",
    "resourceFilter",
    "actions",
    "comment",
    "disabled",
)
GROUP_FIELDS = ("id", "createdDate", "modifiedDate", "modifiedByUserName", "name", "rule")
# The platform's license rules allow one action: "Allow access" (bit 1).
ALLOW_ACCESS = 1
KIND_OF_SCHEMA = {kind.group_schema.lower(): kind.name for kind in KINDS}
_RESOURCE = re.compile(
    r"^License\.(ProfessionalAccessGroup|AnalyzerAccessGroup|UserAccessGroup)_"
    r"([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$",
    re.IGNORECASE,
)
ZERO_ID = "00000000-0000-0000-0000-000000000000"


class RuleNotFound(NotFound):
    code, message = "NotFound", "No system rule with that id."


class UnsupportedCategory(ApiError):
    status, code = 400, "UnsupportedRuleCategory"
    message = "Only license rules (category License) are held by this service."


class InvalidResourceFilter(ApiError):
    status, code = 400, "InvalidResourceFilter"
    message = (
        "A license rule's resourceFilter names one access group:"
        " License.<Professional|Analyzer|User>AccessGroup_<group id>."
    )


def rule_entity(row: asyncpg.Record) -> dict[str, Any]:
    """Return the SystemRule JSON of an access group's license rule."""
    return {
        "id": str(row["rule_id"]),
        "createdDate": iso_ms(row["created_date"]),
        "modifiedDate": iso_ms(row["modified_date"]),
        "modifiedByUserName": row["modified_by"],
        "category": "License",
        "subcategory": "",
        "type": "Custom",
        "name": row["rule_name"] or row["name"],
        "rule": row["rule"],
        "resourceFilter": f"License.{KIND[row['access_type']].group_schema}_{row['id']}",
        "actions": ALLOW_ACCESS,
        "comment": row["rule_comment"],
        "disabled": row["rule_disabled"],
        "ruleContext": 0,
        "seedId": ZERO_ID,
        "version": 0,
        "tags": [],
        "schemaPath": "SystemRule",
    }


def parse_rule_id(value: str) -> uuid.UUID:
    """Parse a system rule id from a URL, 404 when it is not a uuid."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise RuleNotFound() from None


def _target(resource_filter: str) -> tuple[str, uuid.UUID]:
    match = _RESOURCE.match(resource_filter.strip())
    if match is None:
        raise InvalidResourceFilter(details={"resourceFilter": resource_filter})
    return KIND_OF_SCHEMA[match.group(1).lower()], uuid.UUID(match.group(2))


def _check_category(category: str | None) -> None:
    if category is not None and category.strip().lower() != "license":
        raise UnsupportedCategory(details={"category": category})


class LicenseRules:
    """Creates, changes and removes license rules; audits which users they grant."""

    def __init__(self, pool: asyncpg.Pool, rules: RuleCache) -> None:
        self.pool = pool
        self.rules = rules

    async def list(self) -> list[dict[str, Any]]:
        """Return every license rule."""
        return [rule_entity(r) for r in await self.pool.fetch(q.list_rules)]

    async def create(self, caller: Caller, body: SystemRuleCreate) -> dict[str, Any]:
        """Give an access group its license rule (an access group holds one)."""
        _check_category(body.category)
        parse_rule(body.rule)
        kind, group_id = _target(body.resource_filter)
        async with self.pool.acquire() as conn, conn.transaction():
            group = await conn.fetchrow(q.group_for_update, group_id, kind)
            if group is None:
                raise InvalidResourceFilter(
                    "No access group of that type has that id.",
                    details={"resourceFilter": body.resource_filter},
                )
            if group["rule"] is not None:
                raise Conflict(
                    "This access group has a license rule already; change that one.",
                    code="LicenseRuleExists",
                    details={"ruleId": str(group["rule_id"])},
                )
            row = await one(
                conn,
                q.set_rule,
                group_id,
                body.rule,
                body.name,
                body.comment or "",
                body.disabled,
                caller.display,
                True,
            )
            entity = rule_entity(row)
            await audit.append(
                conn,
                actor=caller.display,
                action="licenserule.create",
                entity_type="SystemRule",
                entity_id=row["rule_id"],
                after=entity,
            )
        self.rules.invalidate()
        return entity

    async def update(
        self, caller: Caller, rule_id: uuid.UUID, body: SystemRuleUpdate
    ) -> dict[str, Any]:
        """Change a license rule, refusing a write based on a stale read."""
        _check_category(body.category)
        if body.rule is not None:
            parse_rule(body.rule)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(q.rule_by_id_for_update, rule_id)
            if row is None:
                raise RuleNotFound()
            if body.resource_filter is not None and _target(body.resource_filter) != (
                row["access_type"],
                row["id"],
            ):
                raise InvalidResourceFilter("A license rule cannot move to another access group.")
            check_not_modified_since(row["modified_date"], body.modified_date)
            before = rule_entity(row)
            row = await one(
                conn,
                q.set_rule,
                row["id"],
                body.rule if body.rule is not None else row["rule"],
                body.name or row["rule_name"],
                body.comment if body.comment is not None else row["rule_comment"],
                body.disabled if body.disabled is not None else row["rule_disabled"],
                caller.display,
                False,
            )
            entity = rule_entity(row)
            await audit.append(
                conn,
                actor=caller.display,
                action="licenserule.update",
                entity_type="SystemRule",
                entity_id=rule_id,
                before=before,
                after=entity,
            )
        self.rules.invalidate()
        return entity

    async def delete(self, caller: Caller, rule_id: uuid.UUID) -> None:
        """Remove a license rule: its access group then grants nobody."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(q.rule_by_id_for_update, rule_id)
            if row is None:
                raise RuleNotFound()
            await one(conn, q.clear_rule, row["id"], caller.display)
            await audit.append(
                conn,
                actor=caller.display,
                action="licenserule.delete",
                entity_type="SystemRule",
                entity_id=rule_id,
                before=rule_entity(row),
            )
        self.rules.invalidate()

    async def audit(self, body: AuditParameters) -> dict[str, Any]:
        """Evaluate the license rules for the users and access groups the filters select."""
        group_rows = await self.pool.fetch(q.list_groups)
        kinds = _kinds(body.resource_type)
        groups = [(r, access_group_entity(r)) for r in group_rows if r["access_type"] in kinds]
        keep_group = parse_filter(body.resource_filter, GROUP_FIELDS)
        groups = _page(
            [(r, e) for r, e in groups if keep_group(e)], body.resource_skip, body.resource_take
        )
        keep_user = parse_filter(body.user_filter, USER_FIELDS)
        people = [(r, user_entity(r)) for r in await users.list_all(self.pool)]
        people = _page([(r, e) for r, e in people if keep_user(e)], body.user_skip, body.user_take)
        applications: list[dict[str, Any]] = []
        rules: dict[str, Any] = {}
        for group, _ in groups:
            if group["rule"] is None:
                continue
            rule = parse_rule(group["rule"])
            for person, _ in people:
                subject = subject_of(
                    person["user_directory"],
                    person["user_id"],
                    person["name"],
                    person["attributes"],
                )
                allowed = not group["rule_disabled"] and rule.matches(subject)
                if not allowed and not body.include_non_granting_rules:
                    continue
                rules[str(group["rule_id"])] = rule_entity(group)
                applications.append(
                    {
                        "userID": str(person["id"]),
                        "resourceID": str(group["id"]),
                        "ruleID": str(group["rule_id"]),
                        "allowed": allowed,
                        "errorAt": -1,
                        "errorMessage": "",
                        "evaluationState": "evaluated",
                    }
                )
        return {
            "users": {str(r["id"]): e for r, e in people},
            "resources": {str(r["id"]): e for r, e in groups},
            "rules": rules,
            "ruleApplication": applications,
            "schemaPath": "AuditResult",
        }


def _kinds(resource_type: str | None) -> set[str]:
    """Return the access-group kinds a resourceType names (all of them when it names none)."""
    if resource_type is None or resource_type.strip().lower() in ("", "license"):
        return {kind.name for kind in KINDS}
    wanted = resource_type.strip().lower().removeprefix("license.")
    return {KIND_OF_SCHEMA[wanted]} if wanted in KIND_OF_SCHEMA else set()


def _page(items: list[Any], skip: int | None, take: int | None) -> list[Any]:
    start = skip or 0
    return items[start:] if take is None else items[start : start + take]
