"""Text from outside (CRM contact names, caller IDs, AMI fields) made safe to print on a terminal.

A contact name is CRM data: a newline in it forges an output line, an ESC or C1 sequence drives the
admin's terminal, a bidi override (U+202E) reverses what follows. ``visible()`` shows such characters
as escapes (``\\n``, ``\\x1b``, ``\\u202e``) and leaves printable text, Cyrillic and emoji included, as
it is. ``dumps()`` is ``json.dumps`` for a terminal: JSON escapes C0 itself, not C1 or bidi controls.
"""

from __future__ import annotations

import json
import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Format characters kept: the joiners inside emoji sequences and Indic scripts, harmless on a terminal.
_KEEP_FORMAT = frozenset("\u200c\u200d")
_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))


def unsafe(ch: str) -> bool:
    """C0, DEL, C1, bidi and other format controls, line/paragraph separators, lone surrogates."""
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES and ch not in _KEEP_FORMAT


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a surrogate pair, as JSON spells a character beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def visible(text: object) -> str:
    s = str(text)
    if s.isprintable():  # the common case: nothing to do
        return s
    return "".join(_escape(ch) if unsafe(ch) else ch for ch in s)


def dumps(obj: object) -> str:
    """One JSON line that is still valid JSON and holds no terminal control character."""
    s = json.dumps(obj, ensure_ascii=False)
    if s.isprintable():
        return s
    return "".join(_json_escape(ch) if unsafe(ch) else ch for ch in s)
