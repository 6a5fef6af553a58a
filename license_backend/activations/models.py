"""Activations as the admin API lists them."""

from __future__ import annotations

import uuid
from datetime import datetime

from shared.models import OutModel


def seen_key(number: str, installation_hex: str) -> str:
    """How a last-seen time waiting to be written is keyed, here and in the site index: one
    string (the garbage collector does not track dicts of strings)."""
    return f"{number}/{installation_hex}"


def seen_key_parts(key: str) -> tuple[str, str]:
    """The license number and installation hex a `seen_key` was made of."""
    number, _, installation_hex = key.partition("/")
    return number, installation_hex


class Activation(OutModel):
    """One installation a license is active at."""

    installation_id: uuid.UUID
    first_seen_at: datetime
    last_seen_at: datetime
    address: str


class ActivationPage(OutModel):
    """A page of a license's activations, oldest first."""

    items: list[Activation]
    next: str | None
