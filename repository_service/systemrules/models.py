"""System rules as the platform's QRS reads and writes them (license rules only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints

from shared.models import ApiModel, Name

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
