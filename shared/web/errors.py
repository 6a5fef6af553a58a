"""Domain errors with a code, and the one middleware that turns every error into the envelope."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from shared.db import database_unavailable

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class ApiError(Exception):
    """An error with an HTTP status, a PascalCase code and a human message."""

    status = 400
    code = "BadRequest"
    message = "The request is not valid."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)


class BadRequest(ApiError):
    status, code = 400, "BadRequest"


class ValidationFailed(ApiError):
    status, code, message = 400, "ValidationFailed", "The request body or query is not valid."


class Unauthorized(ApiError):
    status, code, message = 401, "Unauthorized", "Missing or invalid credentials."

    def __init__(self, message: str | None = None, *, code: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="licensing"'})
        super().__init__(message, code=code, **kw)


class Forbidden(ApiError):
    status, code, message = 403, "Forbidden", "You are not allowed to do this."


class NotFound(ApiError):
    status, code, message = 404, "NotFound", "Not found."


class Conflict(ApiError):
    status, code, message = 409, "Conflict", "The resource was changed by someone else."


class UpstreamUnavailable(ApiError):
    status, code, message = 502, "UpstreamUnavailable", "An upstream service is unavailable."


class DatabaseUnavailable(ApiError):
    status, code, message = 503, "DatabaseUnavailable", "The database is unavailable."


class DatabaseBusy(ApiError):
    """Postgres ended the work again and again to break deadlocks with other work."""

    status, code, message = 503, "DatabaseBusy", "The database is busy; try again."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


_HTTP_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    411: "LengthRequired",
    413: "PayloadTooLarge",
    414: "UriTooLong",
    415: "UnsupportedMediaType",
    429: "RateLimited",
    431: "HeadersTooLarge",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """Return the error envelope of SPEC 1.4."""
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    """Return a JSON error response in the envelope."""
    return web.json_response(error_body(code, message, details), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors, aiohttp's HTTP errors and anything unexpected to the envelope."""
    try:
        if "\x00" in request.path or "%00" in request.raw_path:
            raise ApiError("The URL may not contain NUL characters.", code="InvalidUrl")
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "HttpError")
        message = exc.reason
        if exc.status == 413:
            message = f"Request body larger than {MAX_BODY_BYTES} bytes."
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return error_response(exc.status, code, message, None, headers)
    except Exception as exc:
        if database_unavailable(exc):
            log.warning("database_unavailable", exc_info=True)
            err = DatabaseUnavailable()
            return error_response(err.status, err.code, err.message, headers={"Retry-After": "1"})
        log.exception("unhandled_error", path=request.path)
        return error_response(500, "InternalError", "An unexpected error occurred.")
