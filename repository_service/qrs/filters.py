"""The QRS `filter` and `orderby` query parameters, applied to entities as JSON dicts.

Grammar (SPEC 4.1, 8.11):  expr := term ('or' term)* ; term := factor ('and' factor)* ;
factor := '(' expr ')' | field op value ; value := 'text' ('' escapes) | number | date | true
| false | null ; op := eq ne gt ge lt le so sw ew (so/sw/ew case-insensitive).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from shared.web.errors import ApiError

MAX_FILTER_LENGTH = 2000
MAX_DEPTH = 20

Predicate = Callable[[dict[str, Any]], bool]


class InvalidFilter(ApiError):
    status, code, message = 400, "InvalidFilter", "The filter is not valid."


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        '(?P<string>(?:[^']|'')*)' |
        (?P<word>[A-Za-z_][A-Za-z0-9_.]*) |
        (?P<literal>[0-9][0-9:.TZ+\-]*|-[0-9][0-9.]*)
    )""",
    re.VERBOSE,
)
_OPS = {"eq", "ne", "gt", "ge", "lt", "le", "so", "sw", "ew"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise InvalidFilter(details={"position": pos})
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "string":
            value = value.replace("''", "'")
        tokens.append(_Tok(kind, value))
        pos = match.end()
    return tokens


def _literal(tok: _Tok) -> Any:
    if tok.kind == "string":
        return tok.text
    lowered = tok.text.lower()
    if tok.kind == "word" and lowered in ("true", "false"):
        return lowered == "true"
    if tok.kind == "word" and lowered == "null":
        return None
    if tok.kind == "literal":
        try:
            return float(tok.text) if "." in tok.text and ":" not in tok.text else int(tok.text)
        except ValueError:
            return tok.text  # a date or timestamp, compared as ISO text
    raise InvalidFilter(f"Expected a value, found {tok.text!r}.")


def _compare(op: str, actual: Any, expected: Any) -> bool:
    # Text compares caseless with casefold(), not lower(): lower() depends on context (a Greek
    # final sigma), so 'aΣ' would not be found in 'xaΣx'; casefold() maps each character alone.
    if op in ("so", "sw", "ew"):
        if not isinstance(actual, str) or not isinstance(expected, str):
            return False
        a, e = actual.casefold(), expected.casefold()
        return e in a if op == "so" else a.startswith(e) if op == "sw" else a.endswith(e)
    if isinstance(actual, str) and isinstance(expected, str) and op in ("eq", "ne"):
        equal = actual.casefold() == expected.casefold()
        return equal if op == "eq" else not equal
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    try:
        if op == "gt":
            return bool(actual > expected)
        if op == "ge":
            return bool(actual >= expected)
        if op == "lt":
            return bool(actual < expected)
        return bool(actual <= expected)
    except TypeError:
        return False


class _Parser:
    def __init__(self, tokens: list[_Tok], fields: Collection[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.fields = fields

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise InvalidFilter("The filter ends too early.")
        self.pos += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "word" and tok.text.lower() == word:
            self.pos += 1
            return True
        return False

    def expr(self, depth: int) -> Predicate:
        if depth > MAX_DEPTH:
            raise InvalidFilter("The filter nests too deeply.")
        terms = [self.term(depth)]
        while self.keyword("or"):
            terms.append(self.term(depth))
        return terms[0] if len(terms) == 1 else (lambda e: any(t(e) for t in terms))

    def term(self, depth: int) -> Predicate:
        factors = [self.factor(depth)]
        while self.keyword("and"):
            factors.append(self.factor(depth))
        return factors[0] if len(factors) == 1 else (lambda e: all(f(e) for f in factors))

    def factor(self, depth: int) -> Predicate:
        tok = self.take()
        if tok.kind == "lparen":
            inner = self.expr(depth + 1)
            if self.take().kind != "rparen":
                raise InvalidFilter("Missing ')'.")
            return inner
        if tok.kind != "word":
            raise InvalidFilter(f"Expected a field name, found {tok.text!r}.")
        field = tok.text
        if field not in self.fields:
            raise InvalidFilter(f"Unknown field {field!r}.")
        op_tok = self.take()
        op = op_tok.text.lower()
        if op_tok.kind != "word" or op not in _OPS:
            raise InvalidFilter(f"Unknown operator {op_tok.text!r}.")
        expected = _literal(self.take())
        return lambda e: _compare(op, e.get(field), expected)


def parse_filter(text: str | None, fields: Collection[str]) -> Predicate:
    """Return a predicate for a QRS filter over the given top-level fields."""
    if text is None or not text.strip():
        return lambda e: True
    if len(text) > MAX_FILTER_LENGTH or "\x00" in text:
        raise InvalidFilter("The filter is too long or holds invalid characters.")
    parser = _Parser(_tokenize(text), fields)
    predicate = parser.expr(0)
    if parser.peek() is not None:
        raise InvalidFilter(f"Unexpected {parser.take().text!r}.")
    return predicate


def apply_orderby(
    items: Sequence[dict[str, Any]], orderby: str | None, fields: Collection[str]
) -> list[dict[str, Any]]:
    """Sort entities by `field [asc|desc]`; None values sort first."""
    if orderby is None or not orderby.strip():
        return list(items)
    parts = orderby.split()
    if len(parts) > 2 or parts[0] not in fields:
        raise InvalidFilter(
            "orderby must be 'field' or 'field desc' on a known field.", code="InvalidOrderBy"
        )
    descending = len(parts) == 2 and parts[1].lower() == "desc"
    if len(parts) == 2 and parts[1].lower() not in ("asc", "desc"):
        raise InvalidFilter("orderby direction must be asc or desc.", code="InvalidOrderBy")
    field = parts[0]

    def key(entity: dict[str, Any]) -> tuple[int, str, Any]:
        value = entity.get(field)
        if value is None:
            return (0, "", "")
        if isinstance(value, (bool, int, float)):
            # Compared as they are: int and float compare exactly, and an int beyond a
            # float's range (float() would raise OverflowError) still has its place.
            return (1, "n", value)
        return (1, "s", str(value).casefold())

    return sorted(items, key=key, reverse=descending)
