"""Bodies and queries of the site license endpoints (documented; parsed leniently)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field, RootModel

from shared.models import ApiModel, OutModel

TEXT = 200
LEF_MAX = 64 * 1024
KEY_MAX = 8 * 1024


class LicenseBody(ApiModel):
    """Body of `POST /qrs/license`: `key` for a signed-key site, else serial + LEF."""

    model_config = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})

    serial: str | None = Field(default=None, max_length=TEXT)
    name: str | None = Field(default=None, max_length=TEXT)
    organization: str | None = Field(default=None, max_length=TEXT)
    lef: str | None = Field(default=None, max_length=LEF_MAX)
    key: str | None = Field(default=None, max_length=KEY_MAX)


class LicensePut(LicenseBody):
    """Body of `PUT /qrs/license/{id}`: id and modifiedDate required, the rest optional."""

    id: str = Field(max_length=64)
    modified_date: datetime


class ControlQuery(ApiModel):
    """The `control` query parameter of license writes."""

    model_config = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})

    control: str | None = Field(default=None, max_length=16)


class DownloadQuery(ApiModel):
    """Query of `GET /qrs/license/download`."""

    model_config = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})

    serial: str = Field(default="", max_length=TEXT)
    control: str = Field(default="", max_length=16)
    user: str = Field(default="", max_length=TEXT)
    org: str = Field(default="", max_length=TEXT)


class LicenseOut(OutModel):
    """The License entity."""

    model_config = ConfigDict(alias_generator=None, populate_by_name=True)

    id: str
    createdDate: str
    modifiedDate: str
    modifiedByUserName: str
    serial: str
    check: str
    name: str
    organization: str
    lef: str
    key: str
    keyDetails: str
    product: str
    numberOfCores: int
    isExpired: bool
    expiredReason: str
    isBlacklisted: bool
    isInvalid: bool
    isSubscription: bool
    isCloudServices: bool
    isElastic: bool
    updated: str | None
    schemaPath: str


class RefreshAnswer(OutModel):
    """Answer of a refresh that waits for the next poll."""

    model_config = ConfigDict(alias_generator=None, populate_by_name=True)

    requestedAt: str
    nextPollAt: str | None


class SyncStatus(OutModel):
    """The poller's state, the same on every replica."""

    model_config = ConfigDict(alias_generator=None, populate_by_name=True)

    mode: str
    installationId: str | None
    leader: str | None
    lastAttemptAt: str | None
    lastSuccessAt: str | None
    lastError: str | None
    consecutiveFailures: int
    nextPollAt: str | None
    definitionVersion: int | None
    definitionExpiresAt: str | None
    refreshRequestedAt: str | None


class LefDownload(RootModel[str]):
    """The LEF fetched from the LEF server, as a JSON string."""


class LicenseDefinition(OutModel):
    """The verified license definition: its version, expiry and claims."""

    version: int | None
    expires_at: str | None
    claims: dict[str, Any]


class KeyEditLease(OutModel):
    """Who edits the signed key, and until when."""

    holder: str
    expires_at: str | None
