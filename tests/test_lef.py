"""Tests of the LEF format: writing, parsing, and the signature and check-code checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import jose, lef

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KID = jose.kid_for(KEY.public_key())
KEYS: dict[str, Ed25519PublicKey] = {KID: KEY.public_key()}
CONTROL = "12345"
CONTENT = lef.LefContent(
    serial="1234567890123456",
    owner="Ada Lovelace",
    organization="Analytical Engines; Ltd",
    valid_to=date(2030, 12, 31),
    professional=10,
    analyzer=20,
    tokens=300,
    analyzer_minutes=4000,
    overage=True,
)


def written(content: lef.LefContent = CONTENT, control: str = CONTROL) -> str:
    return lef.write_lef(content, control=control, private_key=KEY, kid=KID)


def verified(
    text: str, control: str = CONTROL, serial: str | None = CONTENT.serial
) -> lef.LefContent:
    return lef.verify_lef(text, control=control, serial=serial, keys=KEYS)


def reason(text: str, control: str = CONTROL, serial: str | None = CONTENT.serial) -> str:
    with pytest.raises(lef.LefError) as info:
        verified(text, control, serial)
    return info.value.reason


def test_layout() -> None:
    lines = written().split("\n")
    assert lines[:10] == [
        "1234567890123456",
        "Ada Lovelace;;;",
        "Analytical Engines; Ltd;;;",
        "PRODUCTLEVEL;50;;2030-12-31",
        "PROFESSIONAL;10;;",
        "ANALYZER;20;;",
        "TOKENS;300;;",
        "ANALYZER_TIME;4000;;",
        "TIMELIMIT;;;2030-12-31",
        "OVERAGE;YES;;",
    ]
    assert lines[10].startswith(f"SIGNATURE;{KID};") and lines[10].endswith(";")
    assert lines[11] == lef.check_code_for(CONTROL, lines[:11])
    assert len(lines[11]) == 24 and lines[11].count("-") == 4
    assert lines[12:] == [""]


def test_round_trip() -> None:
    text = written()
    assert verified(text) == CONTENT
    parsed = lef.parse_lef(text)
    assert parsed.kid == KID
    assert parsed.signed_text == "\n".join(text.split("\n")[:10])
    assert parsed.lines_for_check == tuple(text.split("\n")[:11])
    assert parsed.check_code == text.split("\n")[11]
    KEY.public_key().verify(parsed.signature, parsed.signed_text.encode())


def test_no_end_date_and_no_overage() -> None:
    content = replace(CONTENT, valid_to=None, overage=False, product_level=7)
    text = written(content)
    assert "PRODUCTLEVEL;7;;\n" in text and "TIMELIMIT;;;\n" in text and "OVERAGE;NO;;" in text
    assert verified(text) == content


def test_every_changed_character_fails() -> None:
    text = written()
    for position in range(len(text) - 1):
        changed = text[:position] + ("7" if text[position] != "7" else "8") + text[position + 1 :]
        with pytest.raises(lef.LefError):
            verified(changed)


def test_wrong_control_and_serial() -> None:
    text = written()
    assert reason(text, control="54321") == "LEF does not match the control number"
    assert reason(text, serial="1234567890123457") == "LEF is for another serial number"
    assert reason(text, serial="123") == "serial must be 16 digits"
    for control in ("1234", "123456", "abcde", "", "\uff11\uff12\uff13\uff14\uff15"):
        assert reason(text, control=control) == "control number must be 5 digits"
    assert verified(text, serial=None) == CONTENT


def test_unknown_key_and_bad_signature() -> None:
    other = jose.generate_private_key()
    text = lef.write_lef(
        CONTENT, control=CONTROL, private_key=other, kid=jose.kid_for(other.public_key())
    )
    assert reason(text) == "LEF signed by an unknown key"
    impostor = lef.write_lef(CONTENT, control=CONTROL, private_key=other, kid=KID)
    assert reason(impostor) == "LEF signature is invalid"


def test_serial_with_spaces_accepted() -> None:
    assert verified(written(), serial=" 1234 5678 9012\t3456 ") == CONTENT


def test_crlf_bom_trailing_whitespace_and_blank_lines_accepted() -> None:
    text = written()
    messy = "\ufeff" + text.replace("\n", "  \r\n") + "\r\n\n   \n"
    assert verified(messy) == CONTENT


def test_unknown_tag_kept() -> None:
    content = replace(CONTENT, extra_lines=("CLOUD;YES;;", "FEATURE;x;2024-01-01;"))
    text = written(content)
    lines = text.split("\n")
    assert lines[10:12] == ["CLOUD;YES;;", "FEATURE;x;2024-01-01;"]
    assert lines[12].startswith("SIGNATURE;")
    assert verified(text) == content


def test_names_with_semicolons() -> None:
    content = replace(CONTENT, owner="A;;;B;", organization=";;;")
    assert verified(written(content)) == content


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("PROFESSIONAL;10;;", "PROFESSIONAL;ten;;", "PROFESSIONAL must be a whole number"),
        ("PROFESSIONAL;10;;", "PROFESSIONAL;-1;;", "PROFESSIONAL must not be negative"),
        ("PROFESSIONAL;10;;", "PROFESSIONAL;\u0661\u0660;;", "PROFESSIONAL must be a whole number"),
        ("PROFESSIONAL;10;;", "PROFESSIONAL;99999999999;;", "PROFESSIONAL must be a whole number"),
        ("TOKENS;300;;\n", "", "the LEF lacks the TOKENS line"),
        ("TOKENS;300;;\n", "TOKENS;300;;\nTOKENS;300;;\n", "the TOKENS line appears twice"),
        ("TOKENS;300;;", "TOKENS;300;", "the TOKENS line must have 4 fields"),
        ("2030-12-31\nPROF", "2030-02-30\nPROF", "PRODUCTLEVEL date must be YYYY-MM-DD"),
        ("2030-12-31\nPROF", "20301231\nPROF", "PRODUCTLEVEL date must be YYYY-MM-DD"),
        (";;;2030-12-31", ";;;2031-12-31", "PRODUCTLEVEL and TIMELIMIT disagree on the end date"),
        ("OVERAGE;YES;;", "OVERAGE;yes;;", "OVERAGE must be YES or NO"),
        ("OVERAGE;YES;;\n", "OVERAGE;YES;;\n\n", "line '' is not a tag line"),
        ("Ada Lovelace;;;", "Ada Lovelace;;", "the owner line must end with ';;;'"),
        ("1234567890123456", "123456789012345", "serial must be 16 digits"),
        ("SIGNATURE;", "SIGNATURX;", "the LEF has no SIGNATURE line"),
    ],
)
def test_malformed(old: str, new: str, expected: str) -> None:
    text = written()
    assert old in text
    with pytest.raises(lef.LefError) as info:
        lef.parse_lef(text.replace(old, new, 1))
    assert info.value.reason == expected


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _variants() -> dict[str, str]:
    lines = written().split("\n")
    signature = lines[10].split(";")[2]
    # 64 bytes leave the last of 86 characters with 4 unused bits.
    last = BASE64URL.index(signature[-1])
    return {
        "missing check code": "\n".join(lines[:11]),
        "text after check code": "\n".join([*lines[:12], "extra"]),
        "lowercase check code": "\n".join([*lines[:11], lines[11].lower()]),
        "padded signature": "\n".join(lines).replace(signature, signature + "=="),
        "short signature": "\n".join(lines).replace(signature, signature[:-4]),
        "non-canonical signature": "\n".join(lines).replace(
            signature, signature[:-1] + BASE64URL[last ^ 1]
        ),
        "changed signature": "\n".join(lines).replace(
            signature, signature[:-1] + BASE64URL[last ^ 16]
        ),
        "no trailing field": "\n".join(lines).replace(f"{signature};", signature),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_malformed_signature_and_check_code(name: str) -> None:
    with pytest.raises(lef.LefError):
        verified(_variants()[name])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "\ufeff",
        "x",
        "1234567890123456\n",
        "\x00" * 10,
        "a\x00b",
        "\ud800",
        "SIGNATURE;a;b;\nAAAA-AAAA-AAAA-AAAA-AAAA",
        "x\n" * 201,
        "x" * (64 * 1024 + 1),
    ],
)
def test_garbage_refused(text: str) -> None:
    with pytest.raises(lef.LefError):
        verified(text)


def test_size_limits() -> None:
    # 10 content lines, the extra lines, SIGNATURE and the check code.
    many = replace(CONTENT, extra_lines=tuple(f"X{i};;;" for i in range(188)))
    assert verified(written(many)) == many
    too_many = replace(CONTENT, extra_lines=tuple(f"X{i};;;" for i in range(189)))
    assert reason(written(too_many)) == "the LEF has more than 200 lines"


@pytest.mark.parametrize(
    "change",
    [
        {"serial": "1234 5678 9012 3456"},
        {"owner": "two\nlines"},
        {"organization": "carriage\rreturn"},
        {"owner": "nul\x00"},
        {"professional": -1},
        {"tokens": 2**31},
        {"extra_lines": ("OVERAGE;NO;;",)},
        {"extra_lines": ("no tag",)},
        {"extra_lines": ("TRAILING;x; ",)},
    ],
)
def test_write_refuses_content_that_would_not_read_back(change: dict[str, object]) -> None:
    with pytest.raises(lef.LefError):
        written(replace(CONTENT, **change))  # type: ignore[arg-type]


def test_write_refuses_bad_control() -> None:
    with pytest.raises(lef.LefError):
        written(control="1234")


def test_serial_helpers() -> None:
    assert lef.normalize_serial(" 1234 5678\n9012 3456 ") == "1234567890123456"
    assert lef.format_serial("1234567890123456") == "1234 5678 9012 3456"
    for bad in ("", "123456789012345", "12345678901234567", "123456789012345x", "\u0661" * 16):
        with pytest.raises(lef.LefError) as info:
            lef.normalize_serial(bad)
        assert info.value.reason == "serial must be 16 digits"


def test_check_code_for() -> None:
    code = lef.check_code_for("12345", ["a", "b"])
    assert len(code) == 24
    assert all(len(group) == 4 for group in code.split("-"))
    assert set(code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567-")
    assert code != lef.check_code_for("12346", ["a", "b"])


NAMES = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40)
COUNTS = st.integers(0, lef.MAX_COUNT)
EXTRA = st.from_regex(r"[A-Z][A-Z_]{0,10};[a-z0-9;]{0,8}[a-z0-9;]", fullmatch=True).filter(
    lambda line: (
        line.split(";")[0]
        not in {
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
)
CONTENTS = st.builds(
    lef.LefContent,
    serial=st.from_regex(r"[0-9]{16}", fullmatch=True),
    owner=NAMES,
    organization=NAMES,
    valid_to=st.none() | st.dates(),
    professional=COUNTS,
    analyzer=COUNTS,
    tokens=COUNTS,
    analyzer_minutes=COUNTS,
    overage=st.booleans(),
    product_level=COUNTS,
    extra_lines=st.lists(EXTRA, max_size=3).map(tuple),
)
REPLACEMENTS = st.characters(codec="utf-8") | st.sampled_from(
    " \t\r\n;-_=+/0123456789AaZz\ufeff\x85\u2028"
)


@settings(max_examples=200, deadline=None)
@given(content=CONTENTS, control=st.from_regex(r"[0-9]{5}", fullmatch=True))
def test_property_round_trip(content: lef.LefContent, control: str) -> None:
    text = written(content, control)
    assert lef.parse_lef(text).content == content
    assert verified(text, control, content.serial) == content


@settings(max_examples=500, deadline=None)
@given(content=CONTENTS, data=st.data())
def test_property_any_changed_character_fails(content: lef.LefContent, data: st.DataObject) -> None:
    text = written(content)
    # Everything but the final line break, which only ends the file.
    position = data.draw(st.integers(0, len(text) - 2))
    replacement = data.draw(REPLACEMENTS.filter(lambda c: c != text[position]))
    changed = text[:position] + replacement + text[position + 1 :]
    with pytest.raises(lef.LefError):
        verified(changed, serial=content.serial)
