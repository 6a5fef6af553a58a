"""Catalog licenses as the admin API reads and writes them."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import Field, field_validator

from shared.models import ApiModel, Name, OutModel

MAX_UNITS = 10_000_000
MAX_ACTIVATIONS = 1_000_000


class Overage(ApiModel):
    """Which access types may be used beyond their allotment."""

    professional: bool = False
    analyzer: bool = False
    analyzer_time: bool = False


def _overage_from_bool(value: Any) -> Any:
    # `true`/`false` is accepted as shorthand for all three flags.
    if isinstance(value, bool):
        return {"professional": value, "analyzer": value, "analyzerTime": value}
    return value


class LicenseCreate(ApiModel):
    """Body of `POST /v1/admin/licenses`."""

    owner: Name
    organization: Name
    product: Name = "Analytics Platform Enterprise"
    professional: int = Field(ge=0, le=MAX_UNITS)
    analyzer: int = Field(ge=0, le=MAX_UNITS)
    tokens: int = Field(default=0, ge=0, le=MAX_UNITS)
    analyzer_minutes: int = Field(default=0, ge=0, le=MAX_UNITS)
    valid_from: date | None = None
    valid_to: date | None = None
    subscription: bool = False
    elastic: bool = False
    cloud_services: bool = False
    overage: Overage = Overage()
    max_activations: int = Field(default=1, ge=1, le=MAX_ACTIVATIONS)

    _overage = field_validator("overage", mode="before")(_overage_from_bool)


class LicensePatch(ApiModel):
    """Body of `PATCH /v1/admin/licenses/{number}`: any subset of the fields."""

    owner: Name | None = None
    organization: Name | None = None
    product: Name | None = None
    professional: int | None = Field(default=None, ge=0, le=MAX_UNITS)
    analyzer: int | None = Field(default=None, ge=0, le=MAX_UNITS)
    tokens: int | None = Field(default=None, ge=0, le=MAX_UNITS)
    analyzer_minutes: int | None = Field(default=None, ge=0, le=MAX_UNITS)
    valid_from: date | None = None
    valid_to: date | None = None
    blacklisted: bool | None = None
    subscription: bool | None = None
    elastic: bool | None = None
    cloud_services: bool | None = None
    overage: Overage | None = None
    max_activations: int | None = Field(default=None, ge=1, le=MAX_ACTIVATIONS)

    _overage = field_validator("overage", mode="before")(_overage_from_bool)


class License(OutModel):
    """A catalog license, flat (SPEC 8.5)."""

    number: str
    control: str
    ver: int
    owner: str
    organization: str
    product: str
    professional: int
    analyzer: int
    tokens: int
    analyzer_minutes: int
    valid_from: date
    valid_to: date | None
    blacklisted: bool
    subscription: bool
    elastic: bool
    cloud_services: bool
    overage: Overage
    max_activations: int


class LicenseWithKey(License):
    """A license just created, with its first signed key."""

    key: str


class LicensePage(OutModel):
    """A page of licenses."""

    items: list[License]
    next: str | None


class IssueKey(ApiModel):
    """Body of `POST /v1/admin/licenses/{number}/keys`."""

    revoke_others: bool = False


class IssuedKey(OutModel):
    """A newly issued signed license key."""

    key: str
    jti: str
    revoked: int


class ListQuery(ApiModel):
    """Paging of list endpoints."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    limit: int = Field(default=100, ge=1, le=500)
    after: str | None = Field(default=None, max_length=64)
