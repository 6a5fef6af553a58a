"""Date arithmetic at the edge of the calendar: every date the backend accepts, 0001-01-01 to
9999-12-31, must stay usable, and one day past 9999-12-31 is not a Python date."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

# The last instant Python (and so every date the backend accepts) can represent, in UTC.
LATEST = datetime.max.replace(tzinfo=UTC)
# The last second of 9999-12-31 UTC as a NumericDate: a later `exp` has no datetime.
MAX_TIMESTAMP = 253_402_300_799


def end_of_day(day: date) -> datetime:
    """Return the first instant after `day` in UTC, or LATEST when there is none."""
    if day >= date.max:
        return LATEST
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def from_timestamp(seconds: float) -> datetime:
    """Return a NumericDate as an aware UTC datetime, clamped to the representable range."""
    if seconds >= MAX_TIMESTAMP:
        return datetime.fromtimestamp(MAX_TIMESTAMP, UTC)
    return datetime.fromtimestamp(max(seconds, 0), UTC)


def add_seconds(start: datetime, seconds: float) -> datetime:
    """Return `start` plus `seconds`, capped at LATEST instead of overflowing."""
    room = (LATEST - start).total_seconds()
    if seconds >= room:
        return LATEST
    return start + timedelta(seconds=seconds)
