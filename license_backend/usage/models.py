"""Usage reports as sites send them and as the vendor lists them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from shared.models import ApiModel, OutModel

MAX_COUNT = 10**9


class Assignments(ApiModel):
    """Allocations held at the end of the period, by access type."""

    professional: int = Field(ge=0, le=MAX_COUNT)
    analyzer: int = Field(ge=0, le=MAX_COUNT)
    user: int = Field(ge=0, le=MAX_COUNT)


class UsageReport(ApiModel):
    """Body of `POST /v1/usage`."""

    report_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    assignments: Assignments
    analyzer_minutes_used: int = Field(ge=0, le=MAX_COUNT)
    login_passes_used: int = Field(ge=0, le=MAX_COUNT)
    instance_id: str = Field(min_length=1, max_length=200)


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
