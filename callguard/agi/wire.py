"""FastAGI wire format, pure: the request header block in, commands out, replies in. No sockets.

What Asterisk 22 sends (tests/fixtures/traces/*.agi.txt): ``agi_<name>: <value>\\n`` lines, bare ``\\n``
line ends, an empty line to finish; an empty value keeps its space (``agi_accountcode: ``). Replies are
``200 result=1``, ``200 result=1 (+15551230099)``, ``510 Invalid or unknown command``, a multi-line
``520-…`` block closed by ``520 End of proper usage.``, and an unsolicited ``HANGUP`` line when the
caller leaves mid-script (s10), after which commands still get ``200 result=1``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from panoramisk.utils import parse_agi_result

from callguard.errors import AgiProtocolError

_HEADER = re.compile(r"^(agi_[A-Za-z0-9_]+):(?: (.*)|)$")
# AGI variable names as the dialplan knows them: letters, digits, underscore (a leading _ or __ inherits).
_VARNAME = re.compile(r"^_{0,2}[A-Za-z][A-Za-z0-9_]*$")
_BARE = re.compile(r"[A-Za-z0-9_+.@-]+")
# res_agi.c reads a command with fgets() into a buffer of AGI_BUF_LEN (2048) bytes: at most 2,047 bytes
# including the newline. Anything past that is read as the NEXT command ("A"*2011 + "HANGUP" hangs up),
# so every line callguard writes is cut to fit, on every path.
AGI_MAX_LINE = 2047
MAX_LINE_BODY = AGI_MAX_LINE - 1  # without the "\n" the connection adds
MAX_NAME_LENGTH = 80
MAX_VALUE_LENGTH = 256  # characters a single value keeps (a contact's name is never longer in practice)
_NO_NUMBER = frozenset({"", "unknown", "s"})


class AgiRequest:
    """One FastAGI request: every header, and the ones the routes use read once at parse time."""

    __slots__ = ("callerid", "calleridname", "did", "headers", "script", "uniqueid")

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers: Mapping[str, str] = MappingProxyType(headers)
        get = headers.get
        # The route: ``agi://host:4573/screen?x`` → ``screen`` (query and slashes stripped).
        self.script: str = get("agi_network_script", "").split("?", 1)[0].strip("/")
        self.uniqueid: str = get("agi_uniqueid", "")
        self.callerid: str = get("agi_callerid", "")
        self.calleridname: str = get("agi_calleridname", "")
        self.did: str = _did(headers)

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


def _did(headers: dict[str, str]) -> str:
    """The number dialled: an explicit ``AGI(…/screen,${EXTEN})`` argument wins, then ``agi_dnid``,
    then ``agi_extension`` (the lab's ``agi_dnid`` is ``unknown``)."""
    for name in ("agi_arg_1", "agi_dnid", "agi_extension"):
        value = headers.get(name, "").strip()
        if value.lower() not in _NO_NUMBER:
            return value
    return ""


def parse_request(block: bytes) -> AgiRequest:
    """The header block (without the terminating empty line) → ``AgiRequest``.

    Raises ``AgiProtocolError`` for anything that is not ``agi_*: value`` lines.
    """
    headers = _parse_lines(block.decode("utf-8", errors="replace"))
    if not headers:
        raise AgiProtocolError("empty request")
    if "agi_network_script" not in headers:
        raise AgiProtocolError("request has no agi_network_script")
    return AgiRequest(headers)


def _parse_lines(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for n, raw_line in enumerate(text.split("\n"), 1):
        line = raw_line[:-1] if raw_line.endswith("\r") else raw_line
        if not line:
            continue
        m = _HEADER.match(line)
        if not m:
            raise AgiProtocolError(f"line {n} is not an 'agi_name: value' header")
        headers[m.group(1)] = m.group(2) or ""
    return headers


def _clean(value: str, limit: int) -> str:
    """One line of printable text, at most ``limit`` characters: control characters (newlines, ESC,
    bidi overrides, lone surrogates) become blanks, so a value can never end the command line."""
    if value.isprintable():
        return value[:limit]
    return "".join(ch if ch.isprintable() else " " for ch in value)[:limit]


def _agi_quote(text: str) -> str:
    # res_agi.c parse_args: inside quotes a blank is kept; a backslash takes the next character literally.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fit(text: str, budget: int, render: Callable[[str], str]) -> str:
    """``render`` of the longest prefix of ``text`` whose rendering is at most ``budget`` UTF-8 bytes.
    Cutting before rendering keeps every escape whole (a cut after it could leave a lone backslash)."""
    out = render(text)
    if len(out) * 4 <= budget or len(out.encode()) <= budget:  # the usual case: nothing to cut
        return out
    lo, hi = 0, len(text)
    while lo < hi:  # rendering is monotonic in the prefix length
        mid = (lo + hi + 1) // 2
        if len(render(text[:mid]).encode()) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return render(text[:lo])


def quote(value: str) -> str:
    """An argument for an AGI command: one line, quoted, backslashes and quotes escaped."""
    return _agi_quote(_clean(value, MAX_VALUE_LENGTH))


def _check_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH or not _VARNAME.match(name):
        raise ValueError(f"not a dialplan variable name: {name[:MAX_NAME_LENGTH]!r}")


def _bare_or_quoted(text: str) -> str:
    # A bare token keeps the wire format identical to what the lab recorded for simple values.
    return text if text and _BARE.fullmatch(text) else _agi_quote(text)


def set_variable(name: str, value: str) -> str:
    """``SET VARIABLE name value``: one line of at most ``MAX_LINE_BODY`` bytes, whatever ``value`` is."""
    _check_name(name)
    head = f"SET VARIABLE {name} "
    return head + _fit(_clean(value, MAX_VALUE_LENGTH), MAX_LINE_BODY - len(head), _bare_or_quoted)


# What __ast_app_separate_args (main/app.c) reads as syntax when ARRAY() splits its value: the comma,
# quotes, the backslash, and brackets (commas inside them do not split). A backslash makes each literal.
_APP_ARG_ESCAPES = str.maketrans({ch: "\\" + ch for ch in '\\,"()[]'})
MAX_ARRAY_VALUE = 100  # characters each ARRAY() value keeps


def _array_value(text: str) -> str:
    # Escaped for ARRAY's split, then for the AGI line; the quotes around the whole are counted apart.
    return _agi_quote(text.translate(_APP_ARG_ESCAPES))[1:-1]


def set_variables(pairs: list[tuple[str, str]]) -> str:
    """Several variables in one command through Asterisk's ARRAY() (funcs/func_strings.c, loaded by
    default): ``SET VARIABLE ARRAY(A,B) "a,b"``, one round trip instead of one per variable (commands
    cannot be pipelined: res_agi waits for each on the socket). Each value is escaped for ARRAY's comma
    split and then for the AGI line, cut at ``MAX_ARRAY_VALUE`` characters, and the values share what is
    left of res_agi's line after the names: always one line of at most ``MAX_LINE_BODY`` bytes."""
    if len(pairs) == 1:
        return set_variable(*pairs[0])
    for name, _ in pairs:
        _check_name(name)
    head = f"SET VARIABLE ARRAY({','.join(name for name, _ in pairs)}) "
    # 2 quotes around the whole, the comma ARRAY splits on between values
    budget = (MAX_LINE_BODY - len(head) - 2 - (len(pairs) - 1)) // len(pairs)
    values = ",".join(_fit(_clean(value, MAX_ARRAY_VALUE), budget, _array_value) for _, value in pairs)
    return f'{head}"{values}"'


def commands_for(variables: list[tuple[str, str]]) -> list[str]:
    """The commands that set ``variables`` (the verdict first): the verdict alone, in a plain command that
    needs nothing but res_agi, then a known contact's id, name and owner in one ARRAY() command. So the
    verdict never depends on func_strings (no read-back needed: without ARRAY() only the contact
    variables are missing, the caller's name is not shown), and a contact's call costs 2 round trips, not
    4 (scripts/bench_agi.py: 70 % of its callers are contacts; 4 commands each cost ~50 % more CPU per
    screen and p99 2 → 15 ms at 2,000/s on 2 cores)."""
    if not variables:
        return []
    first, rest = variables[0], variables[1:]
    return [set_variable(*first), *([set_variables(rest)] if rest else [])]


@dataclass(frozen=True)
class AgiReply:
    code: int
    result: str = ""
    data: str = ""
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200 and self.result != "-1"


RESULT_1 = AgiReply(code=200, result="1", text="200 result=1")


def parse_reply(line: str) -> AgiReply:
    """One reply line → ``AgiReply``; garbage raises ``AgiProtocolError``.

    Uses panoramisk's parser for the ``result=`` grammar; it cannot tell us about garbage, so the code
    is checked here first.
    """
    line = line.rstrip("\r\n")
    if line == "200 result=1":  # what every SET VARIABLE gets: skip the grammar
        return RESULT_1
    code_text = line[:3]
    if len(line) < 3 or not (code_text.isascii() and code_text.isdigit()):
        raise AgiProtocolError(f"not an AGI reply: {line[:60]!r}")
    try:
        parsed: dict[str, Any] = parse_agi_result(line)
    except ValueError as e:  # panoramisk's int() on what its \d matched (non-ASCII digits)
        raise AgiProtocolError(f"not an AGI reply: {line[:60]!r}") from e
    value, data = parsed.get("result", ("", ""))
    if parsed.get("error") == "AGIAppError":
        value = "-1"
    return AgiReply(code=int(code_text), result=value, data=data, text=line)
