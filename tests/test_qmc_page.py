"""The Site license admin page (SPEC 4.9, 8.27) driven in a real headless Chromium.

Needs the `playwright` Python package and a Chromium: Debian's (`chromium` on PATH) or
Playwright's own, whichever `tests/chromium.py` finds (`scripts/test` installs one where none
is). Without either these tests FAIL, they do not skip. Set QMC_SCREENSHOT=/tmp/qmc.png to save
a picture of the panel.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from repository_service.license.errors import (
    APPLIED,
    APPLY_FAILED,
    LEF_FAILED,
    LEF_RETRIEVED,
    KeyEditInProgress,
)
from tests import chromium as chromium_binary
from tests.helpers import LbsHandle, QrsHandle

try:
    from playwright.async_api import Browser, Page, Request, async_playwright, expect
except ImportError:  # reported by the `browser` fixture as a failure, not a skip
    async_playwright = None  # type: ignore[assignment]

ROOT = "CORP\\admin"
DEPLOYER = "CORP\\deployer"
AUDITOR = "CORP\\auditor"
FIRST = "CORP\\first"
ROLES = {ROOT: ["RootAdmin"], DEPLOYER: ["DeploymentAdmin"], AUDITOR: ["AuditAdmin"]}
ASK_TOKEN = "Enter a bearer token to manage the site license."
XRFKEY = re.compile(r"^[0-9A-Za-z]{16}$")


def spaced(number: str) -> str:
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


class Panel:
    """The page, with what the tests do on it; collects script errors and CSP reports."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.api_calls: list[Request] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("request", self._request)

    def _console(self, msg: Any) -> None:
        # A 4xx answer the page handles is logged by Chromium as "Failed to load resource".
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.problems.append(f"console: {msg.text}")

    def _request(self, request: Request) -> None:
        if "/qrs/" in request.url:
            self.api_calls.append(request)

    async def open(self, qrs: QrsHandle, user: str = ROOT) -> None:
        """Open the panel with the user's token in the URL fragment, and wait for the read."""
        await self.page.goto(f"{qrs.url}/qmc/license#token={qrs.token(user)}")
        await self.settled()

    async def settled(self) -> None:
        """Wait until the license has been read and no action runs."""
        await self.page.wait_for_selector("body[data-license]:not([data-busy])", state="attached")

    async def press(self, button: str) -> tuple[str, str]:
        """Click a button, wait for its action, return (message, detail)."""
        await self.page.click(f"#{button}")
        await self.settled()
        return await self.text("message"), await self.text("message-detail")

    async def text(self, element: str) -> str:
        return (await self.page.text_content(f"#{element}")) or ""

    async def value(self, element: str) -> str:
        return await self.page.input_value(f"#{element}")

    async def attr(self, element: str, name: str) -> str | None:
        return await self.page.get_attribute(f"#{element}", name)

    async def mode(self) -> str | None:
        return await self.page.get_attribute("body", "data-license")

    async def overview(self) -> dict[str, dict[str, str]]:
        """Return the overview table as {row: {column: text}}."""
        table: dict[str, dict[str, str]] = await self.page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('#overview tbody tr')]
                .map((tr) => [tr.id.slice(3), Object.fromEntries([...tr.querySelectorAll('td')]
                    .map((td) => [td.dataset.col, td.textContent])) ]))"""
        )
        return table


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module (each test gets a fresh context)."""
    if async_playwright is None:
        pytest.fail(
            "The admin-page tests need the playwright package: pip install -e '.[test]'",
            pytrace=False,
        )
    expect.set_options(timeout=15_000)
    async with async_playwright() as pw:
        try:
            binary = chromium_binary.choose(Path(pw.chromium.executable_path))
        except ValueError as exc:
            pytest.fail(f"The admin-page tests need a Chromium: {exc}", pytrace=False)
        if binary is None:
            pytest.fail(
                f"The admin-page tests need a Chromium; scripts/test installs one or says how:"
                f" {chromium_binary.WHAT_TO_INSTALL}",
                pytrace=False,
            )
        # Playwright launches it with a fresh temporary profile (user-data-dir) of its own.
        chromium = await pw.chromium.launch(executable_path=str(binary), args=chromium_binary.ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def panel(browser: Browser) -> AsyncIterator[Panel]:
    """A page in a fresh browser context; the test fails on any script error or CSP report."""
    context = await browser.new_context(viewport={"width": 1360, "height": 1000})
    context.set_default_timeout(15_000)
    panel = Panel(await context.new_page())
    try:
        yield panel
    finally:
        await context.close()
    assert panel.problems == []


async def wait_for_lease_count(qrs: QrsHandle, expected: int) -> None:
    """Wait until the key-edit lease table holds `expected` rows."""
    for _ in range(200):
        if await lease_count(qrs) == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the key-edit lease count never became {expected}")


async def lease_count(qrs: QrsHandle) -> int:
    return int(await qrs.pool().fetchval("SELECT count(*) FROM key_edit_lease"))


# ---- the page itself --------------------------------------------------------------------


async def test_page_is_served_without_auth_with_a_strict_policy(
    lbs: LbsHandle, make_qrs: Any, http: aiohttp.ClientSession
) -> None:
    async with make_qrs(lbs) as qrs:
        async with http.get(f"{qrs.url}/qmc/license") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            html = await resp.text()
            headers = resp.headers
        assert "Site license" in html
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff"
        directives = headers["Content-Security-Policy"].split(";")
        policy = {name: value for name, _, value in (d.strip().partition(" ") for d in directives)}
        assert policy["default-src"] == "'none'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        for directive in ("script-src", "style-src"):
            assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]+=*'", policy[directive]), directive
        assert not re.search(r"\b(src|href|url\()", html)  # no external assets

        async with http.get(f"{qrs.url}/openapi.json") as resp:
            doc = await resp.json()
        page_op = doc["paths"]["/qmc/license"]["get"]
        assert "text/html" in page_op["responses"]["200"]["content"]
        assert "security" not in page_op


async def test_token_from_the_fragment_or_the_field(
    lbs: LbsHandle, make_qrs: Any, panel: Panel
) -> None:
    async with make_qrs(lbs, bootstrap_roles=ROLES) as qrs:
        page = panel.page
        token = qrs.token(ROOT)
        await panel.open(qrs, ROOT)
        assert await panel.mode() == "none"
        assert page.url == f"{qrs.url}/qmc/license"  # the token left the address bar
        assert await page.evaluate("sessionStorage.getItem('qmc.token')") == token
        assert await panel.text("signed-in-as") == ROOT
        assert await panel.text("license-mode") == "No license"
        # Every API call: the bearer token and one xrfkey, the same in query and header.
        assert {c.url.split("?")[0].removeprefix(qrs.url) for c in panel.api_calls} == {
            "/qrs/license",
            "/qrs/license/accesstypeoverview",
        }
        keys = set()
        for call in panel.api_calls:
            headers = await call.all_headers()
            query_key = re.search(r"[?&]xrfkey=([^&]*)", call.url)
            assert query_key and XRFKEY.match(query_key.group(1))
            assert headers["x-qlik-xrfkey"] == query_key.group(1)
            assert headers["authorization"] == f"Bearer {token}"
            keys.add(query_key.group(1))
        assert len(keys) == 1
        # Every field has its label.
        unlabeled = await page.evaluate(
            "[...document.querySelectorAll('input, textarea')]"
            ".filter((e) => e.labels.length === 0).map((e) => e.id)"
        )
        assert unlabeled == []

        await page.reload()  # the token stays for the tab's session
        await panel.settled()
        assert await panel.mode() == "none"

        await page.click("#token-forget")
        assert await page.evaluate("sessionStorage.getItem('qmc.token')") is None
        assert await panel.text("message") == ASK_TOKEN
        await page.click("#apply")
        assert await panel.text("message") == "Enter a bearer token first."

        await page.fill("#token", qrs.token(AUDITOR))
        await page.click("#token-save")
        await panel.settled()
        assert await panel.mode() == "none"
        assert await panel.text("signed-in-as") == AUDITOR
        assert await panel.value("token") == ""

        await page.fill("#token", "not-a-token")
        await page.click("#token-save")
        await panel.settled()
        assert await panel.mode() == "error"
        assert await panel.text("message") == "The bearer token is not valid."


async def test_a_link_never_silently_replaces_the_token_held(
    lbs: LbsHandle, make_qrs: Any, panel: Panel
) -> None:
    async with make_qrs(lbs, bootstrap_roles=ROLES) as qrs:
        page = panel.page
        held, offered = qrs.token(ROOT), qrs.token(AUDITOR)
        dialogs: list[str] = []
        answer = {"accept": False}

        async def on_dialog(dialog: Any) -> None:
            dialogs.append(f"{dialog.type}: {dialog.message}")
            await (dialog.accept() if answer["accept"] else dialog.dismiss())

        page.on("dialog", on_dialog)
        # No token held yet: the link's is taken without asking.
        await page.goto(f"{qrs.url}/qmc/license#token={held}")
        await panel.settled()
        assert dialogs == []
        stored = "sessionStorage.getItem('qmc.token')"
        assert await page.evaluate(stored) == held

        # A link with the same token: nothing to ask.
        await page.goto(f"{qrs.url}/qmc/license#token={held}")
        await expect(page).to_have_url(f"{qrs.url}/qmc/license")
        assert dialogs == []

        # A link with another token, followed in the open page: dismissed, A stays.
        await page.goto(f"{qrs.url}/qmc/license#token={offered}")
        async with asyncio.timeout(15):
            while not dialogs:  # the page asks on its hashchange event
                await asyncio.sleep(0.05)
        assert page.url == f"{qrs.url}/qmc/license"  # the fragment is gone
        assert len(dialogs) == 1
        assert dialogs[0].startswith("confirm: This link carries a different bearer token")
        assert AUDITOR in dialogs[0] and ROOT in dialogs[0]
        assert await page.evaluate(stored) == held
        assert await panel.text("signed-in-as") == ROOT
        await page.reload()
        await panel.settled()
        assert await panel.text("signed-in-as") == ROOT

        # The same link opened afresh, accepted this time: the page uses B.
        answer["accept"] = True
        await page.goto("about:blank")
        await page.goto(f"{qrs.url}/qmc/license#token={offered}")
        await panel.settled()
        assert len(dialogs) == 2 and dialogs[1] == dialogs[0]
        assert await page.evaluate(stored) == offered
        assert await panel.text("signed-in-as") == AUDITOR
        assert page.url == f"{qrs.url}/qmc/license"


# ---- the messages of the admin guide ----------------------------------------------------


async def test_get_lef_and_apply_on_a_lef_site(lbs: LbsHandle, make_qrs: Any, panel: Panel) -> None:
    lic = await lbs.create_license(professional=3, analyzer=4, tokens=5, analyzerMinutes=0)
    wrong = f"{(int(lic['control']) + 1) % 100000:05d}"
    async with make_qrs(lbs, bootstrap_roles=ROLES) as qrs:
        page = panel.page
        await panel.open(qrs)
        await page.fill("#owner-name", "Lena Owner")
        await page.fill("#owner-org", "Lef AB")
        await page.fill("#serial", spaced(lic["number"]))

        await page.fill("#control", wrong)
        message, detail = await panel.press("get-lef")
        assert message == LEF_FAILED
        assert await panel.attr("message", "data-kind") == "error"
        assert detail  # the reason, in smaller text
        assert await panel.value("lef") == ""

        await page.fill("#control", lic["control"])
        message, _ = await panel.press("get-lef")
        assert message == LEF_RETRIEVED
        assert await panel.attr("message", "data-kind") == "ok"
        lef = await panel.value("lef")
        assert lef.startswith(lic["number"])

        await page.fill("#owner-name", "   ")  # all four values are mandatory
        message, detail = await panel.press("apply")
        assert message == APPLY_FAILED and detail
        assert await panel.mode() == "none"
        status, _ = await qrs.call("GET", "/qrs/license")
        assert status == 404

        await page.fill("#owner-name", "Lena Owner")
        message, _ = await panel.press("apply")
        assert message == APPLIED
        assert await panel.mode() == "lef"
        status, entity = await qrs.call("GET", "/qrs/license")
        assert status == 200
        assert (entity["name"], entity["organization"]) == ("Lena Owner", "Lef AB")
        assert entity["lef"] == lef and entity["serial"] == spaced(lic["number"])
        assert await panel.text("license-mode") == "Serial and control number (LEF)"
        assert await panel.value("control") == ""  # never shown again
        table = await panel.overview()
        assert table["professional"]["total"] == "3" and table["professional"]["available"] == "3"
        assert table["analyzer"]["total"] == "4"
        assert table["tokens"]["total"] == "5" and table["tokens"]["available"] == "5"
        assert await panel.attr("refresh", "disabled") is not None  # signed-key sites only

        # A change: PUT with the control number again, optimistic concurrency handled.
        await page.fill("#owner-org", "Lef Group AB")
        message, detail = await panel.press("apply")
        assert message == APPLY_FAILED and "control" in detail.lower()
        await page.fill("#control", lic["control"])
        message, _ = await panel.press("apply")
        assert message == APPLIED
        _, changed = await qrs.call("GET", "/qrs/license")
        assert changed["organization"] == "Lef Group AB"
        assert changed["modifiedDate"] > entity["modifiedDate"]


async def test_signed_key_apply_shows_the_definition_and_the_overview(
    lbs: LbsHandle, make_qrs: Any, panel: Panel
) -> None:
    owner = '<b id="injected">Ada</b> & Co'
    lic = await lbs.create_license(
        owner=owner, professional=7, analyzer=11, tokens=5, analyzerMinutes=600
    )
    bigger = await lbs.create_license(professional=9)
    async with make_qrs(lbs) as qrs:  # no roles yet: the first applier becomes RootAdmin
        page = panel.page
        await panel.open(qrs, FIRST)
        assert await panel.mode() == "unreadable"
        assert await panel.attr("message", "data-kind") == "info"

        await page.fill("#signed-key", "garbage")
        message, detail = await panel.press("apply")
        assert message == APPLY_FAILED
        status, body = await qrs.call("POST", "/qrs/license", json={"key": "garbage"}, user=FIRST)
        assert detail == body["error"]["details"]["reason"]

        await page.fill("#signed-key", lic["key"])
        message, _ = await panel.press("apply")
        assert message == APPLIED
        assert await panel.mode() == "signedKey"
        _, entity = await qrs.call("GET", "/qrs/license", user=FIRST)
        assert entity["updated"]
        assert await panel.attr("updated", "datetime") == entity["updated"]
        assert await panel.text("key-details") == entity["keyDetails"]
        assert "Allotment professional:7;" in (await panel.text("key-details")).split("\n")
        assert await panel.value("owner-name") == owner  # text, never markup
        assert await page.locator("#injected").count() == 0
        assert await panel.value("serial") == spaced(lic["number"])
        assert await panel.value("signed-key") == ""
        assert await panel.text("license-status") == "Valid"

        # The overview shows the license's totals, and follows allocations.
        status, _ = await qrs.call(
            "POST",
            "/qrs/license/professionalaccesstype",
            json={"user": {"userDirectory": "CORP", "userId": "pat"}},
            user=FIRST,
        )
        assert status == 201
        await page.reload()
        await panel.settled()
        table = await panel.overview()
        assert table["professional"] == {
            "total": "7",
            "allocated": "1",
            "used": "0",
            "quarantined": "0",
            "unavailable": "-",
            "available": "6",
        }
        assert table["analyzer"]["total"] == "11" and table["analyzer"]["available"] == "11"
        assert table["tokens"]["total"] == "5" and table["tokens"]["available"] == "5"
        assert table["user"]["allocated"] == "0" and table["login"]["allocated"] == "0"
        assert table["analyzerTime"]["allocated"] == "0"
        _, ov = await qrs.call("GET", "/qrs/license/accesstypeoverview", user=FIRST)
        assert table["analyzer"]["used"] == str(ov["analyzerAccess"]["used"])

        # Replacing the key (now RootAdmin): the edit takes the lease, Apply releases it.
        await page.fill("#signed-key", bigger["key"])
        await expect(page.locator("#key-lease")).to_have_attribute("data-state", "held")
        assert await lease_count(qrs) == 1
        message, _ = await panel.press("apply")
        assert message == APPLIED
        assert "Allotment professional:9;" in await panel.text("key-details")
        assert (await panel.overview())["professional"]["total"] == "9"
        assert await panel.attr("key-lease", "data-state") == "free"
        assert await lease_count(qrs) == 0

        shot = os.environ.get("QMC_SCREENSHOT")
        if shot:
            await page.screenshot(path=shot)


async def test_key_edit_lease_blocks_refresh(lbs: LbsHandle, make_qrs: Any, panel: Panel) -> None:
    lic = await lbs.create_license()
    async with make_qrs(lbs, poll_interval_seconds=3600, bootstrap_roles=ROLES) as qrs:
        status, _ = await qrs.call("POST", "/qrs/license", json={"key": lic["key"]})
        assert status == 201
        page = panel.page
        await panel.open(qrs)
        assert await panel.mode() == "signedKey"

        # Refresh on a signed-key site: 202, with when it was asked and the next poll.
        message, _ = await panel.press("refresh")
        assert message == "Refresh of the license definition requested"
        assert await page.is_visible("#refresh-info")
        _, sync = await qrs.call("GET", "/qrs/license/syncstatus")
        assert await panel.attr("refresh-requested-at", "datetime") == sync["refreshRequestedAt"]
        assert await panel.attr("refresh-next-poll", "datetime") == sync["nextPollAt"]

        # Focus and leave without a change: the lease is taken, then given back.
        await page.focus("#signed-key")
        await expect(page.locator("#key-lease")).to_have_attribute("data-state", "held")
        await page.focus("#owner-name")
        await expect(page.locator("#key-lease")).to_have_attribute("data-state", "free")
        await wait_for_lease_count(qrs, 0)

        # Editing the key holds the lease: another admin cannot take it, refresh is refused.
        await page.fill("#signed-key", "not-a-key")
        await expect(page.locator("#key-lease")).to_have_attribute("data-state", "held")
        status, body = await qrs.call("POST", "/qrs/license/keyedit", user=DEPLOYER)
        assert (status, body["error"]["code"]) == (409, "KeyEditInProgress")
        message, _ = await panel.press("refresh")
        assert message == KeyEditInProgress.message
        assert await panel.attr("message", "data-kind") == "error"
        assert not await page.is_visible("#refresh-info")

        # Apply ends the edit, even when it fails; then the other admin may take the lease.
        message, detail = await panel.press("apply")
        assert message == APPLY_FAILED and detail
        assert await lease_count(qrs) == 0
        status, _ = await qrs.call("POST", "/qrs/license/keyedit", user=DEPLOYER)
        assert status == 200
        await page.fill("#signed-key", "x")
        await expect(page.locator("#key-lease")).to_have_attribute("data-state", "busy")
        assert DEPLOYER in await panel.text("key-lease")
        status, _ = await qrs.call("DELETE", "/qrs/license/keyedit", user=DEPLOYER)
        assert status == 204

        # A read-only role sees the license but may not refresh it.
        auditor = Panel(await page.context.new_page())
        await auditor.open(qrs, AUDITOR)
        assert await auditor.mode() == "signedKey"
        message, _ = await auditor.press("refresh")
        assert message == "You do not have a role that allows this."
        assert auditor.problems == []
