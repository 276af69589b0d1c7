"""Caller ID → E.164, with the phonenumbers library doing the numbering-plan work.

What Asterisk hands us in ``agi_callerid`` / ``CallerIDNum`` is whatever the trunk sent: ``89123456789``,
``+7 (912) 345-67-89``, ``sip:+79123456789@host``, ``"Ivan" <+79123456789>``, ``anonymous``,
``<unknown>``, or junk. ``normalise`` never raises: it returns a ``Phone`` whose ``kind`` says what it is.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers

# Longest caller ID we try to parse; E.164 allows 15 digits, SIP URIs and names add a bit.
MAX_RAW_LENGTH = 128

# Values Asterisk and trunks use for "no number": withheld on purpose vs simply not sent.
_ANONYMOUS = frozenset({"anonymous", "restricted", "private", "withheld", "unavailable", "blocked"})
_UNKNOWN = frozenset({"", "unknown", "<unknown>", "null", "none", "n/a", "-"})

_ANGLE = re.compile(r"<([^<>]*)>")
_URI = re.compile(r"^(?:sips?|tel):([^@;?>]*)", re.IGNORECASE)
_ALLOWED = re.compile(r"^\+?[\d\s().\-/]+$")


class Kind(StrEnum):
    NUMBER = "number"  # a possible public number; ``e164`` is set
    EXTENSION = "extension"  # a short internal number; ``e164`` is None, ``digits`` is set
    ANONYMOUS = "anonymous"  # presentation withheld (anonymous, restricted, private …)
    UNKNOWN = "unknown"  # no caller ID at all
    INVALID = "invalid"  # something was sent, but it is not a number


@dataclass(frozen=True, slots=True)
class Phone:
    kind: Kind
    raw: str
    e164: str | None = None  # set for numbers the plan knows, or that came with a "+"
    digits: str | None = None

    @property
    def key(self) -> str | None:
        """The lookup key in the store: E.164 for public numbers, digits for extensions."""
        return self.e164 or self.digits if self.kind in (Kind.NUMBER, Kind.EXTENSION) else None

    @property
    def display(self) -> str:
        """What to log and show: the normalised number, or the kind when there is none."""
        return self.key or (self.kind.value if self.kind is not Kind.INVALID else _printable(self.raw))


def _printable(raw: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in raw[:40])
    return cleaned + ("…" if len(raw) > 40 else "")


def _extract(raw: str) -> str:
    """Strip names, URIs and parameters down to the number-ish part."""
    text = raw.strip()
    m = _ANGLE.search(text)
    if m:
        text = m.group(1).strip()
    m = _URI.match(text)
    if m:
        text = m.group(1)
    # ``+79123456789;cpc=ordinary`` and ``…;user=phone``
    text = text.split(";", 1)[0].strip().strip('"').strip()
    return text


def normalise(raw: str | None, region: str = "RU", max_extension_digits: int = 5) -> Phone:
    """Classify and normalise one caller ID. Never raises."""
    if raw is None:
        return Phone(Kind.UNKNOWN, "")
    if not isinstance(raw, str):
        raw = str(raw)
    # What nearly every Russian trunk sends, "+7XXXXXXXXXX" / "8XXXXXXXXXX", in ~4 µs instead of ~15 (one
    # per screen): the same answer as the full path below (tests/test_phone.py checks they agree).
    hit = _fast_ru_bare(raw) if region == "RU" else None
    if hit is not None:
        return Phone(Kind.NUMBER, raw, e164=hit[0], digits=hit[1])
    return _normalise(raw, region, max_extension_digits)


@lru_cache(maxsize=65536)
def _normalise(raw: str, region: str, max_extension_digits: int) -> Phone:
    if len(raw) > MAX_RAW_LENGTH or any(unicodedata.category(ch) == "Cc" for ch in raw):
        return Phone(Kind.INVALID, raw)
    text = _extract(raw)
    for word in (raw.strip().strip('"').strip().lower(), text.lower()):
        if word in _UNKNOWN:
            return Phone(Kind.UNKNOWN, raw)
        if word in _ANONYMOUS:
            return Phone(Kind.ANONYMOUS, raw)
    if not text.isascii() or not _ALLOWED.match(text):
        return Phone(Kind.INVALID, raw)
    digits = re.sub(r"\D", "", text)
    if not digits:
        return Phone(Kind.INVALID, raw)
    if not text.startswith("+") and len(digits) <= max_extension_digits:
        return Phone(Kind.EXTENSION, raw, digits=digits)
    fast = _fast_ru(text, digits) if region == "RU" else None
    if fast is not None:
        return Phone(Kind.NUMBER, raw, e164=fast, digits=digits)
    return _parse(raw, text, digits, region)


def _fast_ru(text: str, digits: str) -> str | None:
    """The shapes nearly every Russian trunk and CRM sends (``+7XXXXXXXXXX``, ``8XXXXXXXXXX``,
    ``7XXXXXXXXXX``) with a national number in the 3/4/8/9 ranges, without phonenumbers' ~100 µs parse.
    It gives exactly what phonenumbers gives for them (tests/test_phone.py checks both agree)."""
    if len(digits) != 11 or digits[1] not in "3489":
        return None
    if text.startswith("+"):
        return "+" + digits if digits[0] == "7" else None
    return "+7" + digits[1:] if digits[0] in "78" else None


def _fast_ru_bare(text: str) -> tuple[str, str] | None:
    """``_fast_ru`` for a text that is only ASCII digits after an optional "+": (E.164, digits)."""
    digits = text[1:] if text[:1] == "+" else text
    if not (digits.isascii() and digits.isdigit()):
        return None
    fast = _fast_ru(text, digits)
    return (fast, digits) if fast is not None else None


def _parse(raw: str, text: str, digits: str, region: str) -> Phone:
    if not text.startswith("+") and digits.startswith("00"):
        text = "+" + digits[2:]  # ITU international prefix; RU's own "810" phonenumbers handles
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return Phone(Kind.INVALID, raw)
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason not in (phonenumbers.ValidationResult.IS_POSSIBLE, phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
        return Phone(Kind.INVALID, raw)
    if reason == phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        # A local number without its area code (``5551000``): adding a country code would invent a
        # number that is not the caller's, so it stays the digits as sent.
        return Phone(Kind.NUMBER, raw, digits=digits)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return Phone(Kind.NUMBER, raw, e164=e164, digits=digits)


_FORMATTING = re.compile(r"[ ()\-.]")


def to_e164(raw: object, region: str = "RU") -> str | None:
    """E.164 of a public number or None: for CRM phone fields, where extensions do not occur.

    CRM syncs call this for every phone of every contact, so the common Russian shapes take the fast
    path on the compacted value before any extraction or parsing (same rule as ``_fast_ru``)."""
    if not isinstance(raw, str) or not raw:
        return None
    if region == "RU" and raw.isascii():
        hit = _fast_ru_bare(_FORMATTING.sub("", raw))
        if hit is not None:
            return hit[0]
    return normalise(raw, region, max_extension_digits=0).e164
