"""Quota groups: login-access groups hold tokens of the license (as seats of the token pool),
analyzer-time pools hold minutes a month of its analyzer-time allotment. Both are written the
same way; `Quota` says what differs."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from repository_service.access import seats
from repository_service.access.admin import repository as repo
from repository_service.access.admin.entities import (
    CAPACITY_POOL_SCHEMA,
    LOGIN_SCHEMA,
    Entity,
    capacity_pool_entity,
    login_group_entity,
)
from repository_service.access.state import SiteState
from shared.db import Conn
from shared.web.errors import ApiError


class InsufficientTokens(ApiError):
    status, code, message = 400, "InsufficientTokens", "Not enough tokens are available."


class InsufficientMinutes(ApiError):
    status, code, message = 400, "InsufficientMinutes", "Not enough analyzer minutes are available."


# Inside the write's transaction: hold `wanted` instead of `current` for a group, or refuse.
Reserve = Callable[[Conn, uuid.UUID, int, int, SiteState], Awaitable[None]]


@dataclass(frozen=True)
class Quota:
    """One kind of quota group: its table, names, entity and what holding an amount takes."""

    table: repo.QuotaTable
    action: str  # of the audit entries of its creation and change
    schema: str
    column: str  # of the amount
    entity: Callable[[asyncpg.Record], Entity]
    reserve: Reserve
    # Whether a deleted group's seats are freed (tokens are seats; minutes are not).
    holds_seats: bool


async def _reserve_tokens(
    conn: Conn, group_id: uuid.UUID, current: int, wanted: int, state: SiteState
) -> None:
    """Move a login group's token seats from `current` to `wanted`."""
    total_tokens = state.totals.get("token", 0)
    if wanted > current:
        try:
            await seats.take(conn, "token", group_id, total_tokens, wanted - current)
        except seats.NoSeat:
            raise InsufficientTokens(details={"requested": wanted - current}) from None
    elif wanted < current:
        await seats.release_some(conn, "token", group_id, current - wanted)
        await seats.settle(conn, "token", total_tokens)


async def _reserve_minutes(
    conn: Conn, pool_id: uuid.UUID, current: int, wanted: int, state: SiteState
) -> None:
    """Refuse a pool whose minutes, with the other pools', would exceed the allotment."""
    others = await repo.minutes_of_other_pools(conn, pool_id)
    allotment = state.analyzer_minutes
    if others + wanted > allotment:
        raise InsufficientMinutes(details={"available": max(0, allotment - others)})


LOGIN_GROUPS = Quota(
    repo.LOGIN_GROUPS,
    "logingroup",
    LOGIN_SCHEMA,
    "assigned_tokens",
    login_group_entity,
    _reserve_tokens,
    holds_seats=True,
)
CAPACITY_POOLS = Quota(
    repo.CAPACITY_POOLS,
    "capacitypool",
    CAPACITY_POOL_SCHEMA,
    "assigned_minutes",
    capacity_pool_entity,
    _reserve_minutes,
    holds_seats=False,
)


async def release(conn: Conn, quota: Quota, group_id: uuid.UUID, state: SiteState) -> None:
    """Free what a deleted group held."""
    if quota.holds_seats:
        await seats.release(conn, [group_id])
        await seats.settle(conn, "token", state.totals.get("token", 0))
