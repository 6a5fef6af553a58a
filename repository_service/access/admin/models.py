"""Bodies and answers of allocations, access groups, login groups and analyzer-time pools."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, RootModel, StringConstraints

from repository_service.qrs.models import QrsEntity
from repository_service.users.models import Identity
from shared.models import ApiModel, Name, OutModel

RuleText = Annotated[str, StringConstraints(max_length=4000)]


class _Body(ApiModel):
    """A body that ignores fields it does not know: clients send whole entities back."""

    model_config = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})


class _Change(_Body):
    """What a PUT body carries besides the new values: the id and the modifiedDate read."""

    id: str = Field(max_length=64)
    modified_date: datetime
    name: Name | None = None


class UserRef(_Body):
    """A user by id, or by directory and user id."""

    id: str | None = Field(default=None, max_length=64)
    user_directory: Identity | None = None
    user_id: Identity | None = None


class AllocationCreate(_Body):
    """Body of POST on professional/analyzer/user access types."""

    user: UserRef


class AccessGroupCreate(_Body):
    """Body of POST on access groups; without a rule the group grants nobody until given one."""

    name: Name
    rule: RuleText | None = None


class AccessGroupUpdate(_Change):
    """Body of PUT on access groups."""

    rule: RuleText | None = None


class LoginGroupCreate(_Body):
    """Body of POST on login-access groups."""

    name: Name
    assigned_tokens: int = Field(ge=0, le=10_000_000)
    rule: RuleText | None = None

    @property
    def amount(self) -> int:
        """The tokens the group holds."""
        return self.assigned_tokens


class LoginGroupUpdate(_Change):
    """Body of PUT on login-access groups."""

    assigned_tokens: int | None = Field(default=None, ge=0, le=10_000_000)
    rule: RuleText | None = None

    @property
    def amount(self) -> int | None:
        """The tokens the group is to hold, if they change."""
        return self.assigned_tokens


class CapacityPoolCreate(_Body):
    """Body of POST on analyzer-time pools."""

    name: Name
    assigned_minutes: int = Field(ge=0, le=100_000_000)
    rule: RuleText | None = None

    @property
    def amount(self) -> int:
        """The minutes a month the pool holds."""
        return self.assigned_minutes


class CapacityPoolUpdate(_Change):
    """Body of PUT on analyzer-time pools."""

    assigned_minutes: int | None = Field(default=None, ge=0, le=100_000_000)
    rule: RuleText | None = None

    @property
    def amount(self) -> int | None:
        """The minutes a month the pool is to hold, if they change."""
        return self.assigned_minutes


QuotaCreate = LoginGroupCreate | CapacityPoolCreate
QuotaUpdate = LoginGroupUpdate | CapacityPoolUpdate


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
