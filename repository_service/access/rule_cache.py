"""The groups' and pools' rules, parsed and cached for the access decision: never older than
CACHE_SECONDS (re-read ahead of that, shared/fresh.py), and read at once after a change in
this process.

A RuleSet also remembers what matched each user as the proxy first names it (its user id as
name, no groups): the subject of nearly every access request, matched again on every one of
its sessions otherwise. It lives as long as the rules are unchanged; a re-read that finds the
same rules keeps it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from repository_service.access.kinds import ACCESS_TYPES
from repository_service.access.rules import EVERYONE, NOBODY, Rule, Subject, parse_rule
from shared.db import Db
from shared.fresh import RefreshAhead

CACHE_SECONDS = 1.0


# Users whose matches a RuleSet remembers; past this, it starts over (a bound, not an LRU:
# a site with more active users than this pays the matching, as without the memory).
MATCHES_REMEMBERED = 100_000


class Matches(NamedTuple):
    """The access types, analyzer-time pools and login groups whose rules match a subject."""

    kinds: frozenset[str]
    pools: tuple[uuid.UUID, ...]
    groups: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class RuleSet:
    """Every group and pool with its parsed rule, in creation order."""

    access: dict[str, list[tuple[uuid.UUID, Rule]]]
    login: list[tuple[uuid.UUID, Rule]]
    capacity: list[tuple[uuid.UUID, Rule]]
    # The rows the rules were parsed from: equal signatures, equal rules.
    signature: tuple[object, ...] = ()
    _as_created: dict[tuple[str, str], Matches] = field(default_factory=dict, compare=False)
    # Each distinct Matches once: users share them, so the memory adds no objects per user
    # for the garbage collector to walk (its keys, tuples of strings, it does not track).
    _distinct: dict[Matches, Matches] = field(default_factory=dict, compare=False)

    def match(self, subject: Subject) -> Matches:
        """Return what matches `subject`."""
        return Matches(
            frozenset(
                kind
                for kind, rules in self.access.items()
                if any(rule.matches(subject) for _, rule in rules)
            ),
            tuple(pool for pool, rule in self.capacity if rule.matches(subject)),
            tuple(group for group, rule in self.login if rule.matches(subject)),
        )

    def match_as_created(self, directory: str, user_id: str) -> Matches:
        """Return what matches the user as the proxy creates it, remembered."""
        key = (directory, user_id)
        found = self._as_created.get(key)
        if found is None:
            if len(self._as_created) >= MATCHES_REMEMBERED:
                self._as_created.clear()
            matches = self.match(Subject(directory, user_id, user_id, ()))
            found = self._distinct.setdefault(matches, matches)
            self._as_created[key] = found
        return found


def _rule(text: str | None) -> Rule:
    return EVERYONE if text is None or not text.strip() else parse_rule(text)


async def read_rules(db: Db) -> RuleSet:
    """Read every group and pool and parse its rule."""
    access: dict[str, list[tuple[uuid.UUID, Rule]]] = {kind: [] for kind in ACCESS_TYPES}
    group_rows = await db.fetch(
        "SELECT id, access_type, rule, rule_disabled FROM access_groups ORDER BY created_date, id"
    )
    for r in group_rows:
        # An access group without a rule (created by name only), or whose license rule is
        # disabled, grants nobody: unlike a login group or pool, where no rule is everyone.
        missing = r["rule"] is None or r["rule_disabled"]
        access[r["access_type"]].append((r["id"], NOBODY if missing else _rule(r["rule"])))
    login_rows = await db.fetch("SELECT id, rule FROM login_groups ORDER BY created_date, id")
    pool_rows = await db.fetch("SELECT id, rule FROM capacity_pools ORDER BY created_date, id")
    login = [(r["id"], _rule(r["rule"])) for r in login_rows]
    capacity = [(r["id"], _rule(r["rule"])) for r in pool_rows]
    signature = tuple(tuple(map(tuple, rows)) for rows in (group_rows, login_rows, pool_rows))
    return RuleSet(access, login, capacity, signature)


class RuleCache:
    """The RuleSet, read again within CACHE_SECONDS (shared/fresh.py), or at once after a
    local change."""

    def __init__(self, db: Db) -> None:
        self._db = db
        self._last: RuleSet | None = None
        self._rules = RefreshAhead(self._read, CACHE_SECONDS)

    def invalidate(self) -> None:
        """Forget the cached rules."""
        self._rules.invalidate()

    async def get(self) -> RuleSet:
        """Return the current rules."""
        return await self._rules.get()

    async def _read(self) -> RuleSet:
        fresh = await read_rules(self._db)
        # Unchanged rules keep the RuleSet, and with it the matches it remembers.
        if self._last is None or fresh.signature != self._last.signature:
            self._last = fresh
        return self._last
