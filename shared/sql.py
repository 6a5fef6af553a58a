"""Named SQL queries kept in `.sql` files, each under a `-- name: <query_name>` header."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def load_queries(path: Path) -> Mapping[str, str]:
    """Return the queries of one `.sql` file by name."""
    text = path.read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} defined twice in {path}")
        queries[name] = body.strip()
    return queries


class Queries:
    """Attribute access to the queries of one file: `q.insert_license`."""

    def __init__(self, path: Path) -> None:
        self._queries = load_queries(path)

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None
