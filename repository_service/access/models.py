"""Bodies and answers of the access-type endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, RootModel, StringConstraints

from repository_service.qrs.models import QrsEntity
from shared.models import ApiModel, Name, OutModel

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


# ---- answers -------------------------------------------------------------------------------


class AllocatedUser(OutModel):
    """The user an allocation belongs to."""

    id: str
    user_directory: str
    user_id: str
    name: str


class Allocation(QrsEntity):
    """A professional, analyzer or user access allocation."""

    user: AllocatedUser | None
    last_used: str | None
    quarantined: bool
    quarantine_end: str | None
    deleted_user_id: str | None
    deleted_user_directory: str | None
    excess: bool


class ProfessionalAccessType(Allocation):
    """A professional access allocation."""


class AnalyzerAccessType(Allocation):
    """An analyzer access allocation."""


class UserAccessType(Allocation):
    """A user access allocation (one token)."""


class ProfessionalAccessTypeList(RootModel[list[ProfessionalAccessType]]):
    """The professional access allocations."""


class AnalyzerAccessTypeList(RootModel[list[AnalyzerAccessType]]):
    """The analyzer access allocations."""


class UserAccessTypeList(RootModel[list[UserAccessType]]):
    """The user access allocations."""


class AccessGroup(QrsEntity):
    """A professional, analyzer or user access group."""

    name: str
    rule: str | None


class ProfessionalAccessGroup(AccessGroup):
    """A professional access group."""


class AnalyzerAccessGroup(AccessGroup):
    """An analyzer access group."""


class UserAccessGroup(AccessGroup):
    """A user access group."""


class ProfessionalAccessGroupList(RootModel[list[ProfessionalAccessGroup]]):
    """The professional access groups."""


class AnalyzerAccessGroupList(RootModel[list[AnalyzerAccessGroup]]):
    """The analyzer access groups."""


class UserAccessGroupList(RootModel[list[UserAccessGroup]]):
    """The user access groups."""


class LoginAccessType(QrsEntity):
    """A login access group: its tokens and the passes they stand for."""

    name: str
    assigned_tokens: int
    rule: str | None
    assigned_access_types: int
    used_access_types: int
    remaining_access_types: int


class LoginAccessTypeList(RootModel[list[LoginAccessType]]):
    """The login access groups."""


class AnalyzerTimeAccessType(QrsEntity):
    """An analyzer-time pool: its minutes this month."""

    name: str
    assigned_minutes: int
    rule: str | None
    used_minutes: int
    remaining_minutes: int


class AnalyzerTimeAccessTypeList(RootModel[list[AnalyzerTimeAccessType]]):
    """The analyzer-time pools."""


class SeatUse(OutModel):
    """Professional or analyzer allocations against the license's seats."""

    enabled: bool
    total: int
    allocated: int
    used: int
    quarantined: int
    excess: int
    available: int


class UserAccessUse(OutModel):
    """Tokens held by user access allocations."""

    enabled: bool
    token_cost: float
    allocated_tokens: int
    used_tokens: int
    quarantined_tokens: int


class LoginAccessUse(OutModel):
    """Tokens assigned to login access and those its passes hold."""

    enabled: bool
    token_cost: float
    allocated_tokens: int
    used_tokens: int
    unavailable_tokens: int


class AnalyzerTimeUse(OutModel):
    """Analyzer minutes assigned and used this month."""

    enabled: bool
    allocated_minutes: int
    used_minutes: int
    unavailable_minutes: int


class AccessTypeOverview(OutModel):
    """The site's access types: what is licensed, allocated and in use."""

    total_tokens: int
    available_tokens: int
    tokens_enabled: bool
    user_access: UserAccessUse
    login_access: LoginAccessUse
    professional_access: SeatUse
    analyzer_access: SeatUse
    analyzer_time_access: AnalyzerTimeUse
    schema_path: str
    privileges: list[str] | None = None


class SeatTokens(OutModel):
    """Professional or analyzer allocations told as tokens (deprecated answer)."""

    token_cost: float
    allocated_tokens: int
    used_tokens: int
    quarantined_tokens: int
    schema_path: str


class UserAccessTokens(OutModel):
    """User access told as tokens (deprecated answer)."""

    token_cost: float
    allocated_tokens: int
    used_tokens: int
    quarantined_tokens: int
    schema_path: str


class LoginAccessTokens(OutModel):
    """Login access told as tokens (deprecated answer)."""

    token_cost: float
    allocated_tokens: int
    used_tokens: int
    unavailable_tokens: int
    schema_path: str


class AccessTypesInfo(OutModel):
    """The deprecated access-type information: every access type counted in tokens."""

    total_tokens: int
    available_tokens: int
    professional_access_type: SeatTokens
    user_access_type: UserAccessTokens
    login_access_type: LoginAccessTokens
    analyzer_access_type: SeatTokens
    schema_path: str
    privileges: list[str] | None = None
