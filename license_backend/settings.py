"""License backend settings (`LBS_` environment variables)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.settings import ServiceSettings, comma_list


class LbsSettings(ServiceSettings):
    """Everything the license backend reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="LBS_", extra="ignore", frozen=True)

    port: int = Field(default=9200, ge=0, le=65535, description="TCP port to listen on.")
    public_url: str = Field(
        default="http://127.0.0.1:9200",
        description="The backend's public URL; the `iss` of everything it signs.",
    )
    admin_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated admin tokens accepted besides the stored ones (dev, tests).",
    )
    definition_ttl_seconds: int = Field(
        default=30 * 24 * 3600,
        ge=1,
        description="Offline grace horizon written into each definition as `exp`.",
    )
    key_encryption_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts signing keys at rest (required to serve).",
    )
    control_secret: SecretStr = Field(
        default=SecretStr("dev-control-secret"),
        description="Secret of the keyed hash that derives control numbers from serials.",
    )
    lef_rate_limit_per_minute: int = Field(
        default=10, ge=1, description="LEF requests allowed per client address per minute."
    )
    activation_seen_seconds: float = Field(
        default=3600,
        ge=0,
        description=(
            "How often at most a known installation's last-seen time is written (once older"
            " than a random half to all of it). An hour writes a site polling every 10 minutes"
            " every 40 to 60 minutes: about 340 writes a second at a million sites, where"
            " every poll would be 1,667."
        ),
    )
    site_cache_seconds: float = Field(
        default=5,
        ge=0,
        description=(
            "How long a replica trusts what it read about a site's key (revoked, blacklisted,"
            " its definition); each entry lives a random time between half and all of it."
            " Changes made through a replica clear its cache at once; other replicas see them"
            " within this time."
        ),
    )
    site_index: bool = Field(
        default=True,
        description=(
            "Keep every license's keys, definition version and activations in memory, kept"
            " current by Postgres notifications: a site not seen lately costs no query, and"
            " other replicas' changes are seen within milliseconds. About 0.7 KB per license;"
            " false reads Postgres for every lookup the cache misses."
        ),
    )
    usage_retention_months: int = Field(
        default=13,
        ge=1,
        le=1200,
        description=(
            "Months usage reports (and the idempotency of their reportId) are kept; older"
            " monthly partitions are dropped."
        ),
    )
    reuse_port: bool = Field(
        default=False,
        description=(
            "Listen with SO_REUSEPORT: several backend processes on one host share HOST:PORT"
            " and the kernel spreads connections over them (one process per core)."
        ),
    )
    require_installation_id: bool = Field(
        default=True,
        description=(
            "Refuse site calls without `X-Installation-Id` (400); `false` serves sites older"
            " than activations, uncounted. LEF downloads never need it."
        ),
    )

    _split_admin_tokens = comma_list("admin_tokens")
