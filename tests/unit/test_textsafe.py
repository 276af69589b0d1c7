"""CRM-sourced text on the admin's terminal: control characters escaped, printable text untouched."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from callguard.cli.check import render
from callguard.textsafe import dumps, unsafe, visible

HOSTILE = "Иван\n\x1b[2J\x1b]0;owned\x07 \u202eevil\x9b31m\x7f 😀\u200d🔥"


def no_control(s: str) -> bool:
    return not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") and ch not in "\u200c\u200d"
                   for ch in s)


@given(st.text())
def test_visible_output_holds_no_control_character(text: str) -> None:
    out = visible(text)
    assert no_control(out)
    if not any(unsafe(ch) for ch in text):
        assert out == text  # printable text (Cyrillic, emoji, backslashes) is left as it is


@given(st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))))
def test_printable_text_is_unchanged(text: str) -> None:
    assert visible(text) == text


@given(st.dictionaries(st.text(max_size=5), st.text()))
def test_dumps_is_json_without_control_characters(obj: dict[str, str]) -> None:
    out = dumps(obj)
    assert no_control(out)
    assert json.loads(out) == obj


def test_check_prints_a_hostile_contact_name_escaped() -> None:
    result = {"input": "+79120000001", "normalised": "+79120000001", "kind": "valid", "did": "", "verdict": "clean",
              "reason": "crm", "contact": {"id": "7\x1b", "name": HOSTILE, "owner": "Пётр\r", "source": "amocrm",
                                           "spam": False}}
    out = render(result)
    assert no_control(out.replace("\n", ""))
    assert len(out.split("\n")) == 4  # no line forged by the name
    assert "Иван\\n\\x1b[2J\\x1b]0;owned\\x07 \\u202eevil\\x9b31m\\x7f 😀\u200d🔥" in out
    assert "#7\\x1b" in out and "owner Пётр\\r," in out
    assert "\\u202e" in dumps(result) and "\x9b" not in dumps(result)
