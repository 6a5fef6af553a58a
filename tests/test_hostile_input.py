"""No input breaks a site (SPEC 9.3): dates at the edges of the calendar end to end, bytes that
are not ASCII in credentials, claims of the wrong JSON type, and any text in a query or header."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import pytest
from yarl import URL

from license_backend.settings import LbsSettings
from shared import jose
from tests.conftest import ADMIN_TOKEN, DatabaseFactory
from tests.helpers import XRFKEY, LbsHandle, QrsHandle, serve_lbs, site_headers

ROOT = "CORP\\admin"


async def raw_request(base_url: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request as raw bytes (clients refuse to send some of them) and return the status
    and the body."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"Host: test\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def forge(claims: dict[str, Any], key: Any, *, typ: str, kid: str | None = None) -> str:
    """Sign `claims` as they are: PyJWT refuses to sign some wrong types it is meant to refuse."""
    header = {"alg": "EdDSA", "typ": typ, "kid": kid or jose.kid_for(key.public_key())}
    head, body = (
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (header, claims)
    )
    signature = key.sign(f"{head}.{body}".encode())
    return f"{head}.{body}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


async def must_answer(qrs: QrsHandle, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    status, body = await qrs.call(method, path, **kw)
    assert status < 500, (method, path, status, body)
    return status, body


async def poll(qrs: QrsHandle) -> None:
    poller = qrs.poller()
    runs = poller.runs
    poller.trigger()
    await poller.wait_for_runs(runs + 1)


async def exercise_site(qrs: QrsHandle, *, control: str | None = None) -> None:
    """Call the site's main endpoints; each must answer as documented, none with a 5xx.
    `control` is the control number of a LEF site, None on a signed-key site."""
    signed_key = control is None
    status, entity = await must_answer(qrs, "GET", "/qrs/license")
    assert status == 200
    assert entity["isExpired"] is False and entity["isInvalid"] is False, entity
    status, overview = await must_answer(qrs, "GET", "/qrs/license/accesstypeoverview")
    assert status == 200 and overview["professionalAccess"]["total"] == 10, overview
    status, allocated = await must_answer(
        qrs,
        "POST",
        "/qrs/license/professionalaccesstype",
        json={"user": {"userDirectory": "CORP", "userId": "far"}},
    )
    assert status == 201, allocated
    for path in ("professionalaccesstype", "professionalaccesstype/full", "analyzeraccesstype"):
        status, items = await must_answer(qrs, "GET", f"/qrs/license/{path}")
        assert status == 200 and isinstance(items, list), items
    status, decision = await must_answer(
        qrs,
        "POST",
        "/qrs/license/accessrequest",
        json={"userDirectory": "CORP", "userId": "far", "sessionId": str(uuid.uuid4())},
    )
    assert status == 200 and decision["accessGranted"] is True, decision
    status, sync = await must_answer(qrs, "GET", "/qrs/license/syncstatus")
    assert status == 200 and sync["consecutiveFailures"] == 0, sync
    body: dict[str, Any] = {"id": entity["id"], "modifiedDate": entity["modifiedDate"]}
    if signed_key:
        body["key"] = entity["key"]
    status, edited = await must_answer(
        qrs,
        "PUT",
        f"/qrs/license/{entity['id']}",
        json={**body, "name": "Renamed"},
        params=None if control is None else {"control": control},
    )
    assert status == 200, edited
    status, refreshed = await must_answer(qrs, "POST", "/qrs/license/refresh")
    assert status == (202 if signed_key else 409), refreshed
    async with qrs.session.get(f"{qrs.url}/health/ready") as resp:
        assert resp.status == 200
    status, _ = await must_answer(qrs, "DELETE", f"/qrs/license/{entity['id']}")
    assert status == 204
    status, gone = await must_answer(qrs, "GET", "/qrs/license")
    assert status == 404, gone


@pytest.mark.parametrize(
    "validity",
    [
        {"validTo": "9999-12-31"},
        {"validFrom": "0001-01-01", "validTo": "9999-12-31"},
        {"validFrom": "0001-01-01", "validTo": "0001-01-02"},
    ],
    ids=["to-9999", "from-0001-to-9999", "from-0001-to-0001"],
)
async def test_signed_key_site_keeps_answering_at_calendar_edges(
    lbs: LbsHandle, make_qrs: Any, validity: dict[str, str]
) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
        status, _ = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        await lbs.patch(lic["number"], validity)
        await poll(qrs)  # the definition with the edge dates arrives
        status, definition = await must_answer(qrs, "GET", "/qrs/license/definition")
        assert status == 200
        assert definition["claims"]["license"]["validTo"] == validity["validTo"]
        if validity["validTo"] != "9999-12-31":
            # Long expired: the site says so and grants nothing, but keeps answering.
            status, entity = await must_answer(qrs, "GET", "/qrs/license")
            assert entity["isExpired"] is True and "0001-01-02" in entity["expiredReason"]
            status, decision = await must_answer(
                qrs,
                "POST",
                "/qrs/license/accessrequest",
                json={"userDirectory": "CORP", "userId": "x", "sessionId": "s"},
            )
            assert decision["accessGranted"] is False and decision["accessTypeResultCode"] == 2
            status, body = await must_answer(qrs, "POST", "/qrs/license/refresh")
            assert status == 409 and body["error"]["code"] == "LicenseExpired"
            status, _ = await must_answer(qrs, "DELETE", f"/qrs/license/{entity['id']}")
            assert status == 204
            return
        assert "Valid To: 9999-12-31" in (await qrs.call("GET", "/qrs/license"))[1]["keyDetails"]
        await exercise_site(qrs)


async def test_lef_site_keeps_answering_with_a_timelimit_of_9999(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    lic = await lbs.create_license(validFrom="0001-01-01", validTo="9999-12-31")
    async with make_qrs(lbs, poll_interval_seconds=3600, lef_refresh_seconds=3600) as qrs:
        status, entity = await qrs.call(
            "POST",
            "/qrs/license",
            params={"control": lic["control"]},
            json={"serial": lic["number"], "name": "N", "organization": "O"},
        )
        assert status == 201, entity
        assert "TIMELIMIT;;;9999-12-31" in entity["lef"]
        await poll(qrs)  # a re-download of the same LEF
        await exercise_site(qrs, control=lic["control"])


async def test_a_huge_definition_ttl_is_capped_at_the_end_of_the_calendar(
    databases: DatabaseFactory, lbs_settings: LbsSettings, make_qrs: Any
) -> None:
    settings = lbs_settings.model_copy(
        update={"database_url": await databases.clone("lbs"), "definition_ttl_seconds": 10**18}
    )
    async with serve_lbs(settings, ADMIN_TOKEN) as lbs:
        lic = await lbs.create_license(validTo="9999-12-31")
        async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
            status, entity = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
            assert status == 201, entity
            status, definition = await must_answer(qrs, "GET", "/qrs/license/definition")
            assert definition["claims"]["exp"] == 253_402_300_799
            assert definition["expiresAt"] == "9999-12-31T23:59:59.000Z"
            await poll(qrs)
            await exercise_site(qrs)


# ---- the LEF server: any control number, and no oracle for serials ---------------------------


# Percent-encoded as sent: é1234, U+FFFF, fullwidth digits, a lone surrogate's UTF-8 form,
# a byte that is no UTF-8, a literal `%ff`, and too long.
CONTROLS = ["%C3%A91234", "%EF%BF%BF", "%EF%BC%91%EF%BC%92%EF%BC%93", "%ED%A0%80", "%FF"]
CONTROLS += ["%25ff", "x" * 16]


@pytest.mark.parametrize("control", CONTROLS)
async def test_any_control_number_is_not_found_like_an_unknown_serial(
    lbs: LbsHandle, control: str
) -> None:
    lic = await lbs.create_license()
    unknown = "9" * 16 if lic["number"] != "9" * 16 else "8" * 16
    answers = []
    for serial in (lic["number"], unknown):
        url = URL(f"{lbs.url}/v1/lef?serial={serial}&control={control}", encoded=True)
        async with lbs.session.get(url) as resp:
            answers.append((resp.status, await resp.json()))
    assert answers[0] == answers[1]
    status, body = answers[0]
    assert status == 404 and body["error"]["code"] == "LefNotFound", body
    query = {"serial": lic["number"], "control": lic["control"]}
    async with lbs.session.get(f"{lbs.url}/v1/lef", params=query) as resp:
        assert resp.status == 200  # the right control number still works


# ---- credentials that are not ASCII ----------------------------------------------------------

NOT_ASCII = [b"\xff\xfe\xfd", b"caf\xc3\xa9", b"\xed\xa0\x80", b"tok\x01en"]


@pytest.mark.parametrize("value", NOT_ASCII, ids=["not-utf8", "utf8", "surrogate", "control"])
async def test_an_authorization_header_that_is_not_ascii_is_refused(
    lbs: LbsHandle, make_qrs: Any, value: bytes
) -> None:
    async with make_qrs(lbs, run_poller=False) as qrs:
        for base, target in (
            (lbs.url, b"/v1/admin/licenses"),
            (lbs.url, b"/v1/definitions/current"),
            (qrs.url, f"/qrs/license?xrfkey={XRFKEY}".encode()),
        ):
            head = b"GET " + target + b" HTTP/1.1\r\nAuthorization: Bearer " + value + b"\r\n"
            if base == qrs.url:
                head += f"X-Qlik-Xrfkey: {XRFKEY}\r\n".encode()
            status, body = await raw_request(base, head)
            if status == 400 and value == b"tok\x01en":
                continue  # the HTTP parser refuses a control character before any handler
            assert status == 401, (target, status, body)


# ---- claims of the wrong JSON type -----------------------------------------------------------

WRONG_CLAIMS: list[dict[str, Any]] = [
    {"iss": ["test-issuer"]},
    {"iss": {"test-issuer": True}},
    {"iss": 7},
    {"iss": None},
    {"aud": 1},
    {"aud": [1]},
    {"aud": {"repository-service": 1}},
    {"exp": "9999999999"},
    {"exp": True},
    {"exp": 10**20},
    {"exp": 10**400},
    {"exp": float("nan")},
    {"exp": None},
    {"nbf": "0"},
    {"nbf": [0]},
    {"iat": {"t": 0}},
    {"iat": -1},
    {"userDirectory": ["CORP"]},
    {"userDirectory": {"a": 1}},
    {"userId": 42},
    {"userId": None},
    {"jti": 5},
    {"sub": ["x"]},
]


async def test_caller_tokens_with_claims_of_wrong_types_are_refused(
    make_qrs: Any, issuer_key: Any
) -> None:
    async with make_qrs(None, run_poller=False) as qrs:
        for changed in WRONG_CLAIMS:
            now = int(time.time())
            claims = {
                "iss": "test-issuer",
                "aud": "repository-service",
                "iat": now,
                "exp": now + 600,
                "userDirectory": "CORP",
                "userId": "alice",
                **changed,
            }
            token = forge(claims, issuer_key, typ=jose.CALLER_TYP)
            headers = {"Authorization": f"Bearer {token}"}
            status, body = await qrs.call("GET", "/qrs/license", headers=headers)
            assert status == 401, (changed, body)
            assert body["error"]["code"] == "Unauthorized", (changed, body)
        assert await qrs.pool().fetchval("SELECT count(*) FROM users WHERE user_id = 'alice'") == 0


@pytest.mark.parametrize(
    "changed",
    [{"jti": 1}, {"jti": ["x"]}, {"license": 1234}, {"iss": ["http://lbs.test"]}, {"iat": "1"}],
    ids=repr,
)
async def test_license_keys_with_claims_of_wrong_types_are_refused(
    lbs: LbsHandle, changed: dict[str, Any]
) -> None:
    lic = await lbs.create_license()
    claims = {
        "iss": "http://lbs.test",
        "jti": str(uuid.uuid4()),
        "license": lic["number"],
        "iat": int(time.time()),
        **changed,
    }
    kid, key = lbs.app_keyring().current_key()
    token = forge(claims, key, typ=jose.LICENSE_KEY_TYP, kid=kid)
    async with lbs.session.get(
        f"{lbs.url}/v1/definitions/current", headers=site_headers(token)
    ) as resp:
        body = await resp.json()
        assert resp.status == 401, body
        assert body["error"]["code"] == "LicenseKeyInvalid"


@pytest.mark.parametrize(
    "changed",
    [
        {"ver": "3"},
        {"ver": True},
        {"exp": "soon"},
        {"exp": 10**12},
        {"iat": 10**13},
        {"sub": 1234567890123456},
        {"license": {"validTo": 20991231}},
        {"license": {"validTo": "31/12/2099"}},
        {"license": {"allotments": [{"name": "professional", "units": "10"}]}},
        {"license": {"allotments": {"professional": 10}}},
        {"license": {"overage": {"professional": "yes"}}},
        {"license": {"owner": ["Ada"]}},
        {"license": {"blacklisted": "false"}},
        {"license": "all of it"},
    ],
    ids=repr,
)
async def test_definitions_with_claims_of_wrong_types_are_refused(
    lbs: LbsHandle, make_qrs: Any, changed: dict[str, Any]
) -> None:
    """The backend serves a malformed definition signed by its own key: the site refuses it
    on apply with 400 ApplyFailed, and on a poll keeps the one it has."""
    lic = await lbs.create_license()
    good = await lbs.create_license()
    kid, key = lbs.app_keyring().current_key()
    pool = lbs.app_pool()

    async def serve_forged(number: str) -> None:
        token = await pool.fetchval(
            "SELECT token FROM definitions WHERE license_number = $1", number
        )
        claims = jose.verify(token, lbs.app_keyring().public_keys(), typ=jose.DEFINITION_TYP)
        forged = {**claims, **changed}
        if isinstance(changed.get("license"), dict):
            forged["license"] = {**claims["license"], **changed["license"]}
        forged["jti"] = str(uuid.uuid4())  # a new ETag, so a poll fetches it
        await pool.execute(
            "UPDATE definitions SET token = $2, jti = $3 WHERE license_number = $1",
            number,
            forge(forged, key, typ=jose.DEFINITION_TYP, kid=kid),
            uuid.UUID(forged["jti"]),
        )
        await lbs.sites_changed()

    async with make_qrs(lbs, poll_interval_seconds=3600) as qrs:
        # Signing the first definition of `lic` happens on the first fetch.
        async with lbs.session.get(
            f"{lbs.url}/v1/definitions/current", headers=site_headers(lic["key"])
        ) as resp:
            assert resp.status == 200
        await serve_forged(lic["number"])
        status, body = await must_answer(qrs, "POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 400 and body["error"]["code"] == "ApplyFailed", body
        status, entity = await must_answer(qrs, "POST", "/qrs/license", json={"key": good["key"]})
        assert status == 201, entity
        await serve_forged(good["number"])
        await poll(qrs)
        status, sync = await must_answer(qrs, "GET", "/qrs/license/syncstatus")
        assert sync["consecutiveFailures"] == 1 and sync["definitionVersion"] == 1, sync
        status, after = await must_answer(qrs, "GET", "/qrs/license")
        assert after["isInvalid"] is False and after["updated"] == entity["updated"]


@pytest.mark.parametrize(
    "changed",
    [{"jti": 1}, {"license": 1234}, {"license": ["1"]}, {"iss": ["http://lbs.test"]}, {"iat": "1"}],
    ids=repr,
)
async def test_applying_a_key_with_claims_of_wrong_types_is_apply_failed(
    lbs: LbsHandle, make_qrs: Any, changed: dict[str, Any]
) -> None:
    lic = await lbs.create_license()
    claims = {
        "iss": "http://lbs.test",
        "jti": str(uuid.uuid4()),
        "license": lic["number"],
        "iat": int(time.time()),
        **changed,
    }
    kid, key = lbs.app_keyring().current_key()
    async with make_qrs(lbs, run_poller=False) as qrs:
        token = forge(claims, key, typ=jose.LICENSE_KEY_TYP, kid=kid)
        status, body = await must_answer(qrs, "POST", "/qrs/license", json={"key": token})
        assert status == 400 and body["error"]["code"] == "ApplyFailed", body
        assert await qrs.pool().fetchval("SELECT count(*) FROM site_license") == 0


# ---- any text in a query parameter or a header ----------------------------------------------

HOSTILE_TEXT = ["é", "\uffff", "\u202e", "%", "%00", "%ff%fe", "\\", "'", "x" * 3000, "\ud800"]


async def test_any_text_in_a_query_or_path_gets_a_4xx_envelope(
    lbs: LbsHandle, make_qrs: Any
) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs, run_poller=False) as qrs:
        status, _ = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        for text in HOSTILE_TEXT:
            for path, params in (
                ("/qrs/license", {"filter": text}),
                ("/qrs/license/professionalaccesstype", {"filter": text, "orderby": text}),
                ("/qrs/user", {"filter": f"userId eq '{text}'"}),
                ("/qrs/license/download", {"serial": text, "control": text, "user": text}),
                (f"/qrs/user/{text}", {}),
                (f"/qrs/license/professionalaccesstype/{text}", {"privileges": text}),
            ):
                status, body = await must_answer(qrs, "GET", path, params=params)
                if status >= 400:
                    assert set(body) == {"error"}, (path, body)
            for path, params in (
                ("/v1/admin/licenses", {"limit": text, "after": text}),
                (f"/v1/admin/licenses/{text}", {}),
                ("/v1/lef", {"serial": text, "control": text, "user": text, "org": text}),
            ):
                async with lbs.session.get(
                    lbs.url + path, params=params, headers=lbs.admin_headers()
                ) as resp:
                    assert resp.status < 500, (path, resp.status, await resp.text())
                    if resp.status >= 400:
                        assert set(await resp.json()) == {"error"}


HOSTILE_HEADER_VALUES = [b"\xff\xfe", b"caf\xc3\xa9", b"\xed\xa0\x80", b"a" * 8000, b'"*", W/"x"']


@pytest.mark.parametrize("value", HOSTILE_HEADER_VALUES, ids=lambda v: repr(v[:10]))
async def test_hostile_header_values_never_get_a_5xx(
    lbs: LbsHandle, make_qrs: Any, value: bytes
) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs, run_poller=False) as qrs:
        token = qrs.token(ROOT)
        status, _ = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        site = await qrs.pool().fetchval("SELECT installation_id FROM site_identity")
        for name in (b"X-Request-Id", b"If-None-Match"):
            head = (
                b"GET /v1/definitions/current HTTP/1.1\r\n"
                + f"Authorization: Bearer {lic['key']}\r\n".encode()
                + f"X-Installation-Id: {site}\r\n".encode()
                + name
                + b": "
                + value
                + b"\r\n"
            )
            status, body = await raw_request(lbs.url, head)
            assert status in (200, 304), (name, status, body)
        for name in (b"X-Request-Id", b"X-Qlik-Xrfkey", b"Idempotency-Key"):
            head = (
                f"POST /qrs/user?xrfkey={XRFKEY} HTTP/1.1\r\n".encode()
                + f"Authorization: Bearer {token}\r\n".encode()
                + (b"" if name == b"X-Qlik-Xrfkey" else f"X-Qlik-Xrfkey: {XRFKEY}\r\n".encode())
                + name
                + b": "
                + value
                + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            )
            status, body = await raw_request(qrs.url, head, b"{}")
            assert status < 500, (name, status, body)
