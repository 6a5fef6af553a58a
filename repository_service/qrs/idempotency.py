"""`Idempotency-Key` on POSTs: a replay within 24 h returns the first 2xx answer.

The key is claimed (a row without a status) before the request runs, so two attempts with
one key never both run, whichever replicas they reach: the second is answered 409
`IdempotencyKeyInProgress` while the first runs, and gets the first answer replayed after.
A failed first attempt gives its claim back, so the corrected request can run (SPEC 25).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from repository_service.auth import Caller
from repository_service.keys import POOL
from shared.web.errors import ApiError

_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
REPLAY_WINDOW = "24 hours"
# A claim whose request never finished (its process died) may be taken over after this.
ABANDONED_AFTER = "5 minutes"

Create = Callable[[], Awaitable[tuple[int, object]]]

_CLAIM = f"""
INSERT INTO idempotency_keys (key, user_id, method, path, status, body)
VALUES ($1, $2, $3, $4, NULL, NULL)
ON CONFLICT (user_id, key) DO UPDATE SET
    method = EXCLUDED.method, path = EXCLUDED.path, status = NULL, body = NULL,
    created_at = now()
WHERE idempotency_keys.created_at <= now() - interval '{REPLAY_WINDOW}'
   OR (idempotency_keys.status IS NULL
       AND idempotency_keys.created_at <= now() - interval '{ABANDONED_AFTER}')
RETURNING true
"""


class KeyInProgress(ApiError):
    status, code = 409, "IdempotencyKeyInProgress"
    message = "A request with this Idempotency-Key is still running; retry shortly."


def _path_of(request: web.Request) -> str:
    """Return the path a key is bound to; paths below /qrs/ match in any case (SPEC 9.4)."""
    return request.path.lower()


async def idempotent(request: web.Request, caller: Caller, create: Create) -> web.Response:
    """Run `create` once per key and caller; replay the stored answer for the same key."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        status, body = await create()
        return web.json_response(body, status=status)
    if not _KEY.match(key):
        raise ApiError(
            "Idempotency-Key must be 1-200 visible ASCII characters.", code="InvalidIdempotencyKey"
        )
    pool = request.app[POOL]
    claimed = await pool.fetchval(_CLAIM, key, caller.id, request.method, _path_of(request))
    if not claimed:
        return await _replay(pool, request, caller, key)
    try:
        status, body = await create()
    except BaseException:
        await _release(pool, caller, key)
        raise
    if not 200 <= status < 300:
        await _release(pool, caller, key)
        return web.json_response(body, status=status)
    await pool.execute(
        "UPDATE idempotency_keys SET status = $3, body = $4 WHERE user_id = $1 AND key = $2",
        caller.id,
        key,
        status,
        json.loads(json.dumps(body)),
    )
    return web.json_response(body, status=status)


async def _replay(
    pool: asyncpg.Pool, request: web.Request, caller: Caller, key: str
) -> web.Response:
    stored = await pool.fetchrow(
        "SELECT method, path, status, body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        caller.id,
        key,
    )
    if stored is None:  # the first attempt failed and gave its claim back just now
        raise KeyInProgress()
    if (stored["method"], stored["path"]) != (request.method, _path_of(request)):
        raise ApiError(
            "This Idempotency-Key was used for another request.",
            status=409,
            code="IdempotencyKeyReused",
        )
    if stored["status"] is None:
        raise KeyInProgress()
    return web.json_response(
        stored["body"], status=stored["status"], headers={"Idempotent-Replayed": "true"}
    )


async def _release(pool: asyncpg.Pool, caller: Caller, key: str) -> None:
    """Give a claim back after a failed attempt; shielded, as the attempt may be cancelled."""
    await asyncio.shield(
        pool.execute(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND status IS NULL",
            caller.id,
            key,
        )
    )
