"""Roles granted at start from `QRS_BOOTSTRAP_ROLES`."""

from __future__ import annotations

import asyncpg
import structlog

from repository_service.audit import log as audit
from repository_service.auth import KNOWN_ROLES
from repository_service.users import repository as users

log = structlog.get_logger(__name__)


def split_identity(identity: str) -> tuple[str, str]:
    """Split `DIR\\user` into its directory and user id."""
    directory, sep, user_id = identity.partition("\\")
    if not sep or not directory or not user_id:
        raise ValueError(f"not a DIR\\user identity: {identity!r}")
    return directory, user_id


async def apply_bootstrap_roles(pool: asyncpg.Pool, grants: dict[str, list[str]]) -> None:
    """Create the named users if needed and grant them the listed roles."""
    for identity, roles in grants.items():
        directory, user_id = split_identity(identity)
        unknown = set(roles) - KNOWN_ROLES
        if unknown:
            raise ValueError(f"unknown roles for {identity}: {sorted(unknown)}")
        async with pool.acquire() as conn, conn.transaction():
            row = await users.get_or_create(conn, directory, user_id, by="bootstrap")
            if not set(roles) <= set(row["roles"]):
                granted = await users.grant_roles(conn, row["id"], sorted(roles), "bootstrap")
                await audit.append(
                    conn,
                    actor="bootstrap",
                    action="user.roles_granted",
                    entity_type="User",
                    entity_id=row["id"],
                    before={"roles": list(row["roles"])},
                    after={"roles": list(granted["roles"]), "reason": "QRS_BOOTSTRAP_ROLES"},
                )
                log.info("bootstrap_roles_granted", user=identity, roles=sorted(roles))
