"""Admin use cases on allocations, groups and pools; each owns its transaction and audits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from repository_service.access import allocations as alloc
from repository_service.access import groups, seats
from repository_service.access.kinds import KIND, AccessType
from repository_service.access.models import (
    AccessGroupCreate,
    AccessGroupUpdate,
    CapacityPoolCreate,
    CapacityPoolUpdate,
    LoginGroupCreate,
    LoginGroupUpdate,
    UserRef,
)
from repository_service.access.rule_cache import RuleCache
from repository_service.access.rules import parse_rule
from repository_service.access.state import StateCache
from repository_service.audit import log as audit
from repository_service.auth import Caller
from repository_service.qrs.entities import NEXT_MODIFIED, check_not_modified_since
from repository_service.settings import QrsSettings
from repository_service.users import repository as users
from shared.db import Conn, one
from shared.web.errors import ApiError, NotFound

_DELETE = {
    "access_groups": "DELETE FROM access_groups WHERE id = $1 AND access_type = $2 RETURNING id",
    "login_groups": "DELETE FROM login_groups WHERE id = $1 RETURNING id",
    "capacity_pools": "DELETE FROM capacity_pools WHERE id = $1 RETURNING id",
}


def parse_id(value: str, missing: type[ApiError] = groups.GroupNotFound) -> uuid.UUID:
    """Parse an id from a URL; a malformed one is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise missing() from None


class AccessAdmin:
    """Creates and removes allocations, access groups, login groups and capacity pools."""

    def __init__(
        self, pool: asyncpg.Pool, state: StateCache, rules: RuleCache, settings: QrsSettings
    ) -> None:
        self.pool = pool
        self.state = state
        self.rules = rules
        self.settings = settings

    async def _user(self, conn: Conn, ref: UserRef, by: str) -> uuid.UUID:
        if ref.id is not None:
            row = await users.get(conn, parse_id(ref.id, NotFound))
            if row is None:
                raise NotFound("No user with that id.", code="UserNotFound")
            return uuid.UUID(str(row["id"]))
        if ref.user_directory is None or ref.user_id is None:
            raise ApiError(
                "Give user.id, or user.userDirectory and user.userId.", code="ValidationFailed"
            )
        row = await users.get_or_create(conn, ref.user_directory, ref.user_id, by=by)
        return uuid.UUID(str(row["id"]))

    # ---- allocations ---------------------------------------------------------------------

    async def allocate(self, caller: Caller, kind: AccessType, ref: UserRef) -> dict[str, Any]:
        """Allocate access of `kind` to a user (or reinstate it from quarantine)."""
        state = await self.state.get()
        async with self.pool.acquire() as conn, conn.transaction():
            user_id = await self._user(conn, ref, caller.display)
            made = await alloc.allocate(conn, kind, user_id, state.totals, caller.display)
            entity = await alloc.entity_by_id(conn, made.id, state.totals[KIND[kind].pool])
            await audit.append(
                conn,
                actor=caller.display,
                action="allocation.reinstate" if made.reinstated else "allocation.create",
                entity_type=entity["schemaPath"],
                entity_id=made.id,
                after=entity,
            )
        return entity

    async def deallocate(self, caller: Caller, kind: AccessType, ident: str) -> str:
        """Remove an allocation: quarantined when used recently, freed otherwise."""
        allocation_id = parse_id(ident, alloc.AllocationNotFound)
        state = await self.state.get()
        async with self.pool.acquire() as conn, conn.transaction():
            total = state.totals[KIND[kind].pool]
            before = await alloc.get_entity(conn, allocation_id, kind, total)
            outcome = await alloc.remove(
                conn, allocation_id, self.settings.quarantine_seconds, state.totals
            )
            await audit.append(
                conn,
                actor=caller.display,
                action=f"allocation.{outcome}",
                entity_type=before["schemaPath"],
                entity_id=allocation_id,
                before=before,
            )
        return outcome

    # ---- access groups -------------------------------------------------------------------

    async def create_group(
        self, caller: Caller, kind: str, body: AccessGroupCreate
    ) -> dict[str, Any]:
        """Create an access group; its rule, when given, must parse."""
        if body.rule is not None:
            parse_rule(body.rule)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await one(
                conn,
                "INSERT INTO access_groups (id, access_type, name, rule, modified_by)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING *",
                uuid.uuid4(),
                kind,
                body.name,
                body.rule,
                caller.display,
            )
            entity = groups.access_group_entity(row)
            await audit.append(
                conn,
                actor=caller.display,
                action="accessgroup.create",
                entity_type=entity["schemaPath"],
                entity_id=row["id"],
                after=entity,
            )
        self.rules.invalidate()
        return entity

    async def update_group(
        self, caller: Caller, kind: str, ident: str, body: AccessGroupUpdate
    ) -> dict[str, Any]:
        """Change an access group's name or rule."""
        if body.rule is not None:
            parse_rule(body.rule)
        group_id = parse_id(ident)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM access_groups WHERE id = $1 AND access_type = $2 FOR UPDATE",
                group_id,
                kind,
            )
            if row is None:
                raise groups.GroupNotFound()
            check_not_modified_since(row["modified_date"], body.modified_date)
            before = groups.access_group_entity(row)
            row = await one(
                conn,
                "UPDATE access_groups SET name = $2, rule = $3, modified_by = $4,"
                " modified_date = "
                f"{NEXT_MODIFIED} WHERE id = $1 RETURNING *",
                group_id,
                body.name or row["name"],
                body.rule if body.rule is not None else row["rule"],
                caller.display,
            )
            entity = groups.access_group_entity(row)
            await audit.append(
                conn,
                actor=caller.display,
                action="accessgroup.update",
                entity_type=entity["schemaPath"],
                entity_id=group_id,
                before=before,
                after=entity,
            )
        self.rules.invalidate()
        return entity

    async def delete_row(
        self, caller: Caller, table: str, ident: str, schema: str, kind: str | None = None
    ) -> None:
        """Delete an access group, login group or capacity pool (its seats are freed)."""
        row_id = parse_id(ident)
        state = await self.state.get()
        args: list[Any] = [row_id, kind] if kind else [row_id]
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_DELETE[table], *args)
            if row is None:
                raise groups.GroupNotFound()
            if table == "login_groups":
                await seats.release(conn, [row_id])
                await seats.settle(conn, "token", state.totals["token"])
            await audit.append(
                conn,
                actor=caller.display,
                action=f"{schema}.delete",
                entity_type=schema,
                entity_id=row_id,
            )
        self.rules.invalidate()

    # ---- login groups --------------------------------------------------------------------

    async def _login_entity(self, conn: Conn, group_id: uuid.UUID) -> dict[str, Any]:
        row = await one(conn, groups._LOGIN_GROUPS + " WHERE g.id = $1", group_id)
        return groups.login_group_entity(row)

    async def create_login_group(self, caller: Caller, body: LoginGroupCreate) -> dict[str, Any]:
        """Create a login-access group holding `assignedTokens` tokens."""
        if body.rule:
            parse_rule(body.rule)
        state = await self.state.get()
        group_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO login_groups (id, name, assigned_tokens, rule, modified_by)"
                " VALUES ($1, $2, $3, $4, $5)",
                group_id,
                body.name,
                body.assigned_tokens,
                body.rule or None,
                caller.display,
            )
            await groups.set_login_tokens(
                conn, group_id, 0, body.assigned_tokens, state.totals["token"]
            )
            entity = await self._login_entity(conn, group_id)
            await audit.append(
                conn,
                actor=caller.display,
                action="logingroup.create",
                entity_type="LoginAccessType",
                entity_id=group_id,
                after=entity,
            )
        self.rules.invalidate()
        return entity

    async def update_login_group(
        self, caller: Caller, ident: str, body: LoginGroupUpdate
    ) -> dict[str, Any]:
        """Change a login group's name, rule or tokens."""
        if body.rule:
            parse_rule(body.rule)
        group_id = parse_id(ident)
        state = await self.state.get()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM login_groups WHERE id = $1 FOR UPDATE", group_id
            )
            if row is None:
                raise groups.GroupNotFound()
            check_not_modified_since(row["modified_date"], body.modified_date)
            before = await self._login_entity(conn, group_id)
            tokens = (
                row["assigned_tokens"] if body.assigned_tokens is None else body.assigned_tokens
            )
            await groups.set_login_tokens(
                conn, group_id, row["assigned_tokens"], tokens, state.totals["token"]
            )
            await conn.execute(
                "UPDATE login_groups SET name = $2, assigned_tokens = $3, rule = $4,"
                " modified_by = $5, modified_date = "
                f"{NEXT_MODIFIED} WHERE id = $1",
                group_id,
                body.name or row["name"],
                tokens,
                (body.rule or None) if body.rule is not None else row["rule"],
                caller.display,
            )
            entity = await self._login_entity(conn, group_id)
            await audit.append(
                conn,
                actor=caller.display,
                action="logingroup.update",
                entity_type="LoginAccessType",
                entity_id=group_id,
                before=before,
                after=entity,
            )
        self.rules.invalidate()
        return entity

    # ---- analyzer-time pools -------------------------------------------------------------

    async def _pool_entity(self, conn: Conn, pool_id: uuid.UUID) -> dict[str, Any]:
        row = await one(
            conn, groups._POOLS + " WHERE c.id = $2", groups.month_start(datetime.now(UTC)), pool_id
        )
        return groups.capacity_pool_entity(row)

    async def create_pool(self, caller: Caller, body: CapacityPoolCreate) -> dict[str, Any]:
        """Create an analyzer-time pool within the analyzer_time allotment."""
        if body.rule:
            parse_rule(body.rule)
        state = await self.state.get()
        pool_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            await groups.check_minutes(conn, state.analyzer_minutes, body.assigned_minutes)
            await conn.execute(
                "INSERT INTO capacity_pools (id, name, assigned_minutes, rule, modified_by)"
                " VALUES ($1, $2, $3, $4, $5)",
                pool_id,
                body.name,
                body.assigned_minutes,
                body.rule or None,
                caller.display,
            )
            entity = await self._pool_entity(conn, pool_id)
            await audit.append(
                conn,
                actor=caller.display,
                action="capacitypool.create",
                entity_type="AnalyzerTimeAccessType",
                entity_id=pool_id,
                after=entity,
            )
        self.rules.invalidate()
        return entity

    async def update_pool(
        self, caller: Caller, ident: str, body: CapacityPoolUpdate
    ) -> dict[str, Any]:
        """Change a pool's name, rule or minutes (still within the allotment)."""
        if body.rule:
            parse_rule(body.rule)
        pool_id = parse_id(ident)
        state = await self.state.get()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM capacity_pools WHERE id = $1 FOR UPDATE", pool_id
            )
            if row is None:
                raise groups.GroupNotFound()
            check_not_modified_since(row["modified_date"], body.modified_date)
            before = await self._pool_entity(conn, pool_id)
            minutes = (
                row["assigned_minutes"] if body.assigned_minutes is None else body.assigned_minutes
            )
            await groups.check_minutes(conn, state.analyzer_minutes, minutes, pool_id)
            await conn.execute(
                "UPDATE capacity_pools SET name = $2, assigned_minutes = $3, rule = $4,"
                " modified_by = $5, modified_date = "
                f"{NEXT_MODIFIED} WHERE id = $1",
                pool_id,
                body.name or row["name"],
                minutes,
                (body.rule or None) if body.rule is not None else row["rule"],
                caller.display,
            )
            entity = await self._pool_entity(conn, pool_id)
            await audit.append(
                conn,
                actor=caller.display,
                action="capacitypool.update",
                entity_type="AnalyzerTimeAccessType",
                entity_id=pool_id,
                before=before,
                after=entity,
            )
        self.rules.invalidate()
        return entity
