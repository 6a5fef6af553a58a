"""The audit log's answers: a page of sealed entries, and the verdict on the hash chain."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shared.models import OutModel


class AuditEntry(OutModel):
    """One sealed entry: what changed, who changed it, and its link in the chain."""

    seq: int
    at: str
    actor: str
    action: str
    entity_type: str
    entity_id: str | None
    before: Any
    after: Any
    prev_hash: str
    entry_hash: str = Field(alias="hash")


class AuditPage(OutModel):
    """Entries after a sequence number; `next` is the `after` of the next page."""

    items: list[AuditEntry]
    next: int | None


class AuditVerification(OutModel):
    """Whether the chain is intact, how many entries it holds, and the first broken one."""

    intact: bool
    entries: int
    first_bad_seq: int | None
