"""The claims of a signed license definition (SPEC 2), named once: the backend builds this
model and signs its dump, and a site validates what it verified into it, so a claim of the
wrong type is refused, never a crash, and both sides read one shape."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic.alias_generators import to_camel

from shared.dates import MAX_TIMESTAMP

# Far above any allotment the catalog allows, small enough for every column it lands in.
MAX_UNITS = 2**31 - 1


def _iso_date(value: str) -> str:
    # Only YYYY-MM-DD: `date.fromisoformat` also takes forms the backend never writes.
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise ValueError("a date is YYYY-MM-DD")
    date.fromisoformat(value)
    return value


IsoDate = Annotated[StrictStr, AfterValidator(_iso_date)]
LicenseNumber = Annotated[StrictStr, Field(pattern=r"^[0-9]{16}$")]
Text = Annotated[StrictStr, Field(max_length=1000, pattern=r"^[^\x00]*$")]


# A NumericDate as the token verifier admits it: the backend writes integers only.
NumericDate = Annotated[StrictInt | StrictFloat, Field(ge=0, le=MAX_TIMESTAMP)]
# The version must fit the column a site keeps it in.
Version = Annotated[StrictInt, Field(ge=0, lt=2**31)]


class _Claims(BaseModel):
    # Unknown members are kept, not checked: a site stores the claims as they were signed.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )


class Allotment(_Claims):
    """Units of one access type."""

    name: StrictStr
    units: Annotated[StrictInt, Field(ge=0, le=MAX_UNITS)]


class OverageClaim(_Claims):
    """Which access types may be used beyond their allotment."""

    professional: StrictBool = False
    analyzer: StrictBool = False
    analyzer_time: StrictBool = False


class LicenseClaim(_Claims):
    """What a definition grants; unknown members are not checked, for forward compatibility."""

    number: LicenseNumber
    owner: Text = ""
    organization: Text = ""
    product: Text = ""
    valid_from: IsoDate | None = None
    valid_to: IsoDate | None = None
    blacklisted: StrictBool = False
    subscription: StrictBool = False
    elastic: StrictBool = False
    cloud_services: StrictBool = False
    overage: OverageClaim = OverageClaim()
    allotments: list[Allotment] = Field(max_length=64)

    def units(self, name: Literal["professional", "analyzer", "tokens", "analyzer_time"]) -> int:
        """Return the units allotted under `name`, 0 when none are."""
        return {a.name: a.units for a in self.allotments}.get(name, 0)


class DefinitionClaims(BaseModel):
    """The whole claim set of a signed definition: who signed it, for which license, when it
    holds, its version, and what it grants."""

    model_config = ConfigDict(extra="allow", frozen=True)

    iss: StrictStr
    sub: StrictStr
    aud: StrictStr | list[StrictStr]
    iat: NumericDate
    nbf: NumericDate
    exp: NumericDate
    jti: StrictStr
    ver: Version
    license: LicenseClaim

    def payload(self) -> dict[str, Any]:
        """Return the JSON object that is signed, members in their wire names and order."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
