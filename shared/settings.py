"""Settings common to both services, read from the environment by pydantic-settings."""

from __future__ import annotations

import sys
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["json", "console"]


def default_log_format() -> LogFormat:
    """Return `console` on a terminal and `json` everywhere else."""
    return "console" if sys.stdout.isatty() else "json"


class ServiceSettings(BaseSettings):
    """Fields every service has; each service subclasses it with its own prefix."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="Postgres connection URL of the service's own database.",
    )
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=0, ge=0, le=65535, description="TCP port to listen on.")
    log_format: LogFormat = Field(
        default_factory=default_log_format,
        description="`json` or `console`; json when stdout is not a terminal.",
    )
    db_pool_max_size: int = Field(default=20, ge=2, description="Most database connections.")


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def comma_list(*fields: str) -> Any:
    """Return a validator that reads the named list fields from comma-separated text."""
    return field_validator(*fields, mode="before")(_split_commas)
