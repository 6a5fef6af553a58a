"""System rules as the platform's QRS reads and writes them (license rules only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, RootModel, StringConstraints

from repository_service.access.admin.models import AccessGroup
from repository_service.qrs.models import QrsEntity
from repository_service.users.models import User
from shared.models import ApiModel, Name, OutModel

RuleText = Annotated[str, StringConstraints(max_length=4000)]
Comment = Annotated[str, StringConstraints(max_length=4000)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
_LENIENT = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})


class SystemRuleCreate(ApiModel):
    """Body of `POST /qrs/systemrule`: a license rule for one access group."""

    model_config = _LENIENT

    name: Name
    category: ShortText
    rule: RuleText
    resource_filter: ShortText
    type: ShortText | None = None
    actions: int | None = None
    comment: Comment | None = None
    disabled: bool = False
    rule_context: Any = None


class SystemRuleUpdate(ApiModel):
    """Body of `PUT /qrs/systemrule/{id}`: id and modifiedDate, the rest optional."""

    model_config = _LENIENT

    id: str = Field(max_length=64)
    modified_date: datetime
    name: Name | None = None
    category: ShortText | None = None
    rule: RuleText | None = None
    resource_filter: ShortText | None = None
    comment: Comment | None = None
    disabled: bool | None = None


class AuditParameters(ApiModel):
    """Body of `POST /qrs/systemrule/license/audit`."""

    model_config = _LENIENT

    resource_type: ShortText | None = None
    resource_filter: RuleText | None = None
    user_filter: RuleText | None = None
    # "type1=value1;type2=value2" (Qlik-Cli sends a list of such pairs); rules here read no
    # environment, so they are accepted and not used.
    environment_attributes: ShortText | list[ShortText] | None = None
    user_skip: int | None = Field(default=None, ge=0)
    user_take: int | None = Field(default=None, ge=0)
    resource_skip: int | None = Field(default=None, ge=0)
    resource_take: int | None = Field(default=None, ge=0)
    include_non_granting_rules: bool = False


# ---- answers -------------------------------------------------------------------------------


class SystemRuleCondensed(OutModel):
    """A license rule as the condensed list shows it."""

    id: str
    category: str
    subcategory: str
    type: str
    name: str
    rule: str | None
    resource_filter: str
    actions: int
    comment: str
    disabled: bool
    privileges: list[str] | None = None


class SystemRule(QrsEntity):
    """The SystemRule entity of an access group's license rule."""

    category: str
    subcategory: str
    type: str
    name: str
    rule: str | None
    resource_filter: str
    actions: int
    comment: str
    disabled: bool
    rule_context: int
    seed_id: str
    version: int
    tags: list[Any]


class SystemRuleList(RootModel[list[SystemRule]]):
    """The license rules in full."""


class SystemRuleCondensedList(RootModel[list[SystemRuleCondensed]]):
    """The license rules, condensed."""


class RuleApplication(OutModel):
    """Whether one rule grants one user one access group."""

    user_id: str = Field(alias="userID")
    resource_id: str = Field(alias="resourceID")
    rule_id: str = Field(alias="ruleID")
    allowed: bool
    error_at: int = Field(alias="errorAt")
    error_message: str = Field(alias="errorMessage")
    evaluation_state: str = Field(alias="evaluationState")


class AuditResult(OutModel):
    """The license rule audit: the users, access groups and rules it evaluated, and each
    rule's application to each user."""

    users: dict[str, User]
    resources: dict[str, AccessGroup]
    rules: dict[str, SystemRule]
    rule_application: list[RuleApplication]
    schema_path: str
    privileges: list[str] | None = None
