"""qsAPI, a client written for the platform's QRS, works unchanged against this service
(SPEC 9.4): HTTPS with a client certificate issued by the site's CA, `X-Qlik-User`, `Xrfkey` in
the query. Every call below is the real `qsAPI.QRS` making its own requests (it is synchronous,
so it runs in a thread while the service answers on this loop).

A call qsAPI makes that this service answers differently from the platform is a bug here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from distutils.version import LooseVersion  # qsAPI compares versions with it
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from qsAPI import QRS

from repository_service.about.views import BUILD_VERSION
from shared.devcerts import DevCertificates, make_dev_certificates
from tests.helpers import XRFKEY, LbsHandle, QrsHandle
from tests.test_access_api import access, add_proxy

T = TypeVar("T")
SERVICE_ACCOUNT = {"userDirectory": "INTERNAL", "userID": "sa_repository"}
EVERYONE = '((user.name like "*"))'


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    """A dev CA with a server and a client certificate, as `licensing up --tls` makes them."""
    return make_dev_certificates(tmp_path_factory.mktemp("certs"))


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a synchronous qsAPI call in a thread, so the service keeps answering."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def port_of(qrs: QrsHandle) -> str:
    # A string: qsAPI replaces an int port by 443 when no certificate is given.
    return qrs.url.rsplit(":", 1)[1]


async def connect(
    qrs: QrsHandle, certs: DevCertificates, user: dict[str, str] = SERVICE_ACCOUNT
) -> QRS:
    """Construct `qsAPI.QRS` as its documentation shows (it reads /qrs/about at once)."""
    client = await call(
        QRS,
        proxy="127.0.0.1",
        port=port_of(qrs),
        certificate=str(certs.client),
        user=user,
        verbosity=logging.WARNING,
    )
    assert isinstance(client, QRS)
    return client


@asynccontextmanager
async def tls_site(
    lbs: LbsHandle, make_qrs: Any, certs: DevCertificates
) -> AsyncIterator[QrsHandle]:
    """A licensed site served over HTTPS, whose client CA is the dev CA."""
    lic = await lbs.create_license(professional=3, analyzer=3, tokens=5)
    async with make_qrs(
        lbs,
        poll_interval_seconds=3600,
        tls_cert_file=certs.server,
        tls_key_file=certs.server_key,
        client_ca_file=certs.root,
        bootstrap_roles={"INTERNAL\\sa_repository": ["RootAdmin"]},
    ) as qrs:
        assert qrs.url.startswith("https://")
        # Bearer callers see no change over HTTPS: the first applier applies the license.
        status, body = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201, body
        await add_proxy(qrs)
        yield qrs


async def test_qrs_connects_and_reads_the_version(
    lbs: LbsHandle, make_qrs: Any, certs: DevCertificates
) -> None:
    async with tls_site(lbs, make_qrs, certs) as qrs:
        client = await connect(qrs, certs)
        assert client.VERSION_SERVER == LooseVersion(BUILD_VERSION)
        about = await call(client.getAbout)
        assert about["schemaPath"] == "About" and about["buildVersion"] == BUILD_VERSION
        assert (await call(client.ping)).status_code == 200
        routes = await call(client.getDescription)
        assert "GET /qrs/license/accesstypeinfo" in routes
        enums = await call(client.getEnum)  # by enum name, each with Values and Usages
        assert any("AccessTypeResult.AccessTypeResultCode" in e["Usages"] for e in enums.values())
        # The certificate's user is the service account, with the roles the store gives it.
        users = await call(client.UserGet)
        assert ("INTERNAL", "sa_repository") in {(u["userDirectory"], u["userId"]) for u in users}


async def test_users_list_count_and_filter(
    lbs: LbsHandle, make_qrs: Any, certs: DevCertificates
) -> None:
    async with tls_site(lbs, make_qrs, certs) as qrs:
        client = await connect(qrs, certs)
        made = await call(
            client.driver.post,
            "/qrs/user",
            data={"userDirectory": "CORP", "userId": "alice", "name": "Alice"},
        )
        assert made.status_code == 201, made.text
        alice = made.json()
        users = await call(client.UserGet)
        assert await call(client.count, "user") == len(users) >= 3
        found = await call(client.UserGet, pFilter="Name eq 'Alice'")
        assert [u["id"] for u in found] == [alice["id"]]
        assert found[0]["userDirectoryConnectorName"] == "CORP"
        assert (found[0]["removedExternally"], found[0]["blacklisted"]) == (False, False)
        assert await call(client.count, "user", f"id eq {alice['id']}") == 1
        corp = [u for u in users if u["userDirectory"] == "CORP"]  # alice and the applier
        assert await call(client.count, "user", "userDirectory eq 'corp'") == len(corp) == 2
        one = await call(client.UserGet, alice["id"])
        assert one["name"] == "Alice"
        assert await call(client.UserDictAttributes) == {u["name"]: u["id"] for u in users}
        # A malformed filter is a 400 with the error envelope, never a 500.
        bad = await call(client.driver.get, "/qrs/user/full", param={"filter": "name eq"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidFilter"


async def test_the_license_and_the_four_access_type_collections(
    lbs: LbsHandle, make_qrs: Any, certs: DevCertificates
) -> None:
    async with tls_site(lbs, make_qrs, certs) as qrs:
        client = await connect(qrs, certs)
        site = (await call(client.driver.get, "/qrs/license")).json()
        assert site["schemaPath"] == "License" and site["isInvalid"] is False
        summary = await call(client.LicenseUsageSummary)
        assert summary["schemaPath"] == "AccessTypesInfo" and summary["totalTokens"] == 5
        created = await call(
            client.driver.post,
            "/qrs/license/loginaccesstype",
            data={"name": "Passes", "assignedTokens": 1},
        )
        assert created.status_code == 201, created.text
        types = QRS.LicenseType
        for kind in (types.ProfessionalAccess, types.AnalyzerAccess, types.UserAccess):
            made = await call(
                client.driver.post,
                f"/qrs/license/{kind}",
                data={"user": {"userDirectory": "CORP", "userId": "alice"}},
            )
            assert made.status_code == 201, made.text
        for kind in (types.ProfessionalAccess, types.AnalyzerAccess, types.UserAccess):
            listed = await call(client.LicenseAccessGet, kind)
            assert len(listed) == 1 and await call(client.LicenseAccessCount, kind) == 1
            assert listed[0]["user"]["userId"] == "alice"
            filtered = await call(
                client.driver.get,
                f"/qrs/license/{kind}/full",
                param={"filter": "user.userId eq 'ALICE'"},
            )
            assert [a["id"] for a in filtered.json()] == [listed[0]["id"]]
        for kind in (types.ProfessionalAccess, types.AnalyzerAccess, types.UserAccess):
            (entity,) = await call(client.LicenseAccessGet, kind)
            deleted = await call(client.LicenseAccessDelete, kind, entity["id"])
            assert deleted.status_code == 204, deleted.text
            assert await call(client.LicenseAccessCount, kind) == 0
        (passes,) = await call(client.LicenseAccessGet, types.LoginAccess)
        assert passes["assignedAccessTypes"] == 10
        assert await call(client.LicenseAccessCount, types.LoginAccess) == 1
        deleted = await call(client.LicenseAccessDelete, types.LoginAccess, passes["id"])
        assert deleted.status_code == 204
        assert await call(client.LicenseAccessGet, types.LoginAccess) == []
        summary = await call(client.LicenseUsageSummary)
        assert summary["availableTokens"] == 5


async def test_an_access_group_and_its_license_rule_the_platforms_way(
    lbs: LbsHandle, make_qrs: Any, certs: DevCertificates
) -> None:
    async with tls_site(lbs, make_qrs, certs) as qrs:
        client = await connect(qrs, certs)
        made = await call(
            client.driver.post, "/qrs/License/ProfessionalAccessGroup", data={"name": "Everyone"}
        )
        assert made.status_code == 201, made.text
        group = made.json()
        assert (await access(qrs, "CORP\\early"))["accessGranted"] is False
        rule = await call(
            client.SystemRulesCreate,
            {
                "name": "Everyone",
                "category": "License",
                "type": "Custom",
                "rule": EVERYONE,
                "resourceFilter": f"License.ProfessionalAccessGroup_{group['id']}",
                "actions": 1,
                "ruleContext": "both",
                "disabled": False,
                "comment": "",
            },
        )
        assert rule["schemaPath"] == "SystemRule" and rule["rule"] == EVERYONE
        license_rules = await call(client.SystemRulesGet, "category eq 'License'")
        assert [r["id"] for r in license_rules] == [rule["id"]]
        assert await call(client.SystemRulesDictAttributes) == {"Everyone": rule["id"]}
        assert await call(client.count, "systemrule", f"id eq {rule['id']}") == 1
        # The rule grants: a user the proxy names for the first time gets professional access.
        decision = await access(qrs, "CORP\\newcomer")
        assert (decision["accessGranted"], decision["accessType"]) == (True, 4)
        audit = await call(
            client.driver.post,
            "/qrs/systemrule/license/audit",
            data={
                "resourceType": "License.ProfessionalAccessGroup",
                "userFilter": "userId eq 'newcomer'",
            },
        )
        assert audit.status_code == 200, audit.text
        (application,) = audit.json()["ruleApplication"]
        assert application["ruleID"] == rule["id"] and application["allowed"] is True


async def test_x_qlik_user_names_the_caller_only_with_a_verified_certificate(
    lbs: LbsHandle, make_qrs: Any, certs: DevCertificates, tmp_path: Path
) -> None:
    async with tls_site(lbs, make_qrs, certs) as qrs:
        # The certificate's user is whoever X-Qlik-User names, with that user's roles.
        nobody = await connect(qrs, certs, {"userDirectory": "CORP", "userID": "nobody"})
        answer = await call(nobody.driver.get, "/qrs/user/full")
        assert answer.status_code == 403
        # Without a client certificate the header means nothing (the server's certificate
        # verifies against the dev CA for 127.0.0.1).
        headers = {
            "X-Qlik-Xrfkey": XRFKEY,
            "X-Qlik-User": "UserDirectory=INTERNAL; UserId=sa_repository",
        }
        async with qrs.session.get(
            f"{qrs.url}/qrs/about", params={"xrfkey": XRFKEY}, headers=headers
        ) as resp:
            assert resp.status == 401
        # With a certificate and no X-Qlik-User the caller is the service account.
        answer = await call(
            requests.get,
            f"{qrs.url}/qrs/user/full",
            params={"Xrfkey": XRFKEY, "filter": "userDirectory eq 'INTERNAL'"},
            headers={"X-Qlik-Xrfkey": XRFKEY},
            cert=(str(certs.client), str(certs.client_key)),
            verify=str(certs.root),
        )
        assert answer.status_code == 200, answer.text
        assert "sa_repository" in {u["userId"] for u in answer.json()}
        # A malformed X-Qlik-User with a certificate is refused, not read as someone.
        answer = await call(
            requests.get,
            f"{qrs.url}/qrs/about",
            params={"Xrfkey": XRFKEY},
            headers={"X-Qlik-Xrfkey": XRFKEY, "X-Qlik-User": "sa_repository"},
            cert=(str(certs.client), str(certs.client_key)),
            verify=str(certs.root),
        )
        assert answer.status_code == 401
        # A name given twice is refused too: which user was meant is not for the service to
        # guess (a proxy reading the first while the service read the last acts for another).
        for header in (
            "UserDirectory=CORP; UserId=nobody; UserId=admin",
            "UserDirectory=CORP; userid=nobody; UserId=nobody",
            "UserDirectory=CORP; UserDirectory=INTERNAL; UserId=sa_repository",
        ):
            answer = await call(
                requests.get,
                f"{qrs.url}/qrs/about",
                params={"Xrfkey": XRFKEY},
                headers={"X-Qlik-Xrfkey": XRFKEY, "X-Qlik-User": header},
                cert=(str(certs.client), str(certs.client_key)),
                verify=str(certs.root),
            )
            assert answer.status_code == 401, (header, answer.text)
            assert answer.json()["error"]["code"] == "Unauthorized"
        # A certificate from another CA does not even connect.
        stranger = make_dev_certificates(tmp_path / "stranger")
        with pytest.raises(requests.exceptions.ConnectionError):
            await call(
                requests.get,
                f"{qrs.url}/qrs/about",
                params={"Xrfkey": XRFKEY},
                headers={"X-Qlik-Xrfkey": XRFKEY},
                cert=(str(stranger.client), str(stranger.client_key)),
                verify=str(certs.root),
            )
        async with qrs.pool().acquire() as conn:
            names = {r["user_id"] for r in await conn.fetch("SELECT user_id FROM users")}
        assert "nobody" in names
