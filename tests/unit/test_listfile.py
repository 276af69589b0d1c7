"""callguard.listfile, pure: what spreadsheets really save is read, what is refused says why, and an
export reads back to the same rows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callguard.listfile import ListFileError, check_phone, decode, parse, parse_bytes, sniff_delimiter, to_csv

ROWS = "phone;action;note\r\n+79123456789;spam;робот\r\n"


@pytest.mark.parametrize(("data", "encoding"), [
    (ROWS.encode("utf-8"), "utf-8"),
    (b"\xef\xbb\xbf" + ROWS.encode("utf-8"), "utf-8"),
    (ROWS.encode("cp1251"), "cp1251"),
    (ROWS.encode("utf-16"), "utf-16"),
])
def test_encodings_are_detected(data: bytes, encoding: str) -> None:
    text, found = decode(data)
    assert (text, found) == (ROWS, encoding)
    result = parse_bytes(data)
    assert result.rows == [("+79123456789", "block", "робот")] and result.encoding == encoding


def test_an_undecodable_file_says_what_to_do() -> None:
    with pytest.raises(ListFileError, match="CSV UTF-8"):
        decode(b"+7912;spam;\x98\n")  # 0x98 is no character in Windows-1251


@pytest.mark.parametrize(("text", "sep"), [
    ("a;b;c,d\n", ";"), ("a,b\n", ","), ("# comment, with; both\n\n+7912\tspam\n", "\t"), ("", ","), ("one\n", ","),
])
def test_the_separator_of_the_first_data_line(text: str, sep: str) -> None:
    assert sniff_delimiter(text) == sep


@pytest.mark.parametrize(("raw", "allow_internal", "key", "error"), [
    ("8 (912) 345-67-89", False, "+79123456789", ""),
    ("123", False, "", "internal extension"),
    ("123", True, "123", ""),
    ("hello", False, "", "not a phone number"),
    ("anonymous", False, "", "anonymous"),
])
def test_check_phone(raw: str, allow_internal: bool, key: str, error: str) -> None:
    got_key, got_error = check_phone(raw, "RU", 5, allow_internal)
    assert got_key == key and error in got_error and bool(got_error) == bool(error)


def test_headers_actions_and_errors() -> None:
    result = parse("Телефон;Действие\n+79120000001;Спам\n+79120000002;разрешить\n+79120000003;maybe\n+79120000004\n")
    assert result.rows == [("+79120000001", "block", ""), ("+79120000002", "allow", "")]
    assert [line for line, _ in result.errors] == [4, 5]
    assert "use spam or allow" in result.errors[0][1] and "semicolon" in result.errors[1][1]


def test_errors_are_bounded() -> None:
    result = parse("x,spam\n" * 1500)
    assert len(result.errors) == 1000 and result.more_errors == 500 and result.skipped == 1500


notes = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40).map(str.strip)


@given(st.lists(st.tuples(st.integers(0, 9999999), st.sampled_from(["block", "allow"]), notes), max_size=20))
def test_an_export_reads_back_to_the_same_rows(rows: list[tuple[int, str, str]]) -> None:
    table = {f"+7912{n:07d}": (action, note) for n, action, note in rows}
    text = "".join(to_csv((p, a, n) for p, (a, n) in table.items()))
    result = parse(text)
    assert result.errors == []
    assert {p: (a, n) for p, a, n in result.rows} == table
