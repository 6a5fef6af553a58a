"""Answer shapes every `/qrs/` collection shares: the entity's common fields and `/count`."""

from __future__ import annotations

from shared.models import OutModel


class Count(OutModel):
    """The answer of a collection's `/count`."""

    value: int


class QrsEntity(OutModel):
    """The fields every QRS entity carries."""

    id: str
    created_date: str
    modified_date: str
    modified_by_user_name: str
    schema_path: str
    # Only with `?privileges=true`: what the caller may do with the entity.
    privileges: list[str] | None = None
