"""The allow/block list file, pure: bytes of a CSV → rows to store, and rows → CSV text.

Shared by ``callguard import`` / ``export`` and the lists page (callguard.web.lists). What people really
upload is a spreadsheet saved as CSV: Excel in a Russian locale writes ``;`` as the separator and
Windows-1251 text (UTF-8 only with "CSV UTF-8", then with a BOM), "Unicode text" writes UTF-16 with tabs.
So the encoding and the separator are detected, and every refusal says what to change.

Columns: ``phone,action[,note]``; ``action`` is spam/block or allow (Russian words too). A header row is
optional. A short number (an internal extension, ``phone.max_extension_digits`` or fewer digits) is refused
unless asked for: ``123`` in the block list is nearly always a typo, and blocking an extension blocks a
colleague.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

from callguard.phone import Kind, normalise

ACTIONS = {
    "spam": "block", "block": "block", "blocked": "block", "deny": "block",
    "allow": "allow", "whitelist": "allow", "allowed": "allow",
    "спам": "block", "блок": "block", "заблокировать": "block", "запретить": "block",
    "разрешить": "allow", "разрешён": "allow", "разрешен": "allow", "белый": "allow",
}
MAX_NOTE = 500
MAX_ERRORS = 1000  # a file of a million bad rows must not become a million messages
_FORMULA = ("=", "+", "-", "@")


class ListFileError(ValueError):
    """The file as a whole cannot be read (its encoding); rows with errors are reported, not raised."""


@dataclass
class ImportResult:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    encoding: str = "utf-8"
    delimiter: str = ","
    more_errors: int = 0  # past MAX_ERRORS, only counted

    @property
    def skipped(self) -> int:
        return len(self.errors) + self.more_errors


def decode(data: bytes) -> tuple[str, str]:
    """The text and the encoding's name: UTF-16 by its BOM, UTF-8 (BOM or not), else Windows-1251."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as e:
            raise ListFileError(f"starts like UTF-16 but is not (byte {e.start})") from e
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as utf8:
        try:
            return data.decode("cp1251"), "cp1251"
        except UnicodeDecodeError:
            raise ListFileError(
                f"neither UTF-8 nor Windows-1251 text (byte {utf8.start}); in Excel use "
                "Save As → \"CSV UTF-8 (comma delimited)\""
            ) from utf8


def sniff_delimiter(text: str) -> str:
    """The separator of the first line that holds data: the most frequent of ``;`` ``,`` and tab."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        counts = {d: line.count(d) for d in (";", ",", "\t")}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","
    return ","


def check_phone(raw: str, region: str, max_extension_digits: int, allow_internal: bool = False) -> tuple[str, str]:
    """(store key, "") for a number a list may hold, or ("", why not)."""
    phone = normalise(raw, region, max_extension_digits)
    shown = raw.strip()[:40]
    if phone.key is None:
        return "", f"not a phone number: {shown!r} ({phone.kind.value})"
    if phone.kind is Kind.EXTENSION and not allow_internal:
        return "", (f"{shown!r} is an internal extension ({max_extension_digits} digits or fewer, "
                    "phone.max_extension_digits); allow internal numbers to list it")
    return phone.key, ""


def _is_header(record: list[str]) -> bool:
    return (len(record) < 2 or record[1].strip().lower() not in ACTIONS) and not any(
        ch.isdigit() for ch in record[0]
    )


def _note(cells: list[str], delimiter: str) -> str:
    """An unquoted note with the separator in it came apart into cells: put it back together."""
    note = delimiter.join(cells).strip()
    if note.startswith("'") and note[1:2] in _FORMULA:
        note = note[1:]  # our own export's guard against spreadsheet formulas
    return note[:MAX_NOTE]


def parse(text: str, region: str = "RU", max_extension_digits: int = 5, allow_internal: bool = False,
          delimiter: str | None = None) -> ImportResult:
    """CSV text → good rows (key, allow|block, note) and (line, error) pairs. Never raises."""
    result = ImportResult(delimiter=delimiter or sniff_delimiter(text))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=result.delimiter)

    def refuse(line: int, error: str) -> None:
        if len(result.errors) < MAX_ERRORS:
            result.errors.append((line, error))
        else:
            result.more_errors += 1

    seen_data = False
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not c.strip() for c in record) or record[0].lstrip().startswith("#"):
                continue
            if not seen_data and _is_header(record):
                seen_data = True
                continue
            seen_data = True
            if len(record) < 2:
                sep = {";": "semicolon", ",": "comma", "\t": "tab"}[result.delimiter]
                refuse(line, f"expected phone{result.delimiter}action[{result.delimiter}note] ({sep}-separated)")
                continue
            action = record[1].strip().lower()
            if action not in ACTIONS:
                refuse(line, f"unknown action {record[1].strip()[:20]!r} (use spam or allow)")
                continue
            key, error = check_phone(record[0], region, max_extension_digits, allow_internal)
            if error:
                refuse(line, error)
                continue
            result.rows.append((key, ACTIONS[action], _note(record[2:], result.delimiter)))
    except csv.Error as e:
        refuse(reader.line_num, f"CSV error: {e}")
    return result


def parse_bytes(data: bytes, region: str = "RU", max_extension_digits: int = 5,
                allow_internal: bool = False) -> ImportResult:
    """``decode`` then ``parse``; raises ``ListFileError`` only for an unreadable encoding."""
    text, encoding = decode(data)
    result = parse(text, region, max_extension_digits, allow_internal)
    result.encoding = encoding
    return result


def _safe_cell(value: str) -> str:
    """A note that a spreadsheet would run as a formula (``=HYPERLINK(…)``) gets a leading quote."""
    return "'" + value if value.startswith(_FORMULA) else value


def csv_line(phone: str, action: str, note: str) -> str:
    """One ``phone,action,note`` line as ``parse`` reads it back (``block`` written as ``spam``)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([phone, "spam" if action == "block" else action, _safe_cell(note)])
    return buf.getvalue()


CSV_HEADER = "phone,action,note\r\n"


def to_csv(rows: Iterable[tuple[str, str, str]]) -> Iterable[str]:
    """The header, then a line per (phone, action, note): what ``parse`` reads back to the same rows."""
    yield CSV_HEADER
    for phone, action, note in rows:
        yield csv_line(phone, action, note)
