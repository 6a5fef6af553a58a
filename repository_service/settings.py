"""Repository service settings (`QRS_` environment variables)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.settings import ServiceSettings, comma_list


def default_instance_id() -> str:
    """Return hostname-pid, unique per process on a host."""
    return f"{socket.gethostname()}-{os.getpid()}"


class QrsSettings(ServiceSettings):
    """Everything the repository service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="QRS_", extra="ignore", frozen=True)

    port: int = Field(default=4242, ge=0, le=65535, description="TCP port to listen on.")
    lbs_url: str = Field(default="http://127.0.0.1:9200", description="License backend URL.")
    lbs_issuer: str | None = Field(
        default=None, description="`iss` expected on definitions (default: LBS_URL)."
    )
    lbs_trust_root_file: Path | None = Field(
        default=None,
        description="The vendor's root public key (a JWK, or a JWKS of several): signing keys"
        " fetched from LBS_URL are trusted only when a root it reaches certifies them.",
    )
    lbs_jwks_file: Path | None = Field(
        default=None,
        description="Pinned JWKS of the license backend's signing keys (instead of a trust"
        " root; these keys are trusted as they are, and the trust root is then unused).",
    )
    lbs_keys_refetch_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Least time between key-set fetches caused by an unknown `kid`.",
    )
    lbs_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of every call to the license backend."
    )
    poll_interval_seconds: float = Field(
        default=600.0, gt=0, description="How often the leader polls for the definition."
    )
    lef_refresh_seconds: float = Field(
        default=86400.0, gt=0, description="How often a LEF site re-downloads its LEF."
    )
    refresh_triggers_poll: bool = Field(
        default=False, description="Refresh polls at once instead of at the next poll."
    )
    auth_jwks_file: Path | None = Field(
        default=None, description="Public keys (JWKS) of trusted caller-token issuers."
    )
    auth_issuers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated accepted caller-token `iss` values."
    )
    auth_audience: str = Field(
        default="repository-service", description="Required `aud` of caller tokens."
    )
    dev_issuer_key_file: Path | None = Field(
        default=None, description="Private key (PEM) used by `repository-service token`."
    )
    bootstrap_roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description='JSON object of roles granted at start: {"DIR\\\\user": ["RootAdmin"]}.',
    )
    xrfkey_required: bool = Field(default=True, description="Enforce the xrfkey check.")
    quarantine_seconds: float = Field(
        default=7 * 86400, ge=0, description="How long a used, deleted allocation stays taken."
    )
    login_pass_seconds: float = Field(default=3600, gt=0, description="Length of a login pass.")
    login_pass_return_seconds: float = Field(
        default=28 * 86400, ge=0, description="When a used login pass returns to its pool."
    )
    capacity_unit_seconds: float = Field(
        default=360, gt=0, description="Length of one analyzer-capacity unit (6 minutes)."
    )
    max_parallel_sessions: int = Field(
        default=5, ge=1, description="Live sessions one user may hold."
    )
    session_idle_seconds: float = Field(
        default=1800, gt=0, description="A session with no activity this long has ended."
    )
    key_edit_lease_seconds: float = Field(
        default=900, gt=0, description="How long the signed-key edit lease lasts."
    )
    tls_cert_file: Path | None = Field(
        default=None, description="Server certificate (PEM); with TLS_KEY_FILE, serve HTTPS."
    )
    tls_key_file: Path | None = Field(
        default=None, description="Private key (PEM) of TLS_CERT_FILE."
    )
    client_ca_file: Path | None = Field(
        default=None,
        description="CA (PEM) of client certificates; their X-Qlik-User names the caller.",
    )
    instance_id: str = Field(
        default_factory=default_instance_id, description="This replica's name (hostname-pid)."
    )

    _split_issuers = comma_list("auth_issuers")

    @field_validator("bootstrap_roles", mode="before")
    @classmethod
    def _parse_roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @model_validator(mode="after")
    def _tls_complete(self) -> QrsSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("QRS_TLS_CERT_FILE and QRS_TLS_KEY_FILE go together")
        if self.client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("QRS_CLIENT_CA_FILE needs HTTPS: set QRS_TLS_CERT_FILE and _KEY_FILE")
        return self

    @property
    def expected_lbs_issuer(self) -> str:
        """Return the `iss` definitions must carry."""
        return self.lbs_issuer or self.lbs_url
