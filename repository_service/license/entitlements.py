"""What a site may hand out, from a verified definition or a verified LEF."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Literal

from shared.dates import end_of_day
from shared.definition import DefinitionClaims
from shared.lef import LefContent

# The seat pools a license grants units in (token: login passes and user access).
Pool = Literal["professional", "analyzer", "token"]
POOLS: tuple[Pool, ...] = ("professional", "analyzer", "token")


@dataclass(frozen=True)
class Entitlements:
    """Totals, validity and flags in force on the site."""

    number: str
    owner: str
    organization: str
    product: str
    professional: int
    analyzer: int
    tokens: int
    analyzer_minutes: int
    valid_from: str | None
    valid_to: str | None
    blacklisted: bool = False
    subscription: bool = False
    elastic: bool = False
    cloud_services: bool = False
    overage_professional: bool = False
    overage_analyzer: bool = False
    overage_analyzer_time: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the stored form."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entitlements:
        """Read the stored form back."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def expired_at(self) -> datetime | None:
        """Return the end of validity: validTo is valid through 23:59:59 UTC of that day."""
        if not self.valid_to:
            return None
        return end_of_day(date.fromisoformat(self.valid_to))

    def is_expired(self, now: datetime) -> bool:
        """Tell whether the license's own validity has passed."""
        end = self.expired_at()
        return end is not None and now >= end


def from_definition(claims: DefinitionClaims) -> Entitlements:
    """Read entitlements from verified definition claims."""
    lic = claims.license
    return Entitlements(
        number=lic.number,
        owner=lic.owner,
        organization=lic.organization,
        product=lic.product,
        professional=lic.units("professional"),
        analyzer=lic.units("analyzer"),
        tokens=lic.units("tokens"),
        analyzer_minutes=lic.units("analyzer_time"),
        valid_from=lic.valid_from,
        valid_to=lic.valid_to,
        blacklisted=lic.blacklisted,
        subscription=lic.subscription,
        elastic=lic.elastic,
        cloud_services=lic.cloud_services,
        overage_professional=lic.overage.professional,
        overage_analyzer=lic.overage.analyzer,
        overage_analyzer_time=lic.overage.analyzer_time,
    )


def from_lef(content: LefContent) -> Entitlements:
    """Read entitlements from a verified LEF."""
    return Entitlements(
        number=content.serial,
        owner=content.owner,
        organization=content.organization,
        product=f"PRODUCTLEVEL {content.product_level}",
        professional=content.professional,
        analyzer=content.analyzer,
        tokens=content.tokens,
        analyzer_minutes=content.analyzer_minutes,
        valid_from=None,
        valid_to=content.valid_to.isoformat() if content.valid_to else None,
        overage_professional=content.overage,
        overage_analyzer=content.overage,
    )


def key_details(e: Entitlements) -> str:
    """Return the human summary of a license, one item a line."""
    number = " ".join(e.number[i : i + 4] for i in range(0, len(e.number), 4))
    lines = [
        f"License Number: {number}",
        f"Owner: {e.owner}",
        f"Organization: {e.organization}",
        f"Product: {e.product}",
        f"Valid From: {e.valid_from or '-'}",
        f"Valid To: {e.valid_to or 'no end date'}",
        f"Allotment professional:{e.professional};",
        f"Allotment analyzer:{e.analyzer};",
        f"Allotment tokens:{e.tokens};",
        f"Allotment analyzer_time:{e.analyzer_minutes};",
        f"Overage professional:{str(e.overage_professional).lower()};"
        f" analyzer:{str(e.overage_analyzer).lower()};"
        f" analyzerTime:{str(e.overage_analyzer_time).lower()};",
    ]
    if e.subscription:
        lines.append("Subscription: yes")
    if e.blacklisted:
        lines.append("Blacklisted: yes")
    return "\n".join(lines)
