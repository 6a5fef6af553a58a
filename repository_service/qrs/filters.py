"""The QRS `filter` and `orderby` query parameters, applied to entities as JSON dicts.

The language as the platform documents it (SPEC 4.1, 8.11, 9.4), shared by every collection:

    expr   := term ('or' term)*
    term   := factor ('and' factor)*
    factor := 'not' factor | '(' expr ')' | field op value
    field  := name | name '.' name          (case-insensitive; one level into a sub-object)
    op     := eq ne gt ge lt le so sw ew    (so = contains, sw = starts with, ew = ends with)
    value  := 'text' ('' escapes) | GUID | number | date | true | false | null

Text compares case-insensitively. A field that holds a list (roles, attributes) holds when any
of its elements does, and `ne` when none equals the value.
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


_HEX = "[0-9A-Fa-f]"
_TOKEN = re.compile(
    rf"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        '(?P<string>(?:[^']|'')*)' |
        (?P<guid>{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})(?![\w-]) |
        (?P<word>[A-Za-z_@][A-Za-z0-9_.@]*) |
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
    if tok.kind in ("string", "guid"):
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
    if isinstance(actual, str) and isinstance(expected, str):
        a, e = actual.casefold(), expected.casefold()
        actual, expected = a, e
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


def _lookup(value: Any, key: str) -> Any:
    """Return the member `key` of a JSON object, matching its name case-insensitively."""
    if not isinstance(value, dict):
        return None
    if key in value:
        return value[key]
    folded = key.casefold()
    for name, member in value.items():
        if name.casefold() == folded:
            return member
    return None


def _condition(path: tuple[str, ...], op: str, expected: Any) -> Predicate:
    """Build the test of one `field op value`, reaching one level into sub-objects and lists."""

    def holds(actual: Any) -> bool:
        if isinstance(actual, list):
            if op == "ne":
                return not any(_compare("eq", item, expected) for item in actual)
            return any(_compare(op, item, expected) for item in actual)
        return _compare(op, actual, expected)

    head = path[0]
    if len(path) == 1:
        return lambda e: holds(e.get(head))
    sub = path[1]

    def nested(e: dict[str, Any]) -> bool:
        outer = e.get(head)
        if isinstance(outer, list):
            values = [_lookup(item, sub) for item in outer]
            if op == "ne":
                return not any(_compare("eq", v, expected) for v in values)
            return any(_compare(op, v, expected) for v in values)
        return holds(_lookup(outer, sub))

    return nested


def _field_index(fields: Collection[str]) -> dict[str, str]:
    return {f.casefold(): f for f in fields}


class _Parser:
    def __init__(self, tokens: list[_Tok], fields: Collection[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.fields = _field_index(fields)

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
        if self.keyword("not"):
            if depth > MAX_DEPTH:
                raise InvalidFilter("The filter nests too deeply.")
            inner = self.factor(depth + 1)
            return lambda e: not inner(e)
        tok = self.take()
        if tok.kind == "lparen":
            inner = self.expr(depth + 1)
            if self.take().kind != "rparen":
                raise InvalidFilter("Missing ')'.")
            return inner
        if tok.kind != "word":
            raise InvalidFilter(f"Expected a field name, found {tok.text!r}.")
        path = self.field(tok.text)
        op_tok = self.take()
        op = op_tok.text.lower()
        if op_tok.kind != "word" or op not in _OPS:
            raise InvalidFilter(f"Unknown operator {op_tok.text!r}.")
        return _condition(path, op, _literal(self.take()))

    def field(self, name: str) -> tuple[str, ...]:
        parts = name.split(".")
        if len(parts) > 2 or not all(parts):
            raise InvalidFilter(f"Unknown field {name!r} (one level of nesting at most).")
        known = self.fields.get(name.casefold()) or self.fields.get(parts[0].casefold())
        if known is None or (len(parts) == 2 and "." not in known and known not in NESTED):
            raise InvalidFilter(f"Unknown field {name!r}.")
        if "." in known:
            return tuple(known.split("."))
        return (known, *parts[1:])


# Fields whose values are objects or lists of objects, into which a filter may reach one level
# with any member name (`user.userId`, `attributes.attributeValue`, `tags.name`).
NESTED = frozenset({"user", "attributes", "tags", "customProperties"})


def parse_filter(text: str | None, fields: Collection[str]) -> Predicate:
    """Return a predicate for a QRS filter over the given fields."""
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
    """Sort entities by `field [asc|desc]` (field name case-insensitive); None values first."""
    if orderby is None or not orderby.strip():
        return list(items)
    parts = orderby.split()
    field = _field_index(fields).get(parts[0].casefold())
    if len(parts) > 2 or field is None:
        raise InvalidFilter(
            "orderby must be 'field' or 'field desc' on a known field.", code="InvalidOrderBy"
        )
    descending = len(parts) == 2 and parts[1].lower() == "desc"
    if len(parts) == 2 and parts[1].lower() not in ("asc", "desc"):
        raise InvalidFilter("orderby direction must be asc or desc.", code="InvalidOrderBy")

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
