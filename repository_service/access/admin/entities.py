"""The QRS JSON of allocations, access groups, login-access groups and analyzer-time pools,
built from their rows, and the fields a client may filter and order them by."""

from __future__ import annotations

from typing import Any

import asyncpg

from repository_service.access.kinds import KIND, PASSES_PER_TOKEN
from repository_service.qrs.entities import iso_ms

# The QRS JSON of one entity: what collections filter, order and answer.
Entity = dict[str, Any]

_COMMON = ("id", "createdDate", "modifiedDate", "modifiedByUserName")
ALLOCATION_FIELDS = (
    *_COMMON,
    "user",
    "lastUsed",
    "quarantined",
    "quarantineEnd",
    "deletedUserId",
    "deletedUserDirectory",
    "excess",
    "schemaPath",
)
ACCESS_GROUP_FIELDS = (*_COMMON, "name", "rule", "schemaPath")
LOGIN_GROUP_FIELDS = (
    *_COMMON,
    "name",
    "assignedTokens",
    "rule",
    "assignedAccessTypes",
    "usedAccessTypes",
    "remainingAccessTypes",
    "schemaPath",
)
CAPACITY_POOL_FIELDS = (
    *_COMMON,
    "name",
    "assignedMinutes",
    "rule",
    "usedMinutes",
    "remainingMinutes",
    "schemaPath",
)
LOGIN_SCHEMA = "LoginAccessType"
CAPACITY_POOL_SCHEMA = "AnalyzerTimeAccessType"


def _common(row: asyncpg.Record) -> Entity:
    return {
        "id": str(row["id"]),
        "createdDate": iso_ms(row["created_date"]),
        "modifiedDate": iso_ms(row["modified_date"]),
        "modifiedByUserName": row["modified_by"],
    }


def allocation_entity(row: asyncpg.Record, total: int) -> Entity:
    """Return the QRS JSON of an allocation (a row of `get_allocation`) in a pool of `total`."""
    user = None
    if row["user_id"] is not None:
        user = {
            "id": str(row["user_id"]),
            "userDirectory": row["user_directory"],
            "userId": row["user_name_id"],
            "name": row["user_name"],
        }
    seat = row["seat"]
    return {
        **_common(row),
        "user": user,
        "lastUsed": iso_ms(row["last_used"]),
        "quarantined": row["quarantined"],
        "quarantineEnd": iso_ms(row["quarantine_end"]),
        "deletedUserId": row["deleted_user_id"],
        "deletedUserDirectory": row["deleted_user_directory"],
        "excess": seat is not None and seat > total,
        "schemaPath": KIND[row["access_type"]].type_schema,
    }


def access_group_entity(row: asyncpg.Record) -> Entity:
    """Return the QRS JSON of an access group."""
    return {
        **_common(row),
        "name": row["name"],
        "rule": row["rule"],
        "schemaPath": KIND[row["access_type"]].group_schema,
    }


def login_group_entity(row: asyncpg.Record) -> Entity:
    """Return the QRS JSON of a login-access group (a row of `get_login_group`)."""
    assigned = row["assigned_tokens"] * PASSES_PER_TOKEN
    used = int(row["passes_out"])
    return {
        **_common(row),
        "name": row["name"],
        "assignedTokens": row["assigned_tokens"],
        "rule": row["rule"],
        "assignedAccessTypes": assigned,
        "usedAccessTypes": used,
        "remainingAccessTypes": max(0, assigned - used),
        "schemaPath": LOGIN_SCHEMA,
    }


def capacity_pool_entity(row: asyncpg.Record) -> Entity:
    """Return the QRS JSON of an analyzer-time pool (a row of `get_capacity_pool`)."""
    used = int(row["used_minutes"])
    return {
        **_common(row),
        "name": row["name"],
        "assignedMinutes": row["assigned_minutes"],
        "rule": row["rule"],
        "usedMinutes": used,
        "remainingMinutes": max(0, row["assigned_minutes"] - used),
        "schemaPath": CAPACITY_POOL_SCHEMA,
    }
