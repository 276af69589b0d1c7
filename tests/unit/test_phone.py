"""phone.normalise over real-world caller ID shapes; garbage is a typed kind, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callguard.phone import Kind, normalise, to_e164

N, EXT, ANON, UNK, BAD = Kind.NUMBER, Kind.EXTENSION, Kind.ANONYMOUS, Kind.UNKNOWN, Kind.INVALID
RU = "+79123456789"

CASES: list[tuple[str, Kind, str | None]] = [
    # Russian mobile in every shape trunks and people write it
    ("89123456789", N, RU),
    ("8 (912) 345-67-89", N, RU),
    ("8-912-345-67-89", N, RU),
    ("+7 912 345 67 89", N, RU),
    ("+7 (912) 345-67-89", N, RU),
    ("+79123456789", N, RU),
    ("79123456789", N, RU),
    ("9123456789", N, RU),
    ("8.912.345.67.89", N, RU),
    ("  +79123456789  ", N, RU),
    ("810 7 912 345 67 89", N, RU),
    ("007 912 345 67 89", N, RU),
    # Moscow landline
    ("84951234567", N, "+74951234567"),
    ("+7 495 123-45-67", N, "+74951234567"),
    ("4951234567", N, "+74951234567"),
    # foreign numbers
    ("+49 30 1234567", N, "+49301234567"),
    ("+44 20 7946 0958", N, "+442079460958"),
    ("+1 (212) 555-0123", N, "+12125550123"),
    ("+15551230001", N, "+15551230001"),  # the lab's caller: a possible, not assigned, range
    ("0049301234567", N, "+49301234567"),
    # SIP and display-name wrappers
    ("sip:+79123456789@host", N, RU),
    ("sip:+79123456789@10.0.0.1:5060;user=phone", N, RU),
    ("sips:89123456789@pbx.example", N, RU),
    ("tel:+79123456789", N, RU),
    ('"Ivan" <+79123456789>', N, RU),
    ("Ivan <sip:89123456789@trunk>", N, RU),
    ("<+79123456789>", N, RU),
    ("+79123456789;cpc=ordinary", N, RU),
    # internal extensions
    ("101", EXT, "101"),
    ("5001", EXT, "5001"),
    ("1", EXT, "1"),
    # local number of unknown area: kept as sent, no invented country code
    ("5551000", N, "5551000"),
    # no number
    ("anonymous", ANON, None),
    ("Anonymous", ANON, None),
    ("ANONYMOUS", ANON, None),
    ('"Anonymous" <anonymous>', ANON, None),
    ("restricted", ANON, None),
    ("private", ANON, None),
    ("sip:anonymous@anonymous.invalid", ANON, None),
    ("unknown", UNK, None),
    ("<unknown>", UNK, None),
    ("", UNK, None),
    ("   ", UNK, None),
    ("\t", BAD, None),
    # garbage
    ("1" * 200, BAD, None),
    ("12345678901234567890", BAD, None),
    ("Иван", BAD, None),
    ("+7912３456789", BAD, None),  # full-width digit
    ("+79123\x0056789", BAD, None),
    ("+79123\r\n456789", BAD, None),
    ("\x1b[31m+79123456789", BAD, None),
    ("abc", BAD, None),
    ("+", BAD, None),
    ("++79123456789", BAD, None),
    ("1-800-FLOWERS", BAD, None),
    ("'; DROP TABLE numbers; --", BAD, None),
    ("+0", BAD, None),
]


@pytest.mark.parametrize(("raw", "kind", "key"), CASES)
def test_caller_id_shapes(raw: str, kind: Kind, key: str | None) -> None:
    phone = normalise(raw, "RU")
    assert (phone.kind, phone.key) == (kind, key)
    assert phone.raw == raw


def test_at_least_forty_shapes() -> None:
    assert len(CASES) >= 40


def test_none_is_unknown() -> None:
    assert normalise(None).kind is Kind.UNKNOWN


def test_region_changes_national_numbers() -> None:
    assert normalise("030 1234567", "DE").key == "+49301234567"
    assert normalise("89123456789", "DE").kind is not Kind.NUMBER or normalise("89123456789", "DE").key != RU


def test_to_e164_ignores_extensions() -> None:
    assert to_e164("8 (912) 345-67-89") == RU
    assert to_e164("101") is None
    assert to_e164("anonymous") is None


def test_display_is_printable() -> None:
    assert normalise("\x1b[31mevil").display.isprintable()
    assert normalise("anonymous").display == "anonymous"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_any_text(raw: str) -> None:
    phone = normalise(raw, "RU")
    assert isinstance(phone.kind, Kind)
    if phone.kind is Kind.NUMBER and phone.e164:
        assert phone.e164.startswith("+") and phone.e164[1:].isdigit() and len(phone.e164) <= 16


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"9[0-9]{9}", fullmatch=True), st.sampled_from(["8{}", "+7{}", "7{}", "+7 ({}", "{}"]))
def test_russian_mobile_formats_agree(subscriber: str, shape: str) -> None:
    raw = shape.format(subscriber) if "(" not in shape else f"+7 ({subscriber[:3]}) {subscriber[3:]}"
    assert normalise(raw, "RU").e164 == "+7" + subscriber


@settings(max_examples=500, deadline=None)
@given(
    st.from_regex(r"[0-9]{10}", fullmatch=True),
    st.sampled_from(["+7{}", "8{}", "7{}", "+7 ({}) {}-{}", "8 {} {} {}"]),
)
def test_fast_path_agrees_with_phonenumbers(nsn: str, shape: str) -> None:
    from callguard.phone import _extract, _parse

    raw = shape.format(nsn[:3], nsn[3:6], nsn[6:]) if "{}" in shape[3:] else shape.format(nsn)
    text = _extract(raw)
    digits = "".join(ch for ch in text if ch.isdigit())
    assert normalise(raw, "RU") == _parse(raw, text, digits, "RU")


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"(\+7|8|7|\+)[0-9]{0,3}[ ()-]{0,2}[0-9]{3}[ .-]?[0-9]{2}[ -]?[0-9]{2}", fullmatch=True))
def test_to_e164_fast_path_agrees_with_full_normalisation(raw: str) -> None:
    assert to_e164(raw, "RU") == normalise(raw, "RU", max_extension_digits=0).e164


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"\+?[0-9\u0660-\u0669\u00b2]{9,13}", fullmatch=True))
def test_plain_digit_fast_path_agrees_with_the_full_path(raw: str) -> None:
    """``normalise``'s shortcut for bare "+7…"/"8…" caller IDs (Arabic-Indic and superscript digits
    included: str.isdigit takes them, the full path does not) gives what the cached full path gives."""
    from callguard.phone import _normalise

    assert normalise(raw, "RU") == _normalise.__wrapped__(raw, "RU", 5)
