"""Admin use cases on allocations, access groups and quota groups (login-access groups and
analyzer-time pools); each owns its transaction and audits what it changed."""

from __future__ import annotations

import uuid

import asyncpg

from repository_service.access.admin import allocations as alloc
from repository_service.access.admin import repository as repo
from repository_service.access.admin.entities import Entity, access_group_entity, allocation_entity
from repository_service.access.admin.models import (
    AccessGroupCreate,
    AccessGroupUpdate,
    AllocationCreate,
    QuotaCreate,
    QuotaUpdate,
    UserRef,
)
from repository_service.access.admin.quotas import Quota, release
from repository_service.access.admin.repository import QuotaFields
from repository_service.access.kinds import KIND, AccessType
from repository_service.access.rule_cache import RuleCache
from repository_service.access.rules import parse_rule
from repository_service.access.state import StateCache
from repository_service.audit import log as audit
from repository_service.auth import Caller
from repository_service.qrs.entities import check_not_modified_since
from repository_service.settings import QrsSettings
from repository_service.users import repository as users
from shared.db import Conn
from shared.web.errors import ApiError, NotFound


class GroupNotFound(NotFound):
    code, message = "NotFound", "No such group or pool."


def parse_id(value: str, missing: type[ApiError] = GroupNotFound) -> uuid.UUID:
    """Parse an id from a URL; a malformed one is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise missing() from None


async def _audit(
    conn: Conn,
    caller: Caller,
    action: str,
    schema: str,
    entity_id: uuid.UUID,
    before: Entity | None = None,
    after: Entity | None = None,
) -> None:
    await audit.append(
        conn,
        actor=caller.display,
        action=action,
        entity_type=schema,
        entity_id=entity_id,
        before=before,
        after=after,
    )


def _unchanged_since_read(
    row: asyncpg.Record | None, body: AccessGroupUpdate | QuotaUpdate
) -> asyncpg.Record:
    """Return the locked row a PUT changes, refusing a missing row or a stale read."""
    if row is None:
        raise GroupNotFound()
    check_not_modified_since(row["modified_date"], body.modified_date)
    return row


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

    async def allocate(self, caller: Caller, kind: AccessType, body: AllocationCreate) -> Entity:
        """Allocate access of `kind` to a user (or reinstate it from quarantine)."""
        state = await self.state.get()
        async with self.pool.acquire() as conn, conn.transaction():
            user_id = await self._user(conn, body.user, caller.display)
            made = await alloc.allocate(conn, kind, user_id, state.totals, caller.display)
            row = await repo.get_allocation(conn, made.id)
            assert row is not None
            entity = allocation_entity(row, state.totals.get(KIND[kind].pool, 0))
            action = "allocation.reinstate" if made.reinstated else "allocation.create"
            await _audit(conn, caller, action, entity["schemaPath"], made.id, after=entity)
        return entity

    async def deallocate(self, caller: Caller, kind: AccessType, ident: str) -> alloc.Removal:
        """Remove an allocation: quarantined when used recently, freed otherwise."""
        allocation_id = parse_id(ident, alloc.AllocationNotFound)
        state = await self.state.get()
        total = state.totals.get(KIND[kind].pool, 0)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.get_allocation(conn, allocation_id, kind)
            if row is None:
                raise alloc.AllocationNotFound()
            before = allocation_entity(row, total)
            quarantine = self.settings.quarantine_seconds
            outcome = await alloc.remove(conn, allocation_id, quarantine, state.totals)
            action = f"allocation.{outcome}"
            await _audit(conn, caller, action, before["schemaPath"], allocation_id, before=before)
        return outcome

    # ---- access groups -------------------------------------------------------------------

    async def create_group(
        self, caller: Caller, kind: AccessType, body: AccessGroupCreate
    ) -> Entity:
        """Create an access group; its rule, when given, must parse."""
        if body.rule is not None:
            parse_rule(body.rule)
        group_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.insert_access_group(
                conn, group_id, kind, body.name, body.rule, caller.display
            )
            entity = access_group_entity(row)
            schema = KIND[kind].group_schema
            await _audit(conn, caller, "accessgroup.create", schema, group_id, after=entity)
        self.rules.invalidate()
        return entity

    async def update_group(
        self, caller: Caller, kind: AccessType, ident: str, body: AccessGroupUpdate
    ) -> Entity:
        """Change an access group's name or rule."""
        if body.rule is not None:
            parse_rule(body.rule)
        group_id = parse_id(ident)
        async with self.pool.acquire() as conn, conn.transaction():
            row = _unchanged_since_read(await repo.lock_access_group(conn, group_id, kind), body)
            before = access_group_entity(row)
            rule = body.rule if body.rule is not None else row["rule"]
            row = await repo.update_access_group(
                conn, group_id, body.name or row["name"], rule, caller.display
            )
            entity = access_group_entity(row)
            schema = KIND[kind].group_schema
            await _audit(conn, caller, "accessgroup.update", schema, group_id, before, entity)
        self.rules.invalidate()
        return entity

    async def delete_group(self, caller: Caller, kind: AccessType, ident: str) -> None:
        """Delete an access group."""
        group_id = parse_id(ident)
        schema = KIND[kind].group_schema
        async with self.pool.acquire() as conn, conn.transaction():
            if not await repo.delete_access_group(conn, group_id, kind):
                raise GroupNotFound()
            await _audit(conn, caller, f"{schema}.delete", schema, group_id)
        self.rules.invalidate()

    # ---- quota groups --------------------------------------------------------------------

    async def create_quota_group(self, caller: Caller, quota: Quota, body: QuotaCreate) -> Entity:
        """Create a login-access group or an analyzer-time pool holding `body.amount`."""
        if body.rule:
            parse_rule(body.rule)
        fields = QuotaFields(body.name, body.amount, body.rule or None)
        state = await self.state.get()
        group_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            await quota.reserve(conn, group_id, 0, fields.amount, state)
            await repo.insert_quota_group(conn, quota.table, group_id, fields, caller.display)
            entity = quota.entity(await repo.get_quota_group(conn, quota.table, group_id))
            action = f"{quota.action}.create"
            await _audit(conn, caller, action, quota.schema, group_id, after=entity)
        self.rules.invalidate()
        return entity

    async def update_quota_group(
        self, caller: Caller, quota: Quota, ident: str, body: QuotaUpdate
    ) -> Entity:
        """Change a quota group's name, rule or amount (which must still be available)."""
        if body.rule:
            parse_rule(body.rule)
        group_id = parse_id(ident)
        state = await self.state.get()
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await repo.lock_quota_group(conn, quota.table, group_id)
            row = _unchanged_since_read(locked, body)
            before = quota.entity(await repo.get_quota_group(conn, quota.table, group_id))
            fields = QuotaFields(
                body.name or row["name"],
                row[quota.column] if body.amount is None else body.amount,
                (body.rule or None) if body.rule is not None else row["rule"],
            )
            await quota.reserve(conn, group_id, row[quota.column], fields.amount, state)
            await repo.update_quota_group(conn, quota.table, group_id, fields, caller.display)
            entity = quota.entity(await repo.get_quota_group(conn, quota.table, group_id))
            action = f"{quota.action}.update"
            await _audit(conn, caller, action, quota.schema, group_id, before, entity)
        self.rules.invalidate()
        return entity

    async def delete_quota_group(self, caller: Caller, quota: Quota, ident: str) -> None:
        """Delete a quota group; the tokens of a login-access group are freed."""
        group_id = parse_id(ident)
        state = await self.state.get()
        async with self.pool.acquire() as conn, conn.transaction():
            if not await repo.delete_quota_group(conn, quota.table, group_id):
                raise GroupNotFound()
            await release(conn, quota, group_id, state)
            await _audit(conn, caller, f"{quota.schema}.delete", quota.schema, group_id)
        self.rules.invalidate()
