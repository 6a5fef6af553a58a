"""Users as the QRS API reads and writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, RootModel, StringConstraints

from repository_service.qrs.models import QrsEntity
from shared.models import ApiModel, Name, OutModel

Role = Literal[
    "RootAdmin", "DeploymentAdmin", "AuditAdmin", "ContentAdmin", "SecurityAdmin", "ProxyService"
]
Identity = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
AttributeText = Annotated[str, StringConstraints(max_length=255, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Attribute(ApiModel):
    """A user attribute such as a group membership."""

    attribute_type: AttributeText
    attribute_value: AttributeText


class UserCreate(ApiModel):
    """Body of `POST /qrs/user`."""

    model_config = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})

    user_directory: Identity
    user_id: Identity
    name: Name | None = None
    roles: list[Role] = Field(default_factory=list, max_length=10)
    attributes: list[Attribute] = Field(default_factory=list, max_length=500)
    inactive: bool = False


class UserUpdate(ApiModel):
    """Body of `PUT /qrs/user/{id}`: id and modifiedDate, the rest optional."""

    model_config = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})

    id: str = Field(max_length=64)
    modified_date: datetime
    name: Name | None = None
    roles: list[Role] | None = Field(default=None, max_length=10)
    attributes: list[Attribute] | None = Field(default=None, max_length=500)
    inactive: bool | None = None


# ---- answers -------------------------------------------------------------------------------


class UserAttribute(OutModel):
    """A user attribute as stored."""

    attribute_type: str
    attribute_value: str


class User(QrsEntity):
    """The User entity."""

    user_directory: str
    user_id: str
    name: str
    roles: list[str]
    attributes: list[UserAttribute]
    inactive: bool
    user_directory_connector_name: str
    removed_externally: bool
    blacklisted: bool
    delete_prohibited: bool
    custom_properties: list[Any]
    tags: list[Any]


class UserCondensed(OutModel):
    """A user as the condensed list shows it."""

    id: str
    user_directory: str
    user_id: str
    name: str
    privileges: list[str] | None = None


class UserList(RootModel[list[User]]):
    """The users in full."""


class UserCondensedList(RootModel[list[UserCondensed]]):
    """The users, condensed."""
