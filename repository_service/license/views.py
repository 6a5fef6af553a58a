"""`/qrs/license`: the Site license panel's API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from repository_service.auth import (
    CALLERS,
    READ_ROLES,
    ROLE_ROOT,
    WRITE_ROLES,
    Caller,
    caller_of,
    require_roles,
)
from repository_service.keys import LBS, POLLER, SETTINGS, SITE
from repository_service.license.entity import visible_to
from repository_service.license.errors import NotLicensed
from repository_service.license.models import (
    ControlQuery,
    DownloadQuery,
    KeyEditLease,
    LefDownload,
    LicenseBody,
    LicenseDefinition,
    LicenseOut,
    LicensePut,
    RefreshAnswer,
    SyncStatus,
)
from repository_service.qrs.entities import check_same_id, iso_ms
from repository_service.qrs.idempotency import idempotent
from shared.web.endpoints import Endpoint, NoBody
from shared.web.requests import read_json, read_query, validate

TAGS = ("license",)


def _license_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise NotLicensed() from None


async def _body_dict(request: web.Request, model: type[LicenseBody]) -> dict[str, Any]:
    raw = await read_json(request)
    body = validate(model, raw)
    return body.model_dump(exclude_unset=True)


async def _may_apply(request: web.Request) -> Caller:
    """Return the caller if it may apply a license: a write role, or anyone before the
    site's first license (SPEC 4.1); else raise 403 before any work is done."""
    caller = caller_of(request)
    if not caller.has_any(WRITE_ROLES) and (await request.app[SITE].sync_row())["ever_licensed"]:
        require_roles(request, WRITE_ROLES)
    return caller


async def get_license(request: web.Request) -> web.Response:
    """Return the site license (the LEF and key only to roles that may change it)."""
    caller = require_roles(request, READ_ROLES)
    site = request.app[SITE]
    row = await site.row()
    if row is None:
        raise NotLicensed()
    entity = site.entities.entity(row, await site.sync_row(), datetime.now(UTC))
    return web.json_response(visible_to(entity, caller))


async def download_lef(request: web.Request) -> web.Response:
    """ "Get LEF and preview": fetch the LEF from the LEF server."""
    await _may_apply(request)
    query = read_query(request, DownloadQuery)
    text = await request.app[SITE].resolver.download_lef(
        query.serial, query.control, query.user, query.org
    )
    return web.json_response(text)


async def apply_license(request: web.Request) -> web.Response:
    """Apply the site's license: a signed key, or serial + control + LEF."""
    caller = await _may_apply(request)
    body = await _body_dict(request, LicenseBody)
    control = read_query(request, ControlQuery).control

    async def create() -> tuple[int, object]:
        return 201, await request.app[SITE].apply(caller, body, control)

    response = await idempotent(request, caller, create)
    request.app[CALLERS].forget()  # the first applier may have just become RootAdmin
    return response


async def put_license(request: web.Request) -> web.Response:
    """Change the license (optimistic concurrency on modifiedDate)."""
    caller = require_roles(request, WRITE_ROLES)
    raw = await read_json(request)
    check_same_id(request.match_info["id"], raw if isinstance(raw, dict) else {})
    body = validate(LicensePut, raw)
    fields = body.model_dump(exclude_unset=True, exclude={"id", "modified_date"})
    control = read_query(request, ControlQuery).control
    entity = await request.app[SITE].put(
        caller, _license_id(request), fields, body.modified_date, control
    )
    return web.json_response(entity)


async def delete_license(request: web.Request) -> web.Response:
    """Remove the license (RootAdmin)."""
    caller = require_roles(request, frozenset({ROLE_ROOT}))
    await request.app[SITE].delete(caller, _license_id(request))
    return web.Response(status=204)


async def take_key_edit(request: web.Request) -> web.Response:
    """Start editing the signed key (a 15-minute lease)."""
    caller = require_roles(request, WRITE_ROLES)
    return web.json_response(await request.app[SITE].lease.take(caller))


async def end_key_edit(request: web.Request) -> web.Response:
    """Stop editing the signed key."""
    caller = require_roles(request, WRITE_ROLES)
    await request.app[SITE].lease.drop(caller)
    return web.Response(status=204)


async def refresh(request: web.Request) -> web.Response:
    """ "Refresh license definition": the LBS re-derives it; `updated` moves at the next poll.

    Requests that arrive while one is pending in this process are answered from it."""
    caller = require_roles(request, WRITE_ROLES)
    app = request.app
    status, body = await app[SITE].refreshes.run(lambda: _refresh(app, caller))
    return web.json_response(body, status=status)


async def _refresh(app: web.Application, caller: Caller) -> tuple[int, dict[str, Any]]:
    site = app[SITE]
    requested = await site.refresh.request(caller)
    if app[SETTINGS].refresh_triggers_poll:
        await app[POLLER].poll_once()
        row = await site.row()
        if row is None:
            raise NotLicensed()
        return 200, site.entities.entity(row, await site.sync_row(), datetime.now(UTC))
    sync = await site.sync_row()
    answer = RefreshAnswer(
        requestedAt=iso_ms(requested) or "", nextPollAt=iso_ms(sync["next_poll_at"])
    )
    return 202, answer.dump()


async def sync_status(request: web.Request) -> web.Response:
    """Return the poller's shared state."""
    require_roles(request, READ_ROLES)
    site = request.app[SITE]
    lic, sync = await site.current(), await site.sync_row()
    installation = request.app[LBS].installation_id
    status = SyncStatus(
        mode=lic.mode if lic else "none",
        installationId=str(installation) if installation else None,
        leader=sync["leader"],
        lastAttemptAt=iso_ms(sync["last_attempt_at"]),
        lastSuccessAt=iso_ms(sync["last_success_at"]),
        lastError=sync["last_error"],
        consecutiveFailures=sync["consecutive_failures"],
        nextPollAt=iso_ms(sync["next_poll_at"]),
        definitionVersion=lic.definition_ver if lic else None,
        definitionExpiresAt=iso_ms(lic.definition_exp) if lic else None,
        refreshRequestedAt=iso_ms(sync["refresh_requested_at"]),
    )
    return web.json_response(status.dump())


async def definition(request: web.Request) -> web.Response:
    """Return the verified definition claims, version and expiry."""
    require_roles(request, READ_ROLES)
    row = await request.app[SITE].row()
    if row is None or row["definition_claims"] is None:
        raise NotLicensed("The site has no signed license definition.")
    return web.json_response(
        {
            "version": row["definition_ver"],
            "expiresAt": iso_ms(row["definition_exp"]),
            "claims": row["definition_claims"],
        }
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/qrs/license",
        get_license,
        "The site license",
        response=LicenseOut,
        auth="caller",
        errors=(403, 404),
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/qrs/license/download",
        download_lef,
        "Get LEF and preview",
        query=DownloadQuery,
        response=LefDownload,
        auth="caller",
        errors=(400, 403, 502),
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/qrs/license",
        apply_license,
        "Apply the site license",
        body=LicenseBody,
        query=ControlQuery,
        response=LicenseOut,
        status=201,
        auth="caller",
        errors=(403, 409, 502),
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/qrs/license/syncstatus",
        sync_status,
        "Poller state",
        response=SyncStatus,
        auth="caller",
        errors=(403,),
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/qrs/license/definition",
        definition,
        "The verified definition",
        response=LicenseDefinition,
        auth="caller",
        errors=(403, 404),
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/qrs/license/keyedit",
        take_key_edit,
        "Start editing the signed key",
        response=KeyEditLease,
        auth="caller",
        errors=(403, 409),
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/qrs/license/keyedit",
        end_key_edit,
        "Stop editing the signed key",
        response=NoBody,
        status=204,
        auth="caller",
        errors=(403,),
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/qrs/license/refresh",
        refresh,
        "Refresh license definition",
        response=RefreshAnswer,
        status=202,
        auth="caller",
        errors=(403, 404, 409, 502),
        other_successes=((200, LicenseOut),),
        tags=TAGS,
    ),
    Endpoint(
        "PUT",
        "/qrs/license/{id}",
        put_license,
        "Change the site license",
        body=LicensePut,
        query=ControlQuery,
        response=LicenseOut,
        auth="caller",
        errors=(403, 404, 409, 502),
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/qrs/license/{id}",
        delete_license,
        "Remove the site license",
        response=NoBody,
        status=204,
        auth="caller",
        errors=(403, 404),
        tags=TAGS,
    ),
]
