"""`Idempotency-Key` on POSTs: a replay within 24 h returns the first 2xx answer."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from repository_service.auth import Caller
from repository_service.keys import POOL
from shared.web.errors import ApiError

_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
REPLAY_WINDOW = "24 hours"

Create = Callable[[], Awaitable[tuple[int, object]]]


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
    stored = await pool.fetchrow(
        "SELECT method, path, status, body FROM idempotency_keys WHERE user_id = $1 AND key = $2"
        f" AND created_at > now() - interval '{REPLAY_WINDOW}'",
        caller.id,
        key,
    )
    if stored is not None:
        if (stored["method"], stored["path"]) != (request.method, request.path):
            raise ApiError(
                "This Idempotency-Key was used for another request.",
                status=409,
                code="IdempotencyKeyReused",
            )
        return web.json_response(
            stored["body"], status=stored["status"], headers={"Idempotent-Replayed": "true"}
        )
    status, body = await create()
    if 200 <= status < 300:
        # A concurrent twin may have stored first; the first answer stays the one replayed.
        await pool.execute(
            "INSERT INTO idempotency_keys (key, user_id, method, path, status, body)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (user_id, key) DO UPDATE SET status = EXCLUDED.status,"
            " body = EXCLUDED.body, created_at = now(), method = EXCLUDED.method,"
            " path = EXCLUDED.path"
            " WHERE idempotency_keys.created_at <= now() - interval '24 hours'",
            key,
            caller.id,
            request.method,
            request.path,
            status,
            json.loads(json.dumps(body)),
        )
    return web.json_response(body, status=status)
