"""Every endpoint documents its success answer: a response model, or `NoBody` for a 204.

An endpoint without `response=` is documented as "any JSON": clients learn nothing from it and
the fuzz test's `response_schema_conformance` cannot hold the answer to anything. These tests
name every such endpoint of both services, and read the live `/openapi.json` to see that each
2xx answer with a body is described by a schema that says something.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import ClientSession, web
from cryptography.fernet import Fernet
from pydantic import BaseModel

from license_backend.app import create_app as create_lbs_app
from license_backend.settings import LbsSettings
from repository_service.app import create_app as create_qrs_app
from repository_service.settings import QrsSettings
from shared.web.endpoints import ENDPOINTS_KEY, Endpoint, NoBody
from tests.helpers import LbsHandle

# The route tables, from the app factories (which touch no network until started).
TABLES = {
    "license_backend": create_lbs_app(
        LbsSettings(key_encryption_key=Fernet.generate_key().decode())
    )[ENDPOINTS_KEY],
    "repository_service": create_qrs_app(QrsSettings(), run_poller=False)[ENDPOINTS_KEY],
}
# Keys of a schema that describe nothing about the value.
_ANNOTATIONS = {"title", "description", "default", "examples"}


def _label(ep: Endpoint) -> str:
    return f"{ep.method} {ep.path}"


@pytest.mark.parametrize("service", sorted(TABLES))
def test_every_endpoint_has_a_response_model(service: str) -> None:
    missing = [_label(ep) for ep in TABLES[service] if ep.response is None]
    assert missing == [], f"{service}: no response model (nor NoBody for a 204): {missing}"
    for ep in TABLES[service]:
        if ep.status == 204:
            assert ep.response is NoBody, _label(ep)
        else:
            assert isinstance(ep.response, type) and issubclass(ep.response, BaseModel), ep


async def _handler(request: web.Request) -> web.Response:
    return web.Response(status=204)


class _Answer(BaseModel):
    value: int


def test_no_body_is_declared_for_a_204_and_only_there() -> None:
    with pytest.raises(ValueError, match="NoBody"):
        Endpoint("DELETE", "/x/{id}", _handler, "Delete an x", status=204)
    with pytest.raises(ValueError, match="NoBody"):
        Endpoint("GET", "/x", _handler, "Read an x", response=NoBody)
    with pytest.raises(ValueError, match="other_successes"):
        Endpoint("POST", "/x", _handler, "Post an x", response=_Answer, errors=(200, 409))
    Endpoint("DELETE", "/x/{id}", _handler, "Delete an x", response=NoBody, status=204)


def _undescribed(doc: dict[str, Any]) -> list[str]:
    """Return `METHOD path status media` of each 2xx answer whose schema says nothing."""
    schemas = doc["components"]["schemas"]
    found = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if not status.startswith("2") or status == "204":
                    continue
                for media, content in answer.get("content", {"": {}}).items():
                    schema = content.get("schema", {})
                    if set(schema) == {"$ref"}:
                        schema = schemas[schema["$ref"].removeprefix("#/components/schemas/")]
                    if not set(schema) - _ANNOTATIONS:
                        found.append(f"{method.upper()} {path} {status} {media}")
    return found


async def _document(session: ClientSession, base_url: str) -> dict[str, Any]:
    async with session.get(f"{base_url}/openapi.json") as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def test_live_documents_describe_every_success_answer(lbs: LbsHandle, make_qrs: Any) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        for session, url, app in ((lbs.session, lbs.url, lbs.app), (qrs.session, qrs.url, qrs.app)):
            doc = await _document(session, url)
            assert _undescribed(doc) == []
            for ep in app[ENDPOINTS_KEY]:
                answer = doc["paths"][ep.path][ep.method.lower()]["responses"][str(ep.status)]
                if ep.response is NoBody:
                    assert "content" not in answer, _label(ep)
                    continue
                assert ep.response is not None
                schema = answer["content"][ep.response_media_type]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{ep.response.__name__}"}, ep
