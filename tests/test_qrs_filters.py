"""The QRS filter language as the platform documents it (SPEC 9.4): case-insensitive field
names, GUIDs quoted or not, one level into sub-objects and lists, `not`, parentheses, `null`."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repository_service.qrs.filters import InvalidFilter, apply_orderby, parse_filter

GUID = "6D2E3C1A-0B4F-4F7E-9C3D-2A1B0C9D8E7F"
FIELDS = ("id", "name", "userDirectory", "roles", "inactive", "user", "attributes", "count")
ALICE: dict[str, Any] = {
    "id": GUID.lower(),
    "name": "Alice",
    "userDirectory": "CORP",
    "roles": ["RootAdmin", "AuditAdmin"],
    "inactive": False,
    "user": {"userId": "alice", "userDirectory": "CORP", "name": "Alice"},
    "attributes": [{"attributeType": "group", "attributeValue": "Sales"}],
    "count": 3,
}
BOB: dict[str, Any] = {
    "id": "0f0f0f0f-0000-0000-0000-000000000000",
    "name": "Bob",
    "userDirectory": None,
    "roles": [],
    "inactive": True,
    "user": None,
    "attributes": [],
    "count": 10,
}


def matches(text: str) -> list[str]:
    predicate = parse_filter(text, FIELDS)
    return [e["name"] for e in (ALICE, BOB) if predicate(e)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Name eq 'Alice'", ["Alice"]),
        ("NAME eq 'alice'", ["Alice"]),
        (f"id eq {GUID}", ["Alice"]),
        (f"Id eq '{GUID.lower()}'", ["Alice"]),
        (f"id ne {GUID}", ["Bob"]),
        ("user.userId eq 'alice'", ["Alice"]),
        ("User.UserID eq 'ALICE'", ["Alice"]),
        ("user eq null", ["Bob"]),
        ("userDirectory eq null", ["Bob"]),
        ("userDirectory ne null", ["Alice"]),
        ("not (name eq 'Alice')", ["Bob"]),
        ("not name eq 'Alice' and inactive eq true", ["Bob"]),
        ("(name sw 'a' or name ew 'B') and count gt 2", ["Alice", "Bob"]),
        ("name so 'LIC' or count ge 10", ["Alice", "Bob"]),
        ("count lt 10 and count le 3", ["Alice"]),
        ("roles eq 'rootadmin'", ["Alice"]),
        ("roles ne 'RootAdmin'", ["Bob"]),
        ("attributes.attributeValue eq 'Sales'", ["Alice"]),
        ("name eq 'Alice' or name eq 'Bob' and inactive eq false", ["Alice"]),
    ],
)
def test_the_platforms_filters_select_what_they_say(text: str, expected: list[str]) -> None:
    assert matches(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "nickname eq 'x'",  # unknown field
        "name.first eq 'x'",  # name is not a sub-object
        "user.a.b eq 'x'",  # two levels
        "name eq",  # no value
        "not",  # nothing negated
        "(name eq 'x'",  # unbalanced
        "name like 'x'",  # not a filter operator
        "id eq 6D2E3C1A-0B4F",  # a broken GUID
    ],
)
def test_malformed_filters_are_invalid(text: str) -> None:
    with pytest.raises(InvalidFilter):
        parse_filter(text, FIELDS)


def test_orderby_field_names_are_case_insensitive() -> None:
    ordered = apply_orderby([BOB, ALICE], "NAME desc", FIELDS)
    assert [e["name"] for e in ordered] == ["Bob", "Alice"]


ENTITY = st.fixed_dictionaries(
    {
        "name": st.text(max_size=6),
        "count": st.integers(-5, 5),
        "inactive": st.booleans(),
        "user": st.none() | st.fixed_dictionaries({"userId": st.text(max_size=4)}),
    }
)
CONDITION = st.sampled_from(
    ["name eq 'a'", "count gt 0", "inactive eq true", "user.userId sw 'a'", "user eq null"]
)


@settings(max_examples=200, deadline=None)
@given(ENTITY, CONDITION, CONDITION)
def test_not_and_de_morgan_hold(entity: dict[str, Any], a: str, b: str) -> None:
    def value(text: str) -> bool:
        return parse_filter(text, FIELDS)(entity)

    assert value(f"not ({a})") is not value(a)
    assert value(f"not ({a} and {b})") == value(f"not ({a}) or not ({b})")
    assert value(f"NOT ({a} OR {b})") == value(f"(not {a}) and (not {b})")


@settings(max_examples=200, deadline=None)
@given(st.uuids(), st.booleans(), st.booleans())
def test_a_guid_matches_quoted_or_not_in_any_case(
    value: uuid.UUID, upper: bool, quoted: bool
) -> None:
    text = str(value).upper() if upper else str(value)
    literal = f"'{text}'" if quoted else text
    predicate = parse_filter(f"id eq {literal}", FIELDS)
    assert predicate({"id": str(value)})
    other = uuid.UUID(int=value.int ^ 1)
    assert not predicate({"id": str(other)})
