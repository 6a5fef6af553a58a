"""The allocation step the decision engine calls (freeing ended quarantines when a seat is
short); the step itself is on the admin side (`access/admin/allocations.py`), where every
allocation is written."""

from __future__ import annotations

from repository_service.access.admin.allocations import sweep_quarantine

__all__ = ["sweep_quarantine"]
