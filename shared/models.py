"""Pydantic conventions shared by both APIs: camelCase JSON, strict input, safe text."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A JSON object with camelCase names that refuses unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class OutModel(BaseModel):
    """A JSON answer with camelCase names."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def dump(self) -> dict[str, object]:
        """Return the JSON-ready dict with camelCase names."""
        return self.model_dump(mode="json", by_alias=True)


# One line of human text: no control characters, trimmed, not empty.
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
