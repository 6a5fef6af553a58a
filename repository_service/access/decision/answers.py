"""The answer the proxy reads for a session: granted or not, which access, the result code
and, for time-limited access, how long it lasts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from repository_service.access.kinds import NONE


@dataclass(frozen=True)
class Decision:
    """The answer to the proxy, and why."""

    granted: bool
    access_type: int
    code: int
    duration: str | None = None
    allocation_id: uuid.UUID | None = None
    reason: str = ""

    def answer(self) -> dict[str, Any]:
        """Return the JSON the proxy reads."""
        body: dict[str, Any] = {
            "accessGranted": self.granted,
            "accessType": self.access_type,
            "accessTypeResultCode": self.code,
            "duration": self.duration,
        }
        if self.allocation_id is not None:
            body["allocationId"] = str(self.allocation_id)
        return body


def hms(seconds: float) -> str:
    """Format a duration as HH:MM:SS."""
    total = max(0, round(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def deny(code: int, reason: str) -> Decision:
    """Return a refusal with its reason."""
    return Decision(False, NONE, code, reason=reason)
