"""The answer of the LEF download."""

from __future__ import annotations

from pydantic import RootModel


class LefText(RootModel[str]):
    """A signed LEF (license enabler file), as plain text."""
