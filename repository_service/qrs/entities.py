"""QRS entity conventions: timestamps, collections with filter/orderby, concurrency checks."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from repository_service.qrs.filters import apply_orderby, parse_filter
from repository_service.qrs.privileges import with_privileges
from shared.web.endpoints import endpoint_path
from shared.web.errors import ApiError, Conflict
from shared.web.requests import query_param

# The new modifiedDate of a write: now, but at least 1 ms after the old one, because clients
# send back what they read at millisecond precision (optimistic concurrency).
NEXT_MODIFIED = (
    "greatest(clock_timestamp(), date_trunc('milliseconds', modified_date)"
    " + interval '1 millisecond')"
)


def iso_ms(value: datetime | None) -> str | None:
    """Format a timestamp as ISO 8601 UTC with milliseconds and `Z`."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_iso(value: Any, field: str = "modifiedDate") -> datetime:
    """Parse an ISO 8601 timestamp from a request body, or raise a 400."""
    if not isinstance(value, str):
        raise ApiError(f"{field} is required.", code="ValidationFailed")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(f"{field} is not an ISO 8601 timestamp.", code="ValidationFailed") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def check_not_modified_since(stored: datetime, given: datetime) -> None:
    """Refuse a write based on an older read (optimistic concurrency)."""
    # A body may carry a timestamp without a zone; entities are shown in UTC, so read it as
    # UTC (comparing naive with aware datetimes would raise, a 500 for bad input).
    if given.tzinfo is None:
        given = given.replace(tzinfo=UTC)
    # Entities are shown with millisecond precision; compare at that precision. A date other
    # than the stored one (a later one too) was not read from this entity.
    if stored.replace(microsecond=stored.microsecond // 1000 * 1000) != given:
        raise Conflict("The entity was modified since it was read; read it again.")


def check_same_id(url_id: str, body: dict[str, Any]) -> None:
    """Refuse a body whose id differs from the one in the URL."""
    if str(body.get("id", "")).lower() != url_id.lower():
        raise ApiError("The id in the body must match the id in the URL.", code="IdMismatch")


def collection_answer(
    request: web.Request,
    entities: Sequence[dict[str, Any]],
    fields: Collection[str],
    *,
    condensed: Sequence[str] = (),
) -> web.Response:
    """Answer a collection GET: `/count`, `/full` or the condensed list, with filter/orderby."""
    items = _filtered(request, entities, fields)
    # The route matched, not the path as typed: `/qrs/User/Count` is the `/count` route.
    route = _route_of(request)
    if route.endswith("/count"):
        return web.json_response({"value": len(items)})
    items = with_privileges(request, items)
    if not route.endswith("/full") and condensed:
        items = [_condensed(e, condensed) for e in items]
    return web.json_response(items)


def _condensed(entity: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    slim = {k: entity.get(k) for k in keys}
    if "privileges" in entity:
        slim["privileges"] = entity["privileges"]
    return slim


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return endpoint_path(resource.canonical) if resource is not None else request.path.lower()


def _filtered(
    request: web.Request, entities: Sequence[dict[str, Any]], fields: Collection[str]
) -> list[dict[str, Any]]:
    predicate = parse_filter(query_param(request, "filter"), fields)
    kept = [e for e in entities if predicate(e)]
    return apply_orderby(kept, query_param(request, "orderby"), fields)
