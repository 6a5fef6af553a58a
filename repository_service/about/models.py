"""The answers of `/qrs/about`, its API description and enums, and `/qrs/ssl/ping`."""

from __future__ import annotations

from pydantic import Field, RootModel

from shared.models import OutModel


class About(OutModel):
    """What this repository is: version, database, node type."""

    build_version: str
    build_date: str
    database_provider: str
    node_type: int
    shared_persistence: bool
    requires_bootstrap: bool
    single_node_only: bool
    schema_path: str
    privileges: list[str] | None = None


class ApiDescription(RootModel[list[str]]):
    """The `/qrs/` routes, each "VERB /path", or with `extended` and `format=JSON` the JSON
    text of `{"method", "path", "extended"}`."""


class ApiEnum(OutModel):
    """One enum: its "number: name" values and the properties that hold it."""

    values: list[str] = Field(alias="Values")
    usages: list[str] = Field(alias="Usages")


class ApiEnums(RootModel[dict[str, ApiEnum]]):
    """The enums of the `/qrs/` entities, by name."""


class Ping(RootModel[str]):
    """The JSON string "Ping successful."."""
