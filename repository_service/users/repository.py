"""Users in and out of Postgres; every function takes the connection (or pool) to use."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg

from shared.db import Db, one
from shared.sql import Queries

q = Queries(Path(__file__).with_name("queries.sql"))


async def get_or_create(
    db: Db, directory: str, user_id: str, *, name: str = "", by: str = "system"
) -> asyncpg.Record:
    """Return the user with this identity, creating it if it does not exist yet."""
    row: asyncpg.Record | None = await db.fetchrow(q.get_by_identity, directory, user_id)
    if row is not None:
        return row
    row = await db.fetchrow(
        q.insert_user_if_new, uuid.uuid4(), directory, user_id, name or user_id, [], [], by
    )
    if row is None:  # created concurrently by another request
        row = await db.fetchrow(q.get_by_identity, directory, user_id)
    assert row is not None
    return row


async def insert(
    db: Db, directory: str, user_id: str, values: dict[str, Any], by: str
) -> asyncpg.Record | None:
    """Insert a user; None when the identity exists already."""
    row: asyncpg.Record | None = await db.fetchrow(
        q.insert_user_if_new,
        uuid.uuid4(),
        directory,
        user_id,
        values["name"],
        values["roles"],
        values["attributes"],
        by,
    )
    return row


async def get(db: Db, user_uuid: uuid.UUID, *, for_update: bool = False) -> asyncpg.Record | None:
    """Return one user by id."""
    row: asyncpg.Record | None = await db.fetchrow(
        q.get_by_id_for_update if for_update else q.get_by_id, user_uuid
    )
    return row


async def get_by_identity(db: Db, directory: str, user_id: str) -> asyncpg.Record | None:
    """Return one user by DIR + user id (case-insensitive)."""
    row: asyncpg.Record | None = await db.fetchrow(q.get_by_identity, directory, user_id)
    return row


async def list_all(db: Db) -> list[asyncpg.Record]:
    """Return every user."""
    return list(await db.fetch(q.list_users))


async def update(db: Db, user_uuid: uuid.UUID, values: dict[str, Any], by: str) -> asyncpg.Record:
    """Write the editable fields of a user."""
    return await one(
        db,
        q.update_user,
        user_uuid,
        values["name"],
        values["roles"],
        values["attributes"],
        values["inactive"],
        by,
    )


async def delete(db: Db, user_uuid: uuid.UUID) -> asyncpg.Record | None:
    """Delete a user and return the deleted row."""
    row: asyncpg.Record | None = await db.fetchrow(q.delete_user, user_uuid)
    return row


async def grant_roles(db: Db, user_uuid: uuid.UUID, roles: list[str], by: str) -> asyncpg.Record:
    """Add roles to a user (keeping the ones held)."""
    return await one(db, q.grant_roles, user_uuid, roles, by)
