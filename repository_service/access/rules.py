"""License rules: `user.<field> <op> "<value>"` joined by and/or/parentheses (SPEC 4.6, 8.22).

This is the platform's license rule syntax too (`((user.name like "*"))`,
`user.group = "Sales"`), so a rule given as a system rule (SPEC 9.4) is stored as it is."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

from shared.web.errors import ApiError

MAX_LENGTH = 4000
MAX_DEPTH = 32
FIELDS = {"userdirectory": "user_directory", "userid": "user_id", "name": "name", "group": "groups"}
# Category Cc, except tab and line breaks: whitespace, as in rules written in the platform's
# multi-line rule editor.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACE = " \t\r\n"
_WORD = re.compile(r'[^ \t\r\n()"=!]+')


class RuleError(ApiError):
    """A rule that does not parse; the message says what is wrong and where."""

    status, code, message = 400, "InvalidRule", "The rule is not valid."


@dataclass(frozen=True)
class Subject:
    """The user a rule is evaluated for."""

    user_directory: str
    user_id: str
    name: str
    groups: tuple[str, ...]


Test = Callable[[Subject], bool]


@dataclass(frozen=True)
class Rule:
    """A parsed rule: its source text and the compiled test."""

    source: str
    test: Test = field(repr=False, compare=False)

    def matches(self, subject: Subject) -> bool:
        """Tell whether the rule holds for `subject`."""
        try:
            return self.test(subject)
        except Exception:  # the hot path must never fail; a malformed subject matches nothing
            return False


EVERYONE = Rule("", lambda s: True)
NOBODY = Rule("", lambda s: False)


def subject_of(
    user_directory: str, user_id: str, name: str, attributes: list[dict[str, Any]]
) -> Subject:
    """Return the rule subject of a stored user: its group attributes become `user.group`."""
    groups = tuple(
        str(a.get("attributeValue", ""))
        for a in attributes
        if str(a.get("attributeType", "")).lower() == "group"
    )
    return Subject(user_directory, user_id, name, groups)


class _Token(NamedTuple):
    kind: str  # "(", ")", "op", "str", "word" or "end"
    value: str
    pos: int


def _fail(what: str, pos: int) -> RuleError:
    """Build a RuleError that names the position."""
    return RuleError(f"{what} at position {pos}.", details={"position": pos})


def _describe(tok: _Token) -> str:
    """Name a token for an error message."""
    if tok.kind == "end":
        return "the end of the rule"
    return f"the string {tok.value!r}" if tok.kind == "str" else repr(tok.value)


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read the quoted string opening at `start`; return its value and the index after it."""
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        c = text[pos]
        if c == '"':
            return "".join(out), pos + 1
        if c == "\\":
            escaped = text[pos + 1 : pos + 2]
            if escaped not in ('"', "\\"):
                raise _fail('Unknown escape (only \\" and \\\\ are allowed)', pos)
            c, pos = escaped, pos + 1
        out.append(c)
        pos += 1
    raise _fail("Unterminated string starting", start)


def _tokenize(text: str) -> list[_Token]:
    """Split a rule into tokens, ending with an `end` token."""
    tokens: list[_Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _SPACE:
            pos += 1
        if pos == len(text):
            tokens.append(_Token("end", "", pos))
            return tokens
        c = text[pos]
        if c in "()":
            tokens.append(_Token(c, c, pos))
            pos += 1
        elif c == "=" or text.startswith("!=", pos):
            op = "=" if c == "=" else "!="
            tokens.append(_Token("op", op, pos))
            pos += len(op)
        elif c == '"':
            value, end = _read_string(text, pos)
            tokens.append(_Token("str", value, pos))
            pos = end
        elif word := _WORD.match(text, pos):
            tokens.append(_Token("word", word.group(), pos))
            pos = word.end()
        else:
            raise _fail(f"Unexpected character {c!r}", pos)


def _like(value: str) -> re.Pattern[str]:
    """Compile a `like` value: `*` matches any run of characters, everything else is literal."""
    first, *rest = value.split("*")
    if not rest:
        return re.compile(re.escape(first), re.IGNORECASE | re.DOTALL)
    # Each middle piece is taken at its first occurrence and never retried (atomic group):
    # leftmost is always best for `*`-only patterns, and it keeps many stars from backtracking.
    middle = "".join(f"(?>.*?{re.escape(piece)})" for piece in rest[:-1] if piece)
    pattern = f"{re.escape(first)}{middle}.*{re.escape(rest[-1])}"
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


def _matcher(op: str, value: str) -> Callable[[str], bool]:
    """Build the case-insensitive comparison of one attribute value with `value`."""
    if op == "like":
        pattern = _like(value)
        return lambda actual: pattern.fullmatch(actual) is not None
    folded = value.casefold()
    return lambda actual: actual.casefold() == folded


def _condition(attr: str, op: str, value: str) -> Test:
    """Build the test for one `user.<field> <op> "<value>"`."""
    hit = _matcher(op, value)
    if attr == "groups":
        if op == "!=":  # "in none of the groups": the exact negation of `=`
            return lambda s: not any(map(hit, s.groups))
        return lambda s: any(map(hit, s.groups))
    get = attrgetter(attr)
    if op == "!=":
        return lambda s: not hit(get(s))
    return lambda s: hit(get(s))


class _Parser:
    """Recursive descent: or-expression > and-expression > parenthesis or condition."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def next(self) -> _Token:
        """Consume and return the next token (the `end` token is never consumed)."""
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        """Consume the keyword `word` if it comes next."""
        tok = self.tokens[self.i]
        if tok.kind == "word" and tok.value.lower() == word:
            self.i += 1
            return True
        return False

    def any_of(self, depth: int) -> Test:
        """Parse `a or b or …`."""
        tests = [self.all_of(depth)]
        while self.keyword("or"):
            tests.append(self.all_of(depth))
        return tests[0] if len(tests) == 1 else (lambda s: any(t(s) for t in tests))

    def all_of(self, depth: int) -> Test:
        """Parse `a and b and …`."""
        tests = [self.atom(depth)]
        while self.keyword("and"):
            tests.append(self.atom(depth))
        return tests[0] if len(tests) == 1 else (lambda s: all(t(s) for t in tests))

    def atom(self, depth: int) -> Test:
        """Parse a parenthesised expression or one condition."""
        tok = self.next()
        if tok.kind == "(":
            if depth == MAX_DEPTH:
                raise _fail(f"Parentheses nest deeper than {MAX_DEPTH}", tok.pos)
            inner = self.any_of(depth + 1)
            close = self.next()
            if close.kind != ")":
                where = f"Expected ')' for the '(' at {tok.pos}, found {_describe(close)}"
                raise _fail(where, close.pos)
            return inner
        if tok.kind != "word" or not tok.value.lower().startswith("user."):
            raise _fail(f"Expected user.<field> or '(', found {_describe(tok)}", tok.pos)
        attr = FIELDS.get(tok.value[5:].lower())
        if attr is None:
            known = "user.userDirectory, user.userId, user.name or user.group"
            raise _fail(f"Unknown field {tok.value!r} (use {known})", tok.pos)
        op = self.next()
        if op.kind != "op" and not (op.kind == "word" and op.value.lower() == "like"):
            raise _fail(f"Expected =, != or like, found {_describe(op)}", op.pos)
        value = self.next()
        if value.kind != "str":
            raise _fail(f'Expected a "quoted" value, found {_describe(value)}', value.pos)
        return _condition(attr, op.value.lower(), value.value)


def parse_rule(text: str) -> Rule:
    """Parse a rule, or raise RuleError saying what is wrong and where."""
    if not isinstance(text, str):
        raise _fail("The rule must be a string", 0)
    if len(text) > MAX_LENGTH:
        raise _fail(f"The rule is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    if bad := _CONTROL.search(text):
        raise _fail(f"Control character {bad.group()!r}", bad.start())
    if not text.strip(_SPACE):
        raise _fail("The rule is empty", 0)
    parser = _Parser(_tokenize(text))
    test = parser.any_of(0)
    rest = parser.next()
    if rest.kind != "end":
        raise _fail(f"Unexpected {_describe(rest)}", rest.pos)
    return Rule(text, test)
