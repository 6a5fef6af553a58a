"""The License Enabler File (SPEC 6, 8.8): write, parse, and verify signature and check code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# Bounds on hostile input: a real LEF is about a dozen short lines.
MAX_LEF_BYTES = 64 * 1024
MAX_LINES = 200
# Counts end up in int4 columns.
MAX_COUNT = 2**31 - 1

_DIGITS = re.compile(r"[0-9]{1,10}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CONTROL = re.compile(r"[0-9]{5}")
_CHECK_CODE = re.compile(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){4}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_NAME_SUFFIX = ";;;"
_KNOWN_TAGS = frozenset(
    {
        "PRODUCTLEVEL",
        "PROFESSIONAL",
        "ANALYZER",
        "TOKENS",
        "ANALYZER_TIME",
        "TIMELIMIT",
        "OVERAGE",
        "SIGNATURE",
    }
)


class LefError(Exception):
    """A LEF that cannot be written or used; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LefContent:
    """What a LEF grants."""

    serial: str
    owner: str
    organization: str
    valid_to: date | None
    professional: int
    analyzer: int
    tokens: int
    analyzer_minutes: int
    overage: bool
    product_level: int = 50
    extra_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedLef:
    """A LEF split into its content, its signature and its check code."""

    content: LefContent
    kid: str
    signature: bytes
    signed_text: str
    check_code: str
    lines_for_check: tuple[str, ...]


def normalize_serial(serial: str) -> str:
    """Remove all whitespace from `serial` and require 16 ASCII digits."""
    compact = "".join(str(serial).split())
    if not (len(compact) == 16 and compact.isascii() and compact.isdigit()):
        raise LefError("serial must be 16 digits")
    return compact


def format_serial(serial: str) -> str:
    """Return `serial` in groups of four digits."""
    compact = normalize_serial(serial)
    return " ".join(compact[i : i + 4] for i in range(0, 16, 4))


def check_code_for(control: str, lines_above_check: Sequence[str]) -> str:
    """Return the check code binding `lines_above_check` to `control`."""
    data = (control + "\n" + "\n".join(lines_above_check)).encode("utf-8")
    code = base64.b32encode(hashlib.sha256(data).digest()).decode("ascii")[:20]
    return "-".join(code[i : i + 4] for i in range(0, 20, 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode canonical unpadded base64url, so that one signature has one spelling."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise LefError("the LEF signature is not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise LefError("the LEF signature is not base64url")
    return data


def _control(control: str) -> str:
    """Return `control` without surrounding whitespace, requiring 5 digits."""
    stripped = str(control).strip()
    if not _CONTROL.fullmatch(stripped):
        raise LefError("control number must be 5 digits")
    return stripped


def _check_line(line: str, what: str) -> None:
    """Refuse a line that would not read back as written."""
    if "\n" in line or "\r" in line or "\x00" in line or line != line.rstrip():
        raise LefError(f"{what} must be one line, without NUL or trailing whitespace")


def _check_content(content: LefContent) -> None:
    """Refuse content that would not read back as written."""
    if normalize_serial(content.serial) != content.serial:
        raise LefError("serial must be 16 digits")
    for name in (content.owner, content.organization):
        _check_line(name + _NAME_SUFFIX, "owner and organization")
    counts = (
        content.product_level,
        content.professional,
        content.analyzer,
        content.tokens,
        content.analyzer_minutes,
    )
    if any(type(n) is not int or not 0 <= n <= MAX_COUNT for n in counts):
        raise LefError(f"counts must be whole numbers from 0 to {MAX_COUNT}")
    for line in content.extra_lines:
        _check_line(line, "an extra line")
        if line.split(";")[0] in _KNOWN_TAGS or ";" not in line or line.startswith(";"):
            raise LefError(f"extra line {line[:40]!r} is not an unknown tag line")


def _content_lines(c: LefContent) -> list[str]:
    """Return the signed lines of `c`."""
    valid_to = c.valid_to.isoformat() if c.valid_to else ""
    return [
        c.serial,
        f"{c.owner}{_NAME_SUFFIX}",
        f"{c.organization}{_NAME_SUFFIX}",
        f"PRODUCTLEVEL;{c.product_level};;{valid_to}",
        f"PROFESSIONAL;{c.professional};;",
        f"ANALYZER;{c.analyzer};;",
        f"TOKENS;{c.tokens};;",
        f"ANALYZER_TIME;{c.analyzer_minutes};;",
        f"TIMELIMIT;;;{valid_to}",
        f"OVERAGE;{'YES' if c.overage else 'NO'};;",
        *c.extra_lines,
    ]


def write_lef(
    content: LefContent, *, control: str, private_key: Ed25519PrivateKey, kid: str
) -> str:
    """Return the signed LEF text of `content`, bound to `control`."""
    _check_content(content)
    if not _BASE64URL.fullmatch(kid):
        raise LefError("kid must be base64url")
    lines = _content_lines(content)
    signature = private_key.sign("\n".join(lines).encode("utf-8"))
    lines.append(f"SIGNATURE;{kid};{_b64encode(signature)};")
    lines.append(check_code_for(_control(control), lines))
    return "\n".join(lines) + "\n"


def _lines(text: str) -> list[str]:
    """Return the right-stripped lines of `text`, without a BOM or trailing blank lines."""
    if not isinstance(text, str):
        raise LefError("a LEF is text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise LefError("the LEF is not valid text") from None
    if size > MAX_LEF_BYTES:
        raise LefError("the LEF is larger than 64 KiB")
    if "\x00" in text:
        raise LefError("the LEF contains NUL characters")
    # Split on "\n" only: str.splitlines() would also break on characters allowed in names.
    lines = [line.rstrip() for line in text.removeprefix("\ufeff").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) > MAX_LINES:
        raise LefError(f"the LEF has more than {MAX_LINES} lines")
    return lines


def _count(value: str, tag: str) -> int:
    """Return the non-negative whole number of a tag."""
    if value.startswith("-") and _DIGITS.fullmatch(value[1:]):
        raise LefError(f"{tag} must not be negative")
    if not _DIGITS.fullmatch(value) or int(value) > MAX_COUNT:
        raise LefError(f"{tag} must be a whole number")
    return int(value)


def _date(value: str, tag: str) -> date | None:
    """Return the YYYY-MM-DD date of a tag, None when empty."""
    if not value:
        return None
    try:
        if _DATE.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise LefError(f"{tag} date must be YYYY-MM-DD")


def _name(line: str, what: str) -> str:
    """Return the name on an owner or organization line."""
    if not line.endswith(_NAME_SUFFIX):
        raise LefError(f"the {what} line must end with ';;;'")
    return line.removesuffix(_NAME_SUFFIX)


def _tags(lines: Sequence[str]) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """Return the fields of the known tag lines and the unknown tag lines."""
    tags: dict[str, list[str]] = {}
    unknown: list[str] = []
    for line in lines:
        fields = line.split(";")
        tag = fields[0]
        if not tag or len(fields) < 2:
            raise LefError(f"line {line[:40]!r} is not a tag line")
        if tag not in _KNOWN_TAGS:
            unknown.append(line)
            continue
        if len(fields) != 4:
            raise LefError(f"the {tag} line must have 4 fields")
        if tag in tags:
            raise LefError(f"the {tag} line appears twice")
        tags[tag] = fields
    missing = sorted(_KNOWN_TAGS - {"SIGNATURE"} - tags.keys())
    if missing:
        raise LefError(f"the LEF lacks the {', '.join(missing)} line")
    return tags, tuple(unknown)


def _content(body: Sequence[str]) -> LefContent:
    """Return the content of the signed lines."""
    tags, unknown = _tags(body[3:])
    valid_to = _date(tags["PRODUCTLEVEL"][3], "PRODUCTLEVEL")
    if _date(tags["TIMELIMIT"][3], "TIMELIMIT") != valid_to:
        raise LefError("PRODUCTLEVEL and TIMELIMIT disagree on the end date")
    overage = tags["OVERAGE"][1]
    if overage not in ("YES", "NO"):
        raise LefError("OVERAGE must be YES or NO")
    return LefContent(
        serial=normalize_serial(body[0]),
        owner=_name(body[1], "owner"),
        organization=_name(body[2], "organization"),
        valid_to=valid_to,
        professional=_count(tags["PROFESSIONAL"][1], "PROFESSIONAL"),
        analyzer=_count(tags["ANALYZER"][1], "ANALYZER"),
        tokens=_count(tags["TOKENS"][1], "TOKENS"),
        analyzer_minutes=_count(tags["ANALYZER_TIME"][1], "ANALYZER_TIME"),
        overage=overage == "YES",
        product_level=_count(tags["PRODUCTLEVEL"][1], "PRODUCTLEVEL"),
        extra_lines=unknown,
    )


def _signature_index(lines: Sequence[str]) -> int:
    """Return the index of the SIGNATURE line, which the check code line must follow."""
    # The owner and organization lines are free text, so the search starts after them.
    for index in range(3, len(lines)):
        if lines[index].startswith("SIGNATURE;"):
            if index != len(lines) - 2:
                raise LefError("the check code must be the one line after SIGNATURE")
            return index
    raise LefError("the LEF has no SIGNATURE line")


def parse_lef(text: str) -> ParsedLef:
    """Split a LEF into content, signature and check code, refusing malformed ones."""
    lines = _lines(text)
    index = _signature_index(lines)
    fields = lines[index].split(";")
    if len(fields) != 4 or fields[3] or not _BASE64URL.fullmatch(fields[1]):
        raise LefError("the SIGNATURE line must be SIGNATURE;<kid>;<signature>;")
    signature = _b64decode(fields[2])
    if len(signature) != 64:
        raise LefError("the LEF signature must be 64 bytes")
    if not _CHECK_CODE.fullmatch(lines[-1]):
        raise LefError("the check code must be five groups of four base32 characters")
    body = lines[:index]
    return ParsedLef(
        content=_content(body),
        kid=fields[1],
        signature=signature,
        signed_text="\n".join(body),
        check_code=lines[-1],
        lines_for_check=tuple(lines[:-1]),
    )


def stated_kid(text: str) -> str | None:
    """Return the kid a LEF says it is signed with, None when it is malformed."""
    try:
        return parse_lef(text).kid
    except LefError:
        return None


def verify_lef(
    text: str, *, control: str, serial: str | None, keys: Mapping[str, Ed25519PublicKey]
) -> LefContent:
    """Return the content of a LEF whose signature, check code and serial all hold."""
    control = _control(control)
    parsed = parse_lef(text)
    key = keys.get(parsed.kid)
    if key is None:
        raise LefError("LEF signed by an unknown key")
    try:
        key.verify(parsed.signature, parsed.signed_text.encode("utf-8"))
    except InvalidSignature:
        raise LefError("LEF signature is invalid") from None
    expected = check_code_for(control, parsed.lines_for_check)
    if not hmac.compare_digest(expected, parsed.check_code):
        raise LefError("LEF does not match the control number")
    if serial is not None and normalize_serial(serial) != parsed.content.serial:
        raise LefError("LEF is for another serial number")
    return parsed.content
