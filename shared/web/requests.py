"""Reading JSON bodies and query strings into pydantic models, with clear 4xx errors."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.web.errors import ApiError, ValidationFailed

M = TypeVar("M", bound=BaseModel)

# A bearer credential is visible ASCII (RFC 6750 b64token and more); anything else, such as
# bytes that are not UTF-8 and arrive as surrogates, is no credential at all.
_CREDENTIAL = re.compile(r"[\x21-\x7e]+")


def bearer_token(request: web.Request) -> str | None:
    """Return the request's bearer token; None when absent or not visible ASCII text."""
    return bearer_credential(request.headers.get("Authorization", ""))


def bearer_credential(authorization: str) -> str | None:
    """Return the bearer token of an Authorization header value; None when it is not one of
    visible ASCII text."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip(" \t")
    if scheme.lower() != "bearer" or not _CREDENTIAL.fullmatch(token):
        return None
    return token


class AmbiguousParameter(ApiError):
    code, message = "AmbiguousParameter", "A query parameter is given twice with different values."


def query_param(request: web.Request, name: str) -> str | None:
    """Return query parameter `name` matched in any case (`Filter`, `filter`); None when absent.

    Clients written for the platform spell names as they like, and a name that only worked in
    one spelling would be ignored silently in the others (a `Filter=` that filters nothing).
    Two different values under any spellings are refused (400): which was meant is unknown."""
    wanted = name.lower()
    values = {v for k, v in request.query.items() if k.lower() == wanted}
    if len(values) > 1:
        raise AmbiguousParameter(details={"parameter": name})
    return values.pop() if values else None


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Return one entry per bad field: where it is and what is wrong."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


async def read_json(request: web.Request) -> Any:
    """Return the parsed JSON body, refusing other content types and malformed JSON."""
    if request.content_type != "application/json":
        raise ApiError(
            "Content-Type must be application/json.", status=415, code="UnsupportedMediaType"
        )
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(
            "The body is not valid JSON.", code="MalformedJson", details=str(exc)
        ) from None
    reject_nul(data)
    return data


def reject_nul(value: Any) -> None:
    """Refuse NUL characters anywhere in a value: Postgres text cannot store them."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationFailed("Text may not contain NUL characters.")
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_nul(key)
            reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            reject_nul(item)


async def read_body(request: web.Request, model: type[M]) -> M:
    """Return the JSON body validated as `model`."""
    data = await read_json(request)
    return validate(model, data)


def validate(model: type[M], data: Any) -> M:
    """Validate `data` as `model`, turning errors into a 400 with per-field details."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(details=validation_details(exc)) from None


def read_query(request: web.Request, model: type[M]) -> M:
    """Return the query string validated as `model`."""
    query = dict(request.query)
    reject_nul(query)
    return validate(model, query)
