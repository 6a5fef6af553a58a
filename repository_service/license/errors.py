"""The site license's errors, with the messages of the admin guide."""

from __future__ import annotations

from shared.web.errors import ApiError, Conflict, NotFound, UpstreamUnavailable

APPLIED = "Changes have been applied"
APPLY_FAILED = "Failed to apply changes"
LEF_RETRIEVED = "LEF was successfully retrieved"
LEF_FAILED = "Failed to get LEF from server"


class ApplyFailed(ApiError):
    status, code, message = 400, "ApplyFailed", APPLY_FAILED

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(APPLY_FAILED, status=status, details={"reason": reason})


class LefRetrievalFailed(ApiError):
    status, code, message = 400, "LefRetrievalFailed", LEF_FAILED

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(LEF_FAILED, status=status, details={"reason": reason})


class NotLicensed(NotFound):
    code, message = "NotLicensed", "The site has no license."


class AlreadyLicensed(Conflict):
    code, message = "AlreadyLicensed", "The site already has a license; change it with PUT."


class KeyEditInProgress(Conflict):
    code, message = "KeyEditInProgress", "The signed license key is being edited."


class LicenseExpired(Conflict):
    code, message = "LicenseExpired", "The signed license key has expired."


class NotSignedKey(Conflict):
    code, message = "NotSignedKey", "Only a signed-key site can refresh its license definition."


class RefreshRefused(Conflict):
    code, message = "RefreshRefused", "The license backend refused the refresh."


class LbsUnavailableError(UpstreamUnavailable):
    code, message = "LbsUnavailable", "The license backend could not be reached."
