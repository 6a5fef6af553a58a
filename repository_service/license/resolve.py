"""What an administrator's input resolves to, before anything is stored: a signed key
resolved and verified at the backend, or a LEF downloaded (or pasted) and verified."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from repository_service.lbs.client import LbsClient, LbsRefused, LbsUnavailable
from repository_service.license.definition import (
    DefinitionRejected,
    verify_definition,
    verify_license_key,
)
from repository_service.license.errors import ApplyFailed, LefRetrievalFailed
from repository_service.settings import QrsSettings
from shared import jose, lef
from shared.definition import DefinitionClaims

log = structlog.get_logger(__name__)


def blank(value: str | None) -> bool:
    return value is None or not value.strip()


# Serial, control number, name, organization, LEF text and what the verified LEF grants.
LefFields = tuple[str, str, str, str, str, lef.LefContent]


@dataclass(frozen=True)
class Applied:
    """What a signed key resolves to at the backend."""

    number: str
    token: str
    claims: DefinitionClaims
    etag: str | None


class LicenseResolver:
    """Talks to the backend for the license use cases; stores nothing."""

    def __init__(self, lbs: LbsClient, settings: QrsSettings) -> None:
        self.lbs = lbs
        self.settings = settings

    async def download_lef(self, serial: str, control: str, user: str, org: str) -> str:
        """Fetch a LEF from the backend's LEF server."""
        if blank(serial) or blank(control):
            raise LefRetrievalFailed("serial and control number are required")
        try:
            text = await self.lbs.lef(serial.strip(), control.strip(), user, org)
        except LbsUnavailable as exc:
            raise LefRetrievalFailed(exc.reason, status=502) from None
        except LbsRefused as exc:
            raise LefRetrievalFailed(exc.message or exc.code) from None
        if text is None:
            raise LefRetrievalFailed("serial number or control number is incorrect")
        return text

    async def _verified_lef(self, text: str, serial: str, control: str) -> lef.LefContent:
        try:
            keys = await self.lbs.keys(want_kid=lef.stated_kid(text))
            return lef.verify_lef(text, control=control, serial=serial, keys=keys)
        except (lef.LefError, jose.TokenInvalid) as exc:
            # TokenInvalid: the key the LEF names is published without a trusted certificate.
            raise ApplyFailed(exc.reason) from None
        except LbsUnavailable as exc:
            raise ApplyFailed(f"license backend unreachable: {exc.reason}", status=502) from None

    async def lef_fields(
        self,
        serial: str | None,
        control: str | None,
        name: str | None,
        organization: str | None,
        lef_text: str | None,
    ) -> LefFields:
        """Check the fields of a LEF license; download the LEF unless pasted; verify it."""
        missing = [
            label
            for label, value in (
                ("serial", serial),
                ("control", control),
                ("name", name),
                ("organization", organization),
            )
            if blank(value)
        ]
        if missing:
            raise ApplyFailed(f"mandatory fields are empty: {', '.join(missing)}")
        assert serial and control and name and organization
        control = control.strip()
        if len(control) != 5 or not control.isdigit():
            raise ApplyFailed("the control number must be 5 digits")
        try:
            normalized = lef.normalize_serial(serial)
        except lef.LefError as exc:
            raise ApplyFailed(exc.reason) from None
        pasted = not blank(lef_text)
        if not pasted:
            try:
                lef_text = await self.download_lef(normalized, control, name, organization)
            except LefRetrievalFailed as exc:
                raise ApplyFailed(exc.details["reason"], status=exc.status) from None
        assert lef_text is not None
        content = await self._verified_lef(lef_text, normalized, control)
        if pasted:
            await self._activate_pasted_lef(normalized, control, name, organization)
        return normalized, control, name.strip(), organization.strip(), lef_text, content

    async def _activate_pasted_lef(self, serial: str, control: str, name: str, org: str) -> None:
        """Count this installation at the backend for a LEF pasted in, when it can be reached.

        A downloaded LEF was counted by its download; a pasted one would otherwise let any
        number of sites run on one LEF. Offline, the LEF applies on its signature alone."""
        try:
            await self.lbs.lef(serial, control, name, org)
        except LbsRefused as exc:
            if exc.limit_reached:
                raise ApplyFailed(exc.message) from None
        except LbsUnavailable:
            log.info("pasted_lef_applied_offline", serial=serial)

    async def activate_key(self, key: str) -> Applied:
        """Verify a signed key, resolve it at the backend and verify the definition it gets."""
        issuer = self.settings.expected_lbs_issuer
        try:
            number = await verify_license_key(self.lbs, key.strip(), issuer)
            answer = await self.lbs.current_definition(key.strip(), None)
            if answer.token is None:
                raise ApplyFailed("the license backend sent no definition")
            claims = await verify_definition(self.lbs, answer.token, issuer=issuer, number=number)
        except DefinitionRejected as exc:
            raise ApplyFailed(exc.reason) from None
        except LbsUnavailable as exc:
            raise ApplyFailed(f"license backend unreachable: {exc.reason}", status=502) from None
        except LbsRefused as exc:
            if exc.limit_reached:  # the backend's words tell the admin what to do
                raise ApplyFailed(exc.message) from None
            raise ApplyFailed(f"the license backend refused the key: {exc.code}") from None
        return Applied(number, answer.token, claims, answer.etag)
