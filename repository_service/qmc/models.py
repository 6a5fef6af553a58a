"""The answer of the Site license admin page."""

from __future__ import annotations

from pydantic import RootModel


class HtmlPage(RootModel[str]):
    """An HTML page."""
