"""License rule expressions (SPEC 4.6 and 8.22): parsing, matching, errors and properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repository_service.access.rules import (
    EVERYONE,
    MAX_DEPTH,
    MAX_LENGTH,
    Rule,
    RuleError,
    Subject,
    parse_rule,
)

ALICE = Subject("CORP", "alice", "Alice Smith", ("Sales", "Finance.EU"))
BOB = Subject("ext", "bob", "Bob", ())


def holds(rule: str, subject: Subject = ALICE) -> bool:
    """Parse `rule` and evaluate it for `subject`."""
    return parse_rule(rule).matches(subject)


def quote(value: str) -> str:
    """Write `value` as a rule string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- operators and fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('user.userDirectory = "CORP"', True),
        ('user.userDirectory = "ext"', False),
        ('user.userId = "alice"', True),
        ('user.userId = "alic"', False),
        ('user.name = "Alice Smith"', True),
        ('user.name = "Alice"', False),
        ('user.group = "Sales"', True),
        ('user.group = "Marketing"', False),
        ('user.userDirectory != "CORP"', False),
        ('user.userId != "bob"', True),
        ('user.name != "Alice Smith"', False),
        ('user.userId like "al*"', True),
        ('user.userId like "*ce"', True),
        ('user.userId like "b*"', False),
        ('user.name like "* Smith"', True),
        ('user.group like "Fin*"', True),
        ('user.group like "HR*"', False),
    ],
)
def test_each_operator_and_field(rule: str, expected: bool) -> None:
    assert holds(rule) is expected


def test_group_equal_and_like_hold_if_any_group_matches() -> None:
    assert holds('user.group = "finance.eu"')
    assert holds('user.group like "*.EU"')
    assert not holds('user.group = "Finance"')


def test_group_not_equal_holds_if_no_group_matches() -> None:
    assert not holds('user.group != "Sales"')  # one of two groups matches
    assert holds('user.group != "HR"')


def test_user_without_groups() -> None:
    assert not holds('user.group = "x"', BOB)
    assert not holds('user.group like "*"', BOB)
    assert holds('user.group != "x"', BOB)


# ---- precedence and parentheses ------------------------------------------------------------

TRUE, FALSE = 'user.userId = "alice"', 'user.userId = "bob"'


def test_and_binds_tighter_than_or() -> None:
    assert holds(f"{TRUE} or {FALSE} and {FALSE}")  # TRUE or (FALSE and FALSE)
    assert holds(f"{FALSE} and {FALSE} or {TRUE}")  # (FALSE and FALSE) or TRUE
    assert not holds(f"{FALSE} and {TRUE} or {FALSE}")


def test_parentheses_override_precedence() -> None:
    assert not holds(f"({TRUE} or {FALSE}) and {FALSE}")
    assert holds(f"(({TRUE}))")
    assert holds(f"{FALSE} or ({TRUE} and ({FALSE} or {TRUE}))")


def test_whitespace_is_optional_around_punctuation() -> None:
    assert holds('(user.userId="alice")and(user.group!="HR")')
    assert holds('\tuser.userId  like\t"a*"  ')


# ---- strings, escapes and case -------------------------------------------------------------


def test_escapes() -> None:
    odd = Subject("CORP", 'say "hi"', "back\\slash", ('a"b\\c',))
    assert holds(r'user.userId = "say \"hi\""', odd)
    assert holds(r'user.name = "back\\slash"', odd)
    assert holds(r'user.group like "*\"b\\*"', odd)
    assert holds('user.userId = ""', Subject("", "", "", ()))


def test_keywords_fields_and_values_are_case_insensitive() -> None:
    assert holds(f"{FALSE} OR {TRUE}")
    assert holds(f"{TRUE} And {TRUE}")
    assert holds('user.userId LIKE "ALI*"')
    assert holds('user.USERID = "ALICE"')
    assert holds('USER.userdirectory = "corp"')
    assert holds('user.name != "ALICE SMITH"') is False
    assert holds('user.name = "straße"', Subject("", "", "STRASSE", ()))  # casefold, not lower


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("*", "", True),
        ("*", "anything at all", True),
        ("", "", True),
        ("", "x", False),
        ("a*b*", "ab", True),
        ("a*b*", "aXXbYY", True),
        ("a*b*", "ba", False),
        ("*a*", "bab", True),
        ("a**b", "ab", True),
        ("a*a", "a", False),
        ("a*a", "aa", True),
        ("*.com", "x.com", True),
        ("*.com", "xcom", False),  # `.` is literal
        ("a+", "a+", True),
        ("a+", "aa", False),  # `+` is literal
        ("f(x)", "F(X)", True),
        ("[ab]", "a", False),
        ("^a$", "^A$", True),
        ("a?", "ab", False),
        ("a\\\\b", "a\\b", True),
        ("line*", "line1\nline2", True),  # `*` spans newlines
    ],
)
def test_like_wildcards(pattern: str, value: str, expected: bool) -> None:
    rule = parse_rule(f'user.name like "{pattern}"')
    assert rule.matches(Subject("", "", value, ())) is expected


def test_like_with_many_stars_answers() -> None:
    # A naive regex backtracks for minutes here; its speed is not asserted, only its answer
    # (a hang would stall the suite).
    rule = parse_rule('user.name like "' + "*a" * 60 + '*b"')
    assert not rule.matches(Subject("", "", "a" * 3000, ()))
    assert rule.matches(Subject("", "", "a" * 60 + "b", ()))


def test_everyone_and_rule_values() -> None:
    assert EVERYONE.matches(ALICE) and EVERYONE.matches(BOB)
    assert isinstance(parse_rule(TRUE), Rule)
    assert parse_rule(TRUE).source == TRUE
    assert parse_rule(TRUE) == parse_rule(TRUE)


def test_matches_never_raises_on_a_malformed_subject() -> None:
    broken = Subject(None, None, None, None)  # type: ignore[arg-type]
    assert parse_rule(f'{TRUE} or user.group != "x"').matches(broken) is False


# ---- malformed rules -----------------------------------------------------------------------

NESTED_OK = "(" * MAX_DEPTH + TRUE + ")" * MAX_DEPTH
NESTED_TOO_DEEP = "(" * (MAX_DEPTH + 1) + TRUE + ")" * (MAX_DEPTH + 1)


def of_length(n: int) -> str:
    """A valid-looking rule exactly `n` characters long."""
    head = 'user.name = "'
    return head + "x" * (n - len(head) - 1) + '"'


@pytest.mark.parametrize(
    ("rule", "position"),
    [
        ('user.email = "x"', 0),
        ('userId = "x"', 0),
        ('user = "x"', 0),
        ('user.name = "x', 12),
        ('user.name "x"', 10),
        ("user.name", 9),
        ("user.name =", 11),
        ("user.name = x", 12),
        ('user.name == "x"', 11),
        ('user.name ! "x"', 10),
        ('user.name = "x" user.userId = "y"', 16),
        ('user.name = "x")', 15),
        ('user.name = "x" and', 19),
        ('and user.name = "x"', 0),
        ('user.name = "x" or or user.name = "y"', 19),
        ("()", 1),
        ('(user.name = "x"', 16),
        ('user.name = "a\\b"', 14),
        ('user.name = "x" & user.name = "y"', 16),
        ('user.name like "x" xor', 19),
        ("", 0),
        ("   \t", 0),
        (NESTED_TOO_DEEP, MAX_DEPTH),
        (of_length(MAX_LENGTH + 1), MAX_LENGTH),
        ('user.name = "a\x00"', 14),
        ('user.name = "a"\x0b', 15),
        ('user.name = "\x7f"', 13),
        ('user.name = "\x85"', 13),
    ],
)
def test_malformed_rules_are_invalid_rule_errors(rule: str, position: int) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(rule)
    error = caught.value
    assert (error.status, error.code) == (400, "InvalidRule")
    assert error.details == {"position": position}
    assert f"at position {position}" in error.message


def test_rules_may_span_lines_as_in_the_platforms_rule_editor() -> None:
    rule = parse_rule(
        '((user.userDirectory="CORP"\r\n  and user.group="Sales")\n or user.name like "x*")'
    )
    assert rule.matches(Subject("corp", "a", "a", ("SALES",)))
    assert rule.matches(Subject("other", "b", "xavier", ()))
    assert not rule.matches(Subject("corp", "a", "a", ()))


def test_limits_are_inclusive() -> None:
    assert holds(NESTED_OK)
    assert len(of_length(MAX_LENGTH)) == MAX_LENGTH
    parse_rule(of_length(MAX_LENGTH))


def test_non_string_is_a_rule_error() -> None:
    with pytest.raises(RuleError):
        parse_rule(None)  # type: ignore[arg-type]


# ---- properties ----------------------------------------------------------------------------

FIELD_NAMES = ["userDirectory", "userId", "name", "group"]
OPS = ["=", "!=", "like", "LIKE"]
safe_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
small_text = st.text("aAbB*.ß", max_size=6)

subjects = st.builds(
    Subject,
    user_directory=small_text,
    user_id=small_text,
    name=safe_text,
    groups=st.lists(small_text, max_size=3).map(tuple),
)

conditions = st.builds(
    lambda f, op, v: f"user.{f} {op} {quote(v)}",
    st.sampled_from(FIELD_NAMES),
    st.sampled_from(OPS),
    st.one_of(small_text, safe_text),
)


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Join two rules with and/or, parenthesised."""
    return st.builds(
        lambda a, kw, b: f"({a}) {kw} ({b})",
        inner,
        st.sampled_from(["and", "or", "AND", "Or"]),
        inner,
    )


rules = st.recursive(conditions, _combine, max_leaves=8)

WORDS = ["user.userDirectory", "user.userId", "user.name", "user.group", "user.email", "user"]
PUNCTUATION = ["=", "!=", "==", "!", "like", "and", "or", "AND", "(", ")", '"', "\\", '\\"']
grammar_tokens = st.one_of(st.sampled_from(WORDS + PUNCTUATION), safe_text.map(quote))


def parses_or_rule_error(text: str) -> None:
    """Assert parse_rule returns a Rule or raises RuleError, and nothing else."""
    try:
        rule = parse_rule(text)
    except RuleError as error:
        assert error.status == 400 and error.code == "InvalidRule"
        assert isinstance(error.details["position"], int)
    else:
        assert isinstance(rule, Rule)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_parses_or_is_a_rule_error(text: str) -> None:
    parses_or_rule_error(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(grammar_tokens, max_size=20), st.sampled_from([" ", "", "\t"]))
def test_token_soup_parses_or_is_a_rule_error(tokens: list[str], sep: str) -> None:
    parses_or_rule_error(sep.join(tokens))


@settings(max_examples=200, deadline=None)
@given(rules, rules, subjects)
def test_and_or_identities(a: str, b: str, s: Subject) -> None:
    ra, rb = parse_rule(a).matches(s), parse_rule(b).matches(s)
    assert isinstance(ra, bool) and isinstance(rb, bool)
    assert parse_rule(f"({a}) or ({b})").matches(s) == (ra or rb)
    assert parse_rule(f"({a}) and ({b})").matches(s) == (ra and rb)
    assert parse_rule(f"{a} OR {b}").matches(s) == (ra or rb)  # `or` binds loosest


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIELD_NAMES), small_text, subjects)
def test_not_equal_is_the_negation_of_equal(field: str, value: str, s: Subject) -> None:
    equal = parse_rule(f"user.{field} = {quote(value)}").matches(s)
    assert parse_rule(f"user.{field} != {quote(value)}").matches(s) is (not equal)


@settings(max_examples=200, deadline=None)
@given(small_text, small_text)
def test_like_agrees_with_a_plain_backtracking_regex(pattern: str, value: str) -> None:
    plain = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    expected = re.fullmatch(plain, value, re.IGNORECASE | re.DOTALL) is not None
    rule = parse_rule(f"user.name like {quote(pattern)}")
    assert rule.matches(Subject("", "", value, ())) is expected
