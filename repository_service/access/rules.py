"""License rules: `user.<field> <op> "<value>"` with and/or/parentheses (SPEC 4.6, 8.22)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.web.errors import ApiError

MAX_LENGTH = 4000
MAX_DEPTH = 32
FIELDS = {"userdirectory": "user_directory", "userid": "user_id", "name": "name", "group": "groups"}


class RuleError(ApiError):
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
    """A parsed rule."""

    source: str
    test: Test = field(repr=False, compare=False)

    def matches(self, subject: Subject) -> bool:
        """Tell whether the rule holds for `subject`."""
        try:
            return self.test(subject)
        except Exception:  # a rule never breaks the hot path
            return False


EVERYONE = Rule("", lambda s: True)

_TOKEN = re.compile(
    r'\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op>!=|=)|"(?P<str>(?:[^"\\]|\\.)*)"'
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise RuleError(f"Unexpected character at position {pos}.", details={"position": pos})
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value)
        out.append((kind, value, m.start(kind)))
        pos = m.end()
    return out


def _compare(op: str, value: str) -> Callable[[str], bool]:
    if op == "like":
        pattern = re.compile(
            "^" + ".*".join(re.escape(p) for p in value.split("*")) + "$",
            re.IGNORECASE | re.DOTALL,
        )
        return lambda actual: pattern.match(actual) is not None
    folded = value.casefold()
    return lambda actual: actual.casefold() == folded


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, what: str) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise RuleError(f"The rule ends where {what} was expected.")
        self.pos += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "word" and tok[1].lower() == word:
            self.pos += 1
            return True
        return False

    def expr(self, depth: int) -> Test:
        if depth > MAX_DEPTH:
            raise RuleError("The rule nests too deeply.")
        terms = [self.term(depth)]
        while self.keyword("or"):
            terms.append(self.term(depth))
        return terms[0] if len(terms) == 1 else (lambda s: any(t(s) for t in terms))

    def term(self, depth: int) -> Test:
        factors = [self.factor(depth)]
        while self.keyword("and"):
            factors.append(self.factor(depth))
        return factors[0] if len(factors) == 1 else (lambda s: all(f(s) for f in factors))

    def factor(self, depth: int) -> Test:
        kind, value, at = self.take("a condition")
        if kind == "lp":
            inner = self.expr(depth + 1)
            if self.take("')'")[0] != "rp":
                raise RuleError(f"Missing ')' for the '(' at position {at}.")
            return inner
        if kind != "word" or not value.lower().startswith("user."):
            raise RuleError(f"Expected user.<field> at position {at}.", details={"position": at})
        attr = FIELDS.get(value[5:].lower())
        if attr is None:
            raise RuleError(f"Unknown field {value!r} at position {at}.", details={"position": at})
        op_kind, op, op_at = self.take("an operator")
        op = op.lower()
        if not (op_kind == "op" or (op_kind == "word" and op == "like")):
            raise RuleError(f"Expected =, != or like at position {op_at}.")
        str_kind, text, str_at = self.take("a quoted value")
        if str_kind != "str":
            raise RuleError(f"Expected a quoted value at position {str_at}.")
        check = _compare("like" if op == "like" else "=", text)
        if attr == "groups":
            if op == "!=":
                return lambda s: not any(check(g) for g in s.groups)
            return lambda s: any(check(g) for g in s.groups)
        if op == "!=":
            return lambda s: not check(getattr(s, attr))
        return lambda s: check(getattr(s, attr))


def parse_rule(text: str) -> Rule:
    """Parse a rule, or raise RuleError saying what is wrong and where."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError("The rule is empty.")
    if len(text) > MAX_LENGTH:
        raise RuleError("The rule is too long.")
    if any(ord(c) < 32 and c not in " \t" or ord(c) == 127 for c in text):
        raise RuleError("The rule holds control characters.")
    parser = _Parser(_tokens(text))
    test = parser.expr(0)
    if parser.peek() is not None:
        raise RuleError(f"Unexpected {parser.peek()[1]!r} at position {parser.peek()[2]}.")  # type: ignore[index]
    return Rule(text, test)
