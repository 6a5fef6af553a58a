"""Bulk import of catalog licenses: JSON lines, one `POST /v1/admin/licenses` body a line.

Each line is checked on its own. A line that is not one JSON object forming a valid create
body (too long, not UTF-8, not JSON, wrong types, validTo before validFrom …) is refused with
its number and the reason, and the lines around it are still imported; blank lines are
skipped. Good lines are created in batches, each batch in one transaction: its licenses, their
first keys and their first definitions, all or none. A line is reported as imported only once
its batch has committed, so what an import printed is exactly what it imported. A batch the
database refuses is retried line by line, so such a line costs only itself; an import that
loses its database stops and names the first line not imported (rerun with `--from-line`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import asyncpg
from pydantic import ValidationError

from license_backend.catalog.models import LicenseCreate, LicenseWithKey
from license_backend.catalog.service import Catalog, validity_problem
from shared.db import database_unavailable
from shared.web.errors import ApiError
from shared.web.requests import reject_nul, validation_details

# Far above any create body (a few hundred bytes); bounds the memory a hostile line takes.
MAX_LINE_BYTES = 64 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Imported:
    """A line made into a license."""

    line: int
    license: LicenseWithKey


@dataclass(frozen=True)
class Refused:
    """A line not imported, and why."""

    line: int
    reason: str


@dataclass
class Summary:
    """What an import did; `stopped_at` is the first line not imported when it stopped."""

    imported: int = 0
    refused: int = 0
    stopped_at: int | None = None
    stop_reason: str | None = None


class ImportStopped(Exception):
    """The database went away: the lines from `line` on were not imported."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, bytes) per line; None for a line longer than MAX_LINE_BYTES,
    whose rest is read and thrown away, never held."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := stream.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, raw


def parse_line(raw: bytes | None) -> LicenseCreate | str | None:
    """Return the create body of a line, the reason it is refused, or None for a blank line."""
    if raw is None:
        return f"line longer than {MAX_LINE_BYTES} bytes"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start + 1})"
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    try:
        reject_nul(data)
        body = LicenseCreate.model_validate(data)
    except ApiError as exc:
        return exc.message
    except ValidationError as exc:
        return "; ".join(f"{d['field']}: {d['problem']}" for d in validation_details(exc))
    problem = validity_problem(body, body.valid_from or datetime.now(UTC).date())
    if problem is not None:
        return f"{problem['field']}: {problem['problem']}"
    return body


async def import_licenses(
    catalog: Catalog,
    stream: BinaryIO,
    *,
    batch_size: int,
    from_line: int = 1,
    report: Callable[[Imported | Refused], None],
) -> Summary:
    """Import the lines of `stream` from line `from_line` on, calling `report` per line done."""
    summary = Summary()
    batch: list[tuple[int, LicenseCreate]] = []
    for number, raw in _lines(stream):
        if number < from_line:
            continue
        parsed = parse_line(raw)
        if parsed is None:
            continue
        if isinstance(parsed, str):
            summary.refused += 1
            report(Refused(number, parsed))
            continue
        batch.append((number, parsed))
        if len(batch) >= batch_size:
            if not await _flush(catalog, batch, summary, report):
                return summary
            batch = []
    if batch:
        await _flush(catalog, batch, summary, report)
    return summary


async def _flush(
    catalog: Catalog,
    batch: Sequence[tuple[int, LicenseCreate]],
    summary: Summary,
    report: Callable[[Imported | Refused], None],
) -> bool:
    """Create one batch; False when the import has to stop."""
    try:
        done = await _create(catalog, batch)
    except ImportStopped as exc:
        summary.stopped_at, summary.stop_reason = exc.line, exc.reason
        return False
    except asyncpg.PostgresError:
        # Something in the batch the checks above did not foresee: find it line by line.
        for line in batch:
            try:
                done = await _create(catalog, [line])
            except ImportStopped as exc:
                summary.stopped_at, summary.stop_reason = exc.line, exc.reason
                return False
            except asyncpg.PostgresError as exc:
                summary.refused += 1
                report(Refused(line[0], f"refused by the database: {exc}"))
                continue
            summary.imported += 1
            report(done[0])
        return True
    summary.imported += len(done)
    for item in done:
        report(item)
    return True


async def _create(catalog: Catalog, batch: Sequence[tuple[int, LicenseCreate]]) -> list[Imported]:
    try:
        created = await catalog.create_many([body for _, body in batch])
    except Exception as exc:
        if database_unavailable(exc):
            raise ImportStopped(batch[0][0], f"database unavailable: {exc}") from exc
        raise
    return [Imported(line, lic) for (line, _), lic in zip(batch, created, strict=True)]
