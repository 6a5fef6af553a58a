"""`/qrs/license/accessrequest`: the proxy asks for a session's access, reports its activity
and ends it."""

from __future__ import annotations

import pydantic_core
from aiohttp import web

from repository_service.access.decision.models import AccessRequest, AccessTypeResult, SessionRef
from repository_service.auth import PROXY_ROLES, require_roles
from repository_service.keys import ENGINE
from shared.web.endpoints import Endpoint, NoBody
from shared.web.requests import read_json, validate

TAGS = ("access",)


async def _body(request: web.Request) -> object:
    raw = await read_json(request)
    return raw if isinstance(raw, dict) else {"_": raw}  # lets validation name what is wrong


def _answer(body: dict[str, object]) -> web.Response:
    # pydantic's encoder: the proxy calls for every session, and it is the fastest at hand.
    return web.Response(body=pydantic_core.to_json(body), content_type="application/json")


async def access_request(request: web.Request) -> web.Response:
    """Decide the access of a new user session (called by the proxy)."""
    require_roles(request, PROXY_ROLES)
    body = validate(AccessRequest, await _body(request))
    decision = await request.app[ENGINE].request(body.user_directory, body.user_id, body.session_id)
    return _answer(decision.answer())


async def session_activity(request: web.Request) -> web.Response:
    """Record activity in a session (capacity units, login passes)."""
    require_roles(request, PROXY_ROLES)
    body = validate(SessionRef, await _body(request))
    decision = await request.app[ENGINE].activity(body.session_id)
    return _answer(decision.answer())


async def session_end(request: web.Request) -> web.Response:
    """End a session."""
    require_roles(request, PROXY_ROLES)
    body = validate(SessionRef, await _body(request))
    await request.app[ENGINE].end(body.session_id)
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/qrs/license/accessrequest",
        access_request,
        "Decide a session's access",
        body=AccessRequest,
        response=AccessTypeResult,
        auth="caller",
        errors=(403,),
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/qrs/license/accessrequest/activity",
        session_activity,
        "Report session activity",
        body=SessionRef,
        response=AccessTypeResult,
        auth="caller",
        errors=(403, 404),
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/qrs/license/accessrequest/end",
        session_end,
        "End a session",
        body=SessionRef,
        response=NoBody,
        status=204,
        auth="caller",
        errors=(403, 404),
        tags=TAGS,
    ),
]
