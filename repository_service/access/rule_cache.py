"""The groups' and pools' rules, parsed and cached for the access decision: re-read at most
every CACHE_SECONDS, or at once after a change in this process."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from repository_service.access.kinds import ACCESS_TYPES
from repository_service.access.rules import EVERYONE, NOBODY, Rule, parse_rule
from shared.db import Db

CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class RuleSet:
    """Every group and pool with its parsed rule, in creation order."""

    access: dict[str, list[tuple[uuid.UUID, Rule]]]
    login: list[tuple[uuid.UUID, Rule]]
    capacity: list[tuple[uuid.UUID, Rule]]
    read_at: float


def _rule(text: str | None) -> Rule:
    return EVERYONE if text is None or not text.strip() else parse_rule(text)


async def read_rules(db: Db) -> RuleSet:
    """Read every group and pool and parse its rule."""
    access: dict[str, list[tuple[uuid.UUID, Rule]]] = {kind: [] for kind in ACCESS_TYPES}
    for r in await db.fetch(
        "SELECT id, access_type, rule, rule_disabled FROM access_groups ORDER BY created_date, id"
    ):
        # An access group without a rule (created by name only), or whose license rule is
        # disabled, grants nobody: unlike a login group or pool, where no rule is everyone.
        missing = r["rule"] is None or r["rule_disabled"]
        access[r["access_type"]].append((r["id"], NOBODY if missing else _rule(r["rule"])))
    login = [
        (r["id"], _rule(r["rule"]))
        for r in await db.fetch("SELECT id, rule FROM login_groups ORDER BY created_date, id")
    ]
    capacity = [
        (r["id"], _rule(r["rule"]))
        for r in await db.fetch("SELECT id, rule FROM capacity_pools ORDER BY created_date, id")
    ]
    return RuleSet(access, login, capacity, time.monotonic())


class RuleCache:
    """The RuleSet, re-read at most every CACHE_SECONDS (or after a local change)."""

    def __init__(self, db: Db) -> None:
        self._db = db
        self._rules: RuleSet | None = None

    def invalidate(self) -> None:
        """Forget the cached rules."""
        self._rules = None

    async def get(self) -> RuleSet:
        """Return the current rules."""
        rules = self._rules
        if rules is None or time.monotonic() - rules.read_at >= CACHE_SECONDS:
            rules = await read_rules(self._db)
            self._rules = rules
        return rules
