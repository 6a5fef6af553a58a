"""Usage reports as sites send them and as the vendor lists them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from shared.models import ApiModel, OutModel

MAX_COUNT = 10**9


class Assignments(ApiModel):
    """Allocations held at the end of the period, by access type."""

    professional: int = Field(ge=0, le=MAX_COUNT)
    analyzer: int = Field(ge=0, le=MAX_COUNT)
    user: int = Field(ge=0, le=MAX_COUNT)


def _utc(value: datetime) -> datetime:
    # Stored as instants: a time without an offset is taken as UTC, and one that is no
    # instant a datetime can hold in UTC (year 1 at +01:00) is refused rather than stored.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("outside the years 1 to 9999 in UTC") from None


class UsageReport(ApiModel):
    """Body of `POST /v1/usage`."""

    report_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    assignments: Assignments
    analyzer_minutes_used: int = Field(ge=0, le=MAX_COUNT)
    login_passes_used: int = Field(ge=0, le=MAX_COUNT)
    instance_id: str = Field(min_length=1, max_length=200)

    _in_utc = field_validator("period_start", "period_end")(_utc)


class UsageReceipt(OutModel):
    """What the backend answers for a report, the same on a replay."""

    report_id: uuid.UUID
    license: str
    received_at: datetime


class StoredReport(OutModel):
    """One stored report."""

    report_id: uuid.UUID
    received_at: datetime
    report: dict[str, Any]


class ReportPage(OutModel):
    """Reports, newest first."""

    items: list[StoredReport]
    next: str | None
