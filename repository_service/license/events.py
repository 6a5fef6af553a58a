"""What the license package announces when the stored license changes.

Handlers are registered when the app is built. Those of `in_transaction` run inside the
transaction that changed the license, with its connection, so what follows the totals
(the seat pools) commits or rolls back with the change; those of `after_commit` run once it
committed, for caches that must never see a change that could still roll back."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.db import Conn


@dataclass(frozen=True)
class TotalsChanged:
    """The stored license changed, so what it grants may have changed."""

    license_id: uuid.UUID


InTransaction = Callable[[Conn, TotalsChanged], Awaitable[None]]
AfterCommit = Callable[[TotalsChanged], None]


class TotalsChangedHandlers:
    """The handlers of `TotalsChanged`, in the order they were registered."""

    def __init__(self) -> None:
        self.in_transaction: list[InTransaction] = []
        self.after_commit: list[AfterCommit] = []

    async def announce(self, conn: Conn, event: TotalsChanged) -> None:
        """Run the in-transaction handlers on the connection that made the change."""
        for handler in self.in_transaction:
            await handler(conn, event)

    def committed(self, event: TotalsChanged) -> None:
        """Run the after-commit handlers."""
        for handler in self.after_commit:
            handler(event)
