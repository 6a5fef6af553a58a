"""User use cases: create, change, delete, with role rules and the audit log."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from repository_service.access.admin import allocations
from repository_service.audit import log as audit
from repository_service.auth import ROLE_ROOT, Caller
from repository_service.qrs.entities import check_not_modified_since, iso_ms
from repository_service.users import repository as repo
from repository_service.users.models import UserCreate, UserUpdate
from shared.web.errors import ApiError, Conflict, Forbidden, NotFound

USER_FIELDS = (
    "id",
    "createdDate",
    "modifiedDate",
    "modifiedByUserName",
    "userDirectory",
    "userId",
    "name",
    "roles",
    "attributes",
    "inactive",
    "userDirectoryConnectorName",
    "removedExternally",
    "blacklisted",
    "deleteProhibited",
    "customProperties",
    "tags",
    "schemaPath",
)


class UserNotFound(NotFound):
    code, message = "UserNotFound", "No user with that id."


def user_entity(row: asyncpg.Record) -> dict[str, Any]:
    """Return the QRS JSON of a user row."""
    return {
        "id": str(row["id"]),
        "createdDate": iso_ms(row["created_date"]),
        "modifiedDate": iso_ms(row["modified_date"]),
        "modifiedByUserName": row["modified_by"],
        "userDirectory": row["user_directory"],
        "userId": row["user_id"],
        "name": row["name"],
        "roles": sorted(row["roles"]),
        "attributes": row["attributes"],
        "inactive": row["inactive"],
        # The platform's fields for users synchronised from a directory connector: this store
        # has no connectors, so each user belongs to the connector named like its directory.
        "userDirectoryConnectorName": row["user_directory"],
        "removedExternally": False,
        "blacklisted": False,
        "deleteProhibited": False,
        "customProperties": [],
        "tags": [],
        "schemaPath": "User",
    }


def check_role_change(caller: Caller, before: set[str], after: set[str]) -> None:
    """RootAdmin changes any role; SecurityAdmin only roles other than RootAdmin."""
    changed = before ^ after
    if not changed:
        return
    if ROLE_ROOT in caller.roles:
        return
    if "SecurityAdmin" in caller.roles and ROLE_ROOT not in changed:
        return
    raise Forbidden("Changing these roles needs RootAdmin.", details={"roles": sorted(changed)})


def check_activity_change(caller: Caller, roles: set[str], before: bool, after: bool) -> None:
    """Only a RootAdmin makes a RootAdmin inactive (or active again).

    An inactive user is refused everywhere, so this is the same power as deleting it."""
    if before != after and ROLE_ROOT in roles and ROLE_ROOT not in caller.roles:
        raise Forbidden("Changing whether a RootAdmin is inactive needs RootAdmin.")


def parse_user_id(value: str) -> uuid.UUID:
    """Parse a user id from a URL, 404 when it is not a uuid."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UserNotFound() from None


async def create_user(pool: asyncpg.Pool, caller: Caller, body: UserCreate) -> dict[str, Any]:
    """Create a user; 409 when DIR + user id exists (case-insensitive)."""
    check_role_change(caller, set(), set(body.roles))
    values = {
        "name": body.name or body.user_id,
        "roles": sorted(set(body.roles)),
        "attributes": [a.model_dump(by_alias=True) for a in body.attributes],
    }
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.insert(conn, body.user_directory, body.user_id, values, caller.display)
        if row is None:
            raise Conflict("A user with that userDirectory and userId exists.", code="UserExists")
        if body.inactive:
            row = await repo.update(conn, row["id"], {**values, "inactive": True}, caller.display)
        entity = user_entity(row)
        await audit.append(
            conn,
            actor=caller.display,
            action="user.create",
            entity_type="User",
            entity_id=row["id"],
            after=entity,
        )
    return entity


async def update_user(
    pool: asyncpg.Pool, caller: Caller, user_uuid: uuid.UUID, body: UserUpdate
) -> dict[str, Any]:
    """Change a user, refusing a write based on a stale read."""
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.get(conn, user_uuid, for_update=True)
        if row is None:
            raise UserNotFound()
        check_not_modified_since(row["modified_date"], body.modified_date)
        before = user_entity(row)
        roles = sorted(set(body.roles)) if body.roles is not None else list(row["roles"])
        check_role_change(caller, set(row["roles"]), set(roles))
        inactive = body.inactive if body.inactive is not None else row["inactive"]
        check_activity_change(caller, set(row["roles"]), row["inactive"], inactive)
        values = {
            "name": body.name if body.name is not None else row["name"],
            "roles": roles,
            "attributes": [a.model_dump(by_alias=True) for a in body.attributes]
            if body.attributes is not None
            else row["attributes"],
            "inactive": inactive,
        }
        row = await repo.update(conn, user_uuid, values, caller.display)
        entity = user_entity(row)
        await audit.append(
            conn,
            actor=caller.display,
            action="user.update",
            entity_type="User",
            entity_id=user_uuid,
            before=before,
            after=entity,
        )
    return entity


async def delete_user(
    pool: asyncpg.Pool, caller: Caller, user_uuid: uuid.UUID, quarantine_seconds: float
) -> None:
    """Delete a user; allocations it used recently stay quarantined as a deleted user's."""
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.get(conn, user_uuid, for_update=True)
        if row is None:
            raise UserNotFound()
        if ROLE_ROOT in row["roles"] and ROLE_ROOT not in caller.roles:
            raise Forbidden("Only a RootAdmin may delete a RootAdmin.")
        if row["id"] == caller.id:
            raise ApiError("You cannot delete yourself.", code="CannotDeleteSelf", status=400)
        await allocations.remove_for_user(conn, row, quarantine_seconds)
        await repo.delete(conn, user_uuid)
        await audit.append(
            conn,
            actor=caller.display,
            action="user.delete",
            entity_type="User",
            entity_id=user_uuid,
            before=user_entity(row),
        )
