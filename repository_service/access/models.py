"""Bodies of the access-type endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from shared.models import ApiModel, Name

RuleText = Annotated[str, StringConstraints(max_length=4000)]
Identity = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
_LENIENT = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})


class UserRef(ApiModel):
    """A user by id, or by directory and user id."""

    model_config = _LENIENT

    id: str | None = Field(default=None, max_length=64)
    user_directory: Identity | None = None
    user_id: Identity | None = None


class AllocationCreate(ApiModel):
    """Body of POST on professional/analyzer/user access types."""

    model_config = _LENIENT

    user: UserRef


class AccessGroupCreate(ApiModel):
    """Body of POST on access groups; without a rule the group grants nobody until given one."""

    model_config = _LENIENT

    name: Name
    rule: RuleText | None = None


class AccessGroupUpdate(ApiModel):
    """Body of PUT on access groups."""

    model_config = _LENIENT

    id: str = Field(max_length=64)
    modified_date: datetime
    name: Name | None = None
    rule: RuleText | None = None


class LoginGroupCreate(ApiModel):
    """Body of POST on login-access groups."""

    model_config = _LENIENT

    name: Name
    assigned_tokens: int = Field(ge=0, le=10_000_000)
    rule: RuleText | None = None


class LoginGroupUpdate(ApiModel):
    """Body of PUT on login-access groups."""

    model_config = _LENIENT

    id: str = Field(max_length=64)
    modified_date: datetime
    name: Name | None = None
    assigned_tokens: int | None = Field(default=None, ge=0, le=10_000_000)
    rule: RuleText | None = None


class CapacityPoolCreate(ApiModel):
    """Body of POST on analyzer-time pools."""

    model_config = _LENIENT

    name: Name
    assigned_minutes: int = Field(ge=0, le=100_000_000)
    rule: RuleText | None = None


class CapacityPoolUpdate(ApiModel):
    """Body of PUT on analyzer-time pools."""

    model_config = _LENIENT

    id: str = Field(max_length=64)
    modified_date: datetime
    name: Name | None = None
    assigned_minutes: int | None = Field(default=None, ge=0, le=100_000_000)
    rule: RuleText | None = None


class AccessRequest(ApiModel):
    """Body of POST /qrs/license/accessrequest."""

    model_config = _LENIENT

    user_directory: Identity
    user_id: Identity
    session_id: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    ]
    host_name: str | None = Field(default=None, max_length=255)


class SessionRef(ApiModel):
    """Body of /activity and /end."""

    model_config = _LENIENT

    session_id: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    ]
