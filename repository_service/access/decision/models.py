"""Bodies and answer of the access requests the proxy makes."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from repository_service.users.models import Identity
from shared.models import ApiModel, OutModel

_LENIENT = ConfigDict(**{**ApiModel.model_config, "extra": "ignore"})


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


class AccessTypeResult(OutModel):
    """The decision on a session's access, as the proxy reads it."""

    access_granted: bool
    access_type: int
    access_type_result_code: int
    duration: str | None
    allocation_id: str | None = None
