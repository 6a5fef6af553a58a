"""Property tests of the pure parts not covered elsewhere.

* The QRS `filter` / `orderby` parser (SPEC 4.1, 8.11): on any text it returns a predicate or
  raises `InvalidFilter`, never anything else (a malformed filter is a 400, never a 500);
  predicates never raise on any entity; the boolean identities hold; literals round-trip.
* LEF and JOSE (SPEC 2, 6): what tests/test_lef.py and tests/test_jose.py do not state yet —
  arbitrary text is refused with the module's own error, and deleting or inserting a
  character (they test replacing one) never yields an accepted, different content.

(The rule-expression properties live in tests/test_rules.py.)
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from license_backend.definitions.claims import definition_claims
from repository_service.license import entitlements
from repository_service.license.definition import claim_times
from repository_service.qrs.filters import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    InvalidFilter,
    Predicate,
    apply_orderby,
    parse_filter,
)
from shared import dates, jose, lef
from shared.definition import DefinitionClaims

FIELDS = frozenset({"name", "userId", "count", "createdDate", "flag", "tags"})
OPS = ("eq", "ne", "gt", "ge", "lt", "le", "so", "sw", "ew")

# ---- strategies --------------------------------------------------------------------------------

# Any JSON value an entity could hold, with the awkward ones made likely: huge integers (beyond
# a float), NaN and infinities, nested containers, text of any kind.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63), 10**400, -(10**400)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)
ENTITIES = st.fixed_dictionaries({}, optional={name: JSON for name in [*sorted(FIELDS), "other"]})
NO_NUL = st.characters(exclude_characters="\x00")
# Whitespace of every kind the tokenizer may meet between tokens.
WHITESPACE = st.text(st.sampled_from(" \t\n\r\x0b\x0c\x1c\xa0\u2003\u3000"), min_size=1, max_size=3)


def quote(value: str) -> str:
    """A filter string literal: single quotes, `''` for a quote."""
    return "'" + value.replace("'", "''") + "'"


VALUES = st.one_of(
    st.text(NO_NUL, max_size=8).map(quote),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["true", "FALSE", "null", "1.5", "-2.25", "0", "2026-01-01"]),
    st.sampled_from(["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00+01:00"]),
)
OPERATORS = st.sampled_from(OPS).flatmap(lambda op: st.sampled_from([op, op.upper()]))
CONDITIONS = st.tuples(st.sampled_from(sorted(FIELDS)), OPERATORS, VALUES).map(list)
KEYWORDS = st.sampled_from(["and", "or", "AND", "Or"])
# Well-formed filters, as token lists so that any whitespace can join them.
FILTERS = st.recursive(
    CONDITIONS,
    lambda inner: st.builds(
        lambda a, keyword, b: ["(", *a, ")", keyword, "(", *b, ")"], inner, KEYWORDS, inner
    ),
    max_leaves=4,
)
# Grammar-shaped token soup: every kind of token, well placed or not, plus near-misses.
SOUP_TOKENS = st.one_of(
    st.sampled_from(["(", ")", "and", "or", "AND", "oR", "not", *OPS, "EQ", "Sw"]),
    st.sampled_from([*sorted(FIELDS), "unknown", "user.name", "_", "a.b", "name_"]),
    st.sampled_from(["true", "false", "null", "None", "0", "-1", "-", "--1", "1.5", "1.2.3"]),
    st.sampled_from(["1e5", "0x10", "2026-01-01", "2026-01-01T00:00:00.000Z", "12:30", "+1"]),
    st.sampled_from(["''", "'a'", "'it''s'", "'", "'''", "'unterminated", '"x"', "é", "\x00"]),
    st.text(max_size=5).map(quote),
    st.text(max_size=3),
)


def text(tokens: list[str], gaps: list[str] | None = None) -> str:
    """Join tokens with the given whitespace runs (one space each by default)."""
    if gaps is None:
        return " ".join(tokens)
    return tokens[0] + "".join(gap + tok for gap, tok in zip(gaps, tokens[1:], strict=False))


def parse(filter_text: str) -> Predicate:
    return parse_filter(filter_text, FIELDS)


def depth_of(tokens: list[str]) -> int:
    depth = deepest = 0
    for tok in tokens:
        depth += (tok == "(") - (tok == ")")
        deepest = max(deepest, depth)
    return deepest


def parses_or_invalid(filter_text: str) -> Predicate | None:
    """Return the predicate, or None when the filter is refused, asserting that a refusal is an
    InvalidFilter (a 400 with its code) and never any other exception."""
    try:
        predicate = parse(filter_text)
    except InvalidFilter as error:
        assert (error.status, error.code) == (400, "InvalidFilter")
        return None
    assert callable(predicate)
    return predicate


def holds(predicate: Predicate, entity: dict[str, Any]) -> bool:
    result = predicate(entity)
    assert isinstance(result, bool)
    return result


# ---- filter: never anything but InvalidFilter --------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.text(), ENTITIES)
def test_arbitrary_text_parses_or_is_invalid_filter(
    filter_text: str, entity: dict[str, Any]
) -> None:
    predicate = parses_or_invalid(filter_text)
    if predicate is not None:
        holds(predicate, entity)


@settings(max_examples=200, deadline=None)
@given(st.lists(SOUP_TOKENS, max_size=25), st.data())
def test_token_soup_parses_or_is_invalid_filter(tokens: list[str], data: st.DataObject) -> None:
    gaps = data.draw(st.lists(st.sampled_from(["", " ", "  ", "\t", "\n"]), min_size=len(tokens)))
    predicate = parses_or_invalid(text(tokens, gaps) if tokens else "")
    if predicate is not None:
        for _ in range(3):
            holds(predicate, data.draw(ENTITIES))


@settings(max_examples=150, deadline=None)
@given(FILTERS, st.lists(ENTITIES, max_size=5))
def test_well_formed_filters_parse_and_never_raise_on_any_entity(
    tokens: list[str], entities: list[dict[str, Any]]
) -> None:
    assume(depth_of(tokens) <= MAX_DEPTH)
    predicate = parse(text(tokens))
    for entity in entities:
        holds(predicate, entity)


def test_limits() -> None:
    deep = "(" * MAX_DEPTH + "name eq 'a'" + ")" * MAX_DEPTH
    assert holds(parse(deep), {"name": "A"})
    with pytest.raises(InvalidFilter):
        parse("(" + deep + ")")
    long = " or ".join(["count eq 1"] * 140)
    assert len(long) <= MAX_FILTER_LENGTH
    assert holds(parse(long), {"count": 1})
    with pytest.raises(InvalidFilter):
        parse(long + " or count eq 2" * 200)
    for blank in (None, "", "  ", "\t\n"):
        assert holds(parse_filter(blank, FIELDS), {})


# ---- filter: meaning ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(FILTERS, FILTERS, ENTITIES)
def test_or_and_identities(a: list[str], b: list[str], entity: dict[str, Any]) -> None:
    assume(max(depth_of(a), depth_of(b)) < MAX_DEPTH)
    pa, pb = holds(parse(text(a)), entity), holds(parse(text(b)), entity)
    assert holds(parse(f"({text(a)}) or ({text(b)})"), entity) is (pa or pb)
    assert holds(parse(f"({text(a)}) and ({text(b)})"), entity) is (pa and pb)
    assert holds(parse(f"({text(a)}) OR ({text(b)})"), entity) is (pa or pb)
    assert holds(parse(f"({text(a)})"), entity) is pa
    assert holds(parse(f"({text(b)}) or ({text(a)})"), entity) is (pa or pb)


@settings(max_examples=150, deadline=None)
@given(CONDITIONS, CONDITIONS, CONDITIONS, ENTITIES)
def test_and_binds_tighter_than_or(
    a: list[str], b: list[str], c: list[str], entity: dict[str, Any]
) -> None:
    pa, pb, pc = (holds(parse(text(x)), entity) for x in (a, b, c))
    assert holds(parse(text([*a, "or", *b, "and", *c])), entity) is (pa or (pb and pc))
    assert holds(parse(text([*a, "and", *b, "or", *c])), entity) is ((pa and pb) or pc)


@settings(max_examples=150, deadline=None)
@given(FILTERS, st.data())
def test_any_whitespace_between_tokens_means_the_same(
    tokens: list[str], data: st.DataObject
) -> None:
    assume(depth_of(tokens) <= MAX_DEPTH)
    gaps = data.draw(st.lists(WHITESPACE, min_size=len(tokens) - 1, max_size=len(tokens) - 1))
    lead, trail = (
        data.draw(st.sampled_from(["", " ", "\t"])),
        data.draw(st.sampled_from(["", "\n"])),
    )
    spaced = parse(lead + text(tokens, gaps) + trail)
    canonical = parse(text(tokens))
    for _ in range(3):
        entity = data.draw(ENTITIES)
        assert holds(spaced, entity) is holds(canonical, entity)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(FIELDS)), VALUES, ENTITIES)
def test_ne_is_the_negation_of_eq(field: str, value: str, entity: dict[str, Any]) -> None:
    equal = holds(parse(f"{field} eq {value}"), entity)
    assert holds(parse(f"{field} ne {value}"), entity) is (not equal)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(FIELDS)), VALUES, ENTITIES)
def test_starts_or_ends_with_implies_contains(
    field: str, value: str, entity: dict[str, Any]
) -> None:
    contains = holds(parse(f"{field} so {value}"), entity)
    assert not holds(parse(f"{field} sw {value}"), entity) or contains
    assert not holds(parse(f"{field} ew {value}"), entity) or contains


@settings(max_examples=150, deadline=None)
@given(st.text(NO_NUL, max_size=20), st.text(NO_NUL, max_size=3))
@example("aΣ", "x")  # lower() would fold a final sigma differently inside 'xaΣx'
@example("Straße", "")
def test_string_literals_round_trip(value: str, suffix: str) -> None:
    """Any text, quoted with '' escapes, is read back exactly (case-insensitively)."""
    assert holds(parse(f"name eq {quote(value)}"), {"name": value})
    assert holds(parse(f"name so {quote(value)}"), {"name": suffix + value + suffix})
    assert holds(parse(f"name sw {quote(value)}"), {"name": value + suffix})
    assert holds(parse(f"name ew {quote(value)}"), {"name": suffix + value})
    if suffix:
        assert not holds(parse(f"name eq {quote(value)}"), {"name": value + suffix})


@settings(max_examples=150, deadline=None)
@given(st.integers(-(10**30), 10**30), st.integers(-(10**30), 10**30))
def test_integer_literals_compare_as_numbers(literal: int, actual: int) -> None:
    entity = {"count": actual}
    assert holds(parse(f"count eq {literal}"), entity) is (actual == literal)
    assert holds(parse(f"count gt {literal}"), entity) is (actual > literal)
    assert holds(parse(f"count le {literal}"), entity) is (actual <= literal)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["gt", "ge", "lt", "le"]),
    st.integers(-(10**6), 10**6),
    st.integers(0, 99),
    st.integers(-(10**9), 10**9) | st.floats(allow_nan=False, allow_infinity=True),
)
def test_order_operators_on_numbers(op: str, whole: int, hundredths: int, actual: float) -> None:
    literal = f"{whole}.{hundredths:02d}"
    expected = float(literal)
    result = holds(parse(f"count {op} {literal}"), {"count": actual})
    assert (
        result
        is {
            "gt": actual > expected,
            "ge": actual >= expected,
            "lt": actual < expected,
            "le": actual <= expected,
        }[op]
    )
    # For numbers (never NaN) gt and le, lt and ge are complements.
    opposite = {"gt": "le", "le": "gt", "lt": "ge", "ge": "lt"}[op]
    assert holds(parse(f"count {opposite} {literal}"), {"count": actual}) is (not result)


TIMESTAMPS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z")


@settings(max_examples=150, deadline=None)
@given(TIMESTAMPS, TIMESTAMPS)
def test_unquoted_timestamps_compare_in_time_order(literal: str, actual: str) -> None:
    """Entities show `createdDate` as ISO 8601 UTC with ms and `Z`; an unquoted timestamp in
    the same form compares in time order."""
    entity = {"createdDate": actual}
    assert holds(parse(f"createdDate gt {literal}"), entity) is (actual > literal)
    assert holds(parse(f"createdDate eq {literal}"), entity) is (actual == literal)
    day = literal[:10]
    later = (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
    assert holds(parse(f"createdDate ge {day} and createdDate lt {later}"), entity) is (
        actual[:10] == day
    )


def test_true_false_null_literals() -> None:
    assert holds(parse("flag eq true"), {"flag": True})
    assert holds(parse("flag eq FALSE"), {"flag": False})
    assert holds(parse("name eq null"), {})
    assert holds(parse("name ne null"), {"name": "x"})


@pytest.mark.parametrize(
    "bad",
    [
        "name",
        "name eq",
        "eq 'a'",
        "name eq 'a' and",
        "name eq 'a' or or name eq 'b'",
        "(name eq 'a'",
        "name eq 'a')",
        "()",
        "name eq 'unterminated",
        "name xx 'a'",
        "name eq (",
        "name eq name",
        "unknown eq 'a'",
        "name eq 'a' name eq 'b'",
        "name eq 'a\x00'",
        "name eq 1e5",
        'name eq "a"',
        "x" * (MAX_FILTER_LENGTH + 1),
    ],
)
def test_malformed_filters_are_invalid(bad: str) -> None:
    with pytest.raises(InvalidFilter):
        parse(bad)


# ---- orderby -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.text(max_size=20)
    | st.builds(
        lambda f, d: f"{f} {d}".strip(),
        st.sampled_from([*sorted(FIELDS), "unknown"]),
        st.sampled_from(["", "asc", "DESC", "desc x", "up"]),
    ),
    st.lists(ENTITIES, max_size=6),
)
def test_orderby_sorts_or_is_invalid_never_raises(
    orderby: str, entities: list[dict[str, Any]]
) -> None:
    try:
        ordered = apply_orderby(entities, orderby, FIELDS)
    except InvalidFilter as error:
        assert error.status == 400 and error.code in ("InvalidFilter", "InvalidOrderBy")
        return
    assert sorted(map(id, ordered)) == sorted(map(id, entities))  # a permutation


NUMBERS = st.integers(-(10**400), 10**400) | st.floats(allow_nan=False) | st.none()


@settings(max_examples=150, deadline=None)
@given(st.lists(NUMBERS, max_size=8), st.booleans())
def test_orderby_orders_numbers_of_any_size(values: list[Any], descending: bool) -> None:
    entities = [{"count": v} for v in values]
    ordered = [
        e["count"] for e in apply_orderby(entities, "count desc" if descending else "count", FIELDS)
    ]
    nones = [v for v in ordered if v is None]
    numbers = [v for v in ordered if v is not None]
    assert len(nones) == values.count(None)
    assert ordered == (numbers + nones if descending else nones + numbers)
    assert numbers == sorted(numbers, reverse=descending)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=8))
def test_orderby_orders_text_case_insensitively(values: list[str]) -> None:
    ordered = [e["name"] for e in apply_orderby([{"name": v} for v in values], "name", FIELDS)]
    assert [v.casefold() for v in ordered] == sorted(v.casefold() for v in values)


# ---- LEF and JOSE: what their own tests do not state -------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KID = jose.kid_for(KEY.public_key())
CONTROL = "12345"
CONTENT = lef.LefContent(
    serial="1234567890123456",
    owner="Ada Lovelace",
    organization="Analytical Engines; Ltd",
    valid_to=None,
    professional=10,
    analyzer=20,
    tokens=300,
    analyzer_minutes=4000,
    overage=True,
)
LEF_TEXT = lef.write_lef(CONTENT, control=CONTROL, private_key=KEY, kid=KID)
LEF_KEYS = {KID: KEY.public_key()}
INSERTED = st.characters(codec="utf-8") | st.sampled_from(
    " \t\r\n;-_=+/0123456789AaZz\ufeff\x85\u2028"
)


def lef_outcome(changed: str) -> lef.LefContent | None:
    """The content a LEF verifies to, or None when it is refused with a LefError."""
    try:
        return lef.verify_lef(changed, control=CONTROL, serial=CONTENT.serial, keys=LEF_KEYS)
    except lef.LefError:
        return None


@settings(max_examples=150, deadline=None)
@given(st.text() | st.lists(st.sampled_from(LEF_TEXT.splitlines()), max_size=14).map("\n".join))
def test_lef_arbitrary_text_is_a_lef_error(garbage: str) -> None:
    """Text, or the real LEF's lines in any order and number: parsed or refused with a
    LefError, and never verified to anything but the real content."""
    try:
        lef.parse_lef(garbage)
    except lef.LefError:
        pass
    assert lef_outcome(garbage) in (None, CONTENT)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_lef_deleted_or_inserted_character_never_changes_accepted_content(
    data: st.DataObject,
) -> None:
    position = data.draw(st.integers(0, len(LEF_TEXT) - 1))
    if data.draw(st.booleans()):
        changed = LEF_TEXT[:position] + LEF_TEXT[position + 1 :]
    else:
        changed = LEF_TEXT[:position] + data.draw(INSERTED) + LEF_TEXT[position:]
    # Refused, or (line endings, trailing blanks, a BOM: SPEC 6 accepts those) the same content.
    assert lef_outcome(changed) in (None, CONTENT)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_lef_line_swapped_dropped_or_repeated_is_refused(data: st.DataObject) -> None:
    lines = LEF_TEXT.rstrip("\n").split("\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    j = data.draw(st.integers(0, len(lines) - 1).filter(lambda j: lines[j] != lines[i]))
    variants = {
        "drop": lines[:i] + lines[i + 1 :],
        "repeat": lines[: i + 1] + lines[i:],
        "swap": [
            lines[j] if k == i else lines[i] if k == j else line for k, line in enumerate(lines)
        ],
    }
    for changed in variants.values():
        assert lef_outcome("\n".join(changed) + "\n") is None


NOW = 1_700_000_000
TYP = jose.LICENSE_KEY_TYP
TOKEN_CLAIMS = {"iss": "http://lbs.test", "license": "1234567890123456", "iat": NOW}
TOKEN = jose.sign(TOKEN_CLAIMS, KEY, typ=TYP)
TOKEN_KEYS = {KID: KEY.public_key()}


def token_outcome(token: Any) -> dict[str, Any] | None:
    try:
        return jose.verify(token, TOKEN_KEYS, typ=TYP, now=NOW)
    except jose.TokenInvalid:
        return None


@settings(max_examples=150, deadline=None)
@given(
    st.text()
    | st.lists(st.sampled_from([*TOKEN.split("."), "", "e30", "W10"]), max_size=5).map(".".join)
)
def test_jose_arbitrary_text_is_token_invalid(garbage: str) -> None:
    assume(garbage != TOKEN)
    assert token_outcome(garbage) is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_jose_deleted_or_inserted_character_is_refused(data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(TOKEN) - 1))
    if data.draw(st.booleans()):
        changed = TOKEN[:position] + TOKEN[position + 1 :]
    else:
        changed = (
            TOKEN[:position] + data.draw(INSERTED | st.sampled_from("-_.=")) + TOKEN[position:]
        )
    assert changed != TOKEN
    assert token_outcome(changed) is None


def test_the_unchanged_lef_and_token_verify() -> None:
    assert lef_outcome(LEF_TEXT) == CONTENT
    assert token_outcome(TOKEN) == TOKEN_CLAIMS


# ---- dates across the whole calendar (SPEC 9.3) ------------------------------------------------

# Every date the backend accepts, with the edges made likely.
DATES = st.dates() | st.sampled_from([date.min, date(1, 1, 2), date(9999, 12, 30), date.max])
# Any instant a definition could be issued at: the backend's clock, anywhere in its range.
INSTANTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 31)).map(
    lambda moment: moment.replace(tzinfo=UTC, microsecond=0)
)
TTLS = st.integers(1, 10**20) | st.sampled_from([1, 60, 30 * 24 * 3600, 10**18])
MOMENTS = st.datetimes(timezones=st.just(UTC)) | st.sampled_from([dates.LATEST])


def definition_row(valid_from: date, valid_to: date | None) -> dict[str, Any]:
    """A catalog row as the backend reads it (the claims read it by column name)."""
    return {
        "number": "1234567890123456",
        "owner": "Ada",
        "organization": "Example AB",
        "product": "Analytics",
        "valid_from": valid_from,
        "valid_to": valid_to,
        "blacklisted": False,
        "subscription": False,
        "elastic": False,
        "cloud_services": False,
        "overage_professional": False,
        "overage_analyzer": False,
        "overage_analyzer_time": False,
        "professional": 10,
        "analyzer": 20,
        "tokens": 5,
        "analyzer_minutes": 600,
        "ver": 1,
    }


@settings(max_examples=150, deadline=None)
@given(DATES, MOMENTS)
def test_end_of_day_is_after_every_instant_of_the_day(day: date, moment: datetime) -> None:
    end = dates.end_of_day(day)
    assert end.tzinfo is not None
    assert end > datetime.combine(day, time.max, tzinfo=UTC) or end == dates.LATEST
    if day < date.max:
        assert end == datetime.combine(day, time(0), tzinfo=UTC) + timedelta(days=1)
    # Comparing with any instant is defined: a validTo of any date is usable.
    assert (moment >= end) == (moment.date() > day) or end == dates.LATEST


@settings(max_examples=150, deadline=None)
@given(DATES, DATES | st.none(), INSTANTS, TTLS, MOMENTS)
def test_any_definition_the_backend_signs_is_usable_by_a_site(
    first: date, second: date | None, issued_at: datetime, ttl: int, moment: datetime
) -> None:
    valid_from, valid_to = (first, second) if second is None else sorted((first, second))
    row = definition_row(valid_from, valid_to)
    claims = definition_claims(
        row, issuer="http://lbs.test", issued_at=issued_at, ttl_seconds=ttl, jti=uuid.uuid4()
    )
    assert claims.iat <= claims.exp <= dates.MAX_TIMESTAMP
    token = jose.sign(claims.payload(), KEY, typ=jose.DEFINITION_TYP)
    verified = jose.verify(
        token,
        TOKEN_KEYS,
        typ=jose.DEFINITION_TYP,
        issuer="http://lbs.test",
        audience=row["number"],
        now=claims.iat,
    )
    definition = DefinitionClaims.model_validate(verified)
    assert definition == claims
    iat, exp = claim_times(definition)
    assert iat <= exp
    e = entitlements.Entitlements.from_json(entitlements.from_definition(definition).to_json())
    assert e.valid_to == (valid_to.isoformat() if valid_to else None)
    end = e.expired_at()
    assert end is None or end > datetime.combine(valid_to or date.min, time(0), tzinfo=UTC)
    assert e.is_expired(moment) == (end is not None and moment >= end)
    assert f"Valid To: {e.valid_to or 'no end date'}" in entitlements.key_details(e)


@settings(max_examples=100, deadline=None)
@given(DATES | st.none(), MOMENTS)
def test_any_lef_timelimit_is_usable_by_a_site(valid_to: date | None, moment: datetime) -> None:
    content = lef.LefContent(**{**CONTENT.__dict__, "valid_to": valid_to})
    text = lef.write_lef(content, control=CONTROL, private_key=KEY, kid=KID)
    verified = lef.verify_lef(text, control=CONTROL, serial=content.serial, keys=LEF_KEYS)
    assert verified.valid_to == valid_to
    e = entitlements.from_lef(verified)
    end = e.expired_at()
    assert (end is None) == (valid_to is None)
    assert e.is_expired(moment) == (end is not None and moment >= end)


TIME_VALUES = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([dates.MAX_TIMESTAMP, dates.MAX_TIMESTAMP + 1, 10**400, -1, 0, True]),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.none(),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["exp", "nbf", "iat"]), TIME_VALUES)
def test_any_time_claim_is_verified_or_token_invalid(name: str, value: Any) -> None:
    claims = {**TOKEN_CLAIMS, "iat": 0, name: value}
    header = {"alg": "EdDSA", "typ": TYP, "kid": KID}
    encoded = [
        jose._b64encode(json.dumps(part).encode()) for part in (header, claims)
    ]  # PyJWT would refuse to sign some of these values
    signing_input = ".".join(encoded)
    token = signing_input + "." + jose._b64encode(KEY.sign(signing_input.encode()))
    verified = token_outcome(token)
    if verified is not None:
        assert 0 <= verified[name] <= dates.MAX_TIMESTAMP
        dates.from_timestamp(verified[name])


@settings(max_examples=100, deadline=None)
@given(MOMENTS, st.floats(0, 1e300) | st.integers(0, 10**30))
def test_adding_seconds_never_overflows(start: datetime, seconds: float) -> None:
    later = dates.add_seconds(start, seconds)
    assert start <= later <= dates.LATEST
