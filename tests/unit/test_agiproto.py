"""FastAGI wire parsing, pure: recorded lines and hypothesis."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callguard.agi.wire import (
    AGI_MAX_LINE,
    MAX_ARRAY_VALUE,
    MAX_VALUE_LENGTH,
    commands_for,
    parse_reply,
    parse_request,
    quote,
    set_variable,
    set_variables,
)
from callguard.errors import AgiProtocolError
from callguard.screening.rules import Decision, Verdict
from callguard.screening.screener import variables_for
from callguard.store.numbers import Contact
from tests.fakes.asterisk_agi import agi_args, app_args, channel_variables, load


def test_recorded_header_parses() -> None:
    req = parse_request(load("s02_clean_answered").header)
    assert req.script == "screen"
    assert (req.callerid, req.calleridname, req.uniqueid) == ("+15551230001", "Alice", "1795435929.89")
    assert req.did == "5551000"  # agi_dnid is "unknown" in the lab: agi_extension is the DID
    assert req.get("agi_accountcode") == ""  # "agi_accountcode: " keeps its empty value


def test_did_prefers_explicit_argument_then_dnid() -> None:
    base = b"agi_network_script: screen\nagi_dnid: 74951234567\nagi_extension: s\n"
    assert parse_request(base).did == "74951234567"
    assert parse_request(base + b"agi_arg_1: 5552000\n").did == "5552000"
    assert parse_request(b"agi_network_script: screen/?x=1\nagi_extension: s\n").did == ""


@pytest.mark.parametrize(
    "block",
    [b"", b"\n", b"hello\n", b"agi_callerid: 1\n", b"GET / HTTP/1.1\r\nHost: x\r\n", b"agi_network_script screen\n"],
)
def test_bad_requests_raise_protocol_error(block: bytes) -> None:
    with pytest.raises(AgiProtocolError):
        parse_request(block)


@pytest.mark.parametrize(
    ("line", "code", "result", "data"),
    [
        ("200 result=1", 200, "1", ""),
        ("200 result=1 (+15551230099)", 200, "1", "+15551230099"),
        ('200 result=1 ("Protocol Test" <+15551230099>)', 200, "1", '"Protocol Test" <+15551230099>'),
        ("200 result=0", 200, "0", ""),
        ("200 result=4", 200, "4", ""),
        ("200 result=-1", 200, "-1", ""),
        ("510 Invalid or unknown command", 510, "", ""),
        ("520-Invalid command syntax.  Proper usage follows:", 520, "", ""),
        ("520 End of proper usage.", 520, "", ""),
        ("100 result=0 Trying...", 100, "", ""),
    ],
)
def test_recorded_replies(line: str, code: int, result: str, data: str) -> None:
    reply = parse_reply(line)
    assert (reply.code, reply.result, reply.data) == (code, result, data)
    assert reply.ok == (code == 200 and result != "-1")


@pytest.mark.parametrize("line", ["", "HANGUP", "ok", "20", "abc result=1", "00¹", "２００ result=1"])
def test_garbage_replies(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_reply(line)


def test_set_variable_quoting() -> None:
    assert set_variable("CALLGUARD_VERDICT", "spam") == "SET VARIABLE CALLGUARD_VERDICT spam"
    assert set_variable("X", 'Иван "Big"\nPetrov\\') == 'SET VARIABLE X "Иван \\"Big\\" Petrov\\\\"'
    assert set_variable("X", "") == 'SET VARIABLE X ""'
    with pytest.raises(ValueError, match="variable name"):
        set_variable("BAD NAME", "x")


_header_names = st.from_regex(r"agi_[a-z_]{1,20}", fullmatch=True)
_header_values = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_header_names, _header_values, max_size=25), _header_values)
def test_header_round_trip(headers: dict[str, str], script: str) -> None:
    headers["agi_network_script"] = script
    block = "".join(f"{k}: {v}\n" for k, v in headers.items()).encode()
    req = parse_request(block)
    assert dict(req.headers) == headers


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_raise_protocol_error(block: bytes) -> None:
    with contextlib.suppress(AgiProtocolError):
        parse_request(block)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_reply_parses_or_raises_protocol_error(line: str) -> None:
    with contextlib.suppress(AgiProtocolError):
        parse_reply(line)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_quote_is_one_safe_line(value: str) -> None:
    q = quote(value)
    assert "\n" not in q and "\r" not in q and q.startswith('"') and q.endswith('"')


@pytest.mark.parametrize(
    ("block", "headers"),
    [
        (b"agi_network_script: screen\r\nagi_x: 1\r\n", {"agi_network_script": "screen", "agi_x": "1"}),  # CRLF
        (b"agi_network_script: screen\nagi_accountcode:\n", {"agi_network_script": "screen", "agi_accountcode": ""}),
        (b"agi_network_script: a: b\n", {"agi_network_script": "a: b"}),  # only the first ": " splits
    ],
)
def test_line_parser_edge_cases(block: bytes, headers: dict[str, str]) -> None:
    assert dict(parse_request(block).headers) == headers


# --- commands as Asterisk reads them (the res_agi.c and main/app.c parsers, ported in tests/fakes) ------

def _cleaned(value: str, limit: int) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in value)[:limit]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_single_value_reaches_the_channel_unchanged(value: str) -> None:
    assert channel_variables([set_variable("X", value)]) == {"X": _cleaned(value, MAX_VALUE_LENGTH)}


def test_ported_parsers_on_known_inputs() -> None:
    # Cases read off the C: quotes group and vanish, a backslash escapes, brackets hide commas.
    assert agi_args('SET VARIABLE X "a b"') == ["SET", "VARIABLE", "X", "a b"]
    assert agi_args('SET VARIABLE X ""') == ["SET", "VARIABLE", "X", ""]
    assert agi_args('SET VARIABLE X a\\ b') == ["SET", "VARIABLE", "X", "a b"]
    assert app_args("a,b") == ["a", "b"]
    assert app_args("a,") == ["a", ""]
    assert app_args('a,""') == ["a", ""]
    assert app_args("f(a,b),c") == ["f(a,b)", "c"]
    assert app_args("[a,b],c") == ["[a,b]", "c"]
    assert app_args('"a,b",c') == ["a,b", "c"]
    assert app_args("a\\,b,c") == ["a,b", "c"]
    assert app_args("") == []


# --- every line callguard writes fits res_agi's command buffer ----------------------------------

# What a CRM field can hold: anything, long runs of plain characters (the old bare path sent them uncut),
# the characters the dialplan and the two argument parsers treat as syntax, and 4-byte emoji.
_crm_text = st.one_of(
    st.text(max_size=3000),
    st.from_regex(r"[A-Za-z0-9_+.@-]{0,12000}", fullmatch=True),
    st.text(alphabet='A\\",()[]{}$;&|?: \n\r\x1b\u202e', max_size=6000),
    st.text(alphabet=st.characters(min_codepoint=0x1F600, max_codepoint=0x1F64F), max_size=3000),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(Verdict)), _crm_text, _crm_text, _crm_text)
def test_every_command_is_one_line_within_res_agi_buffer(verdict: Verdict, cid: str, name: str, owner: str) -> None:
    decision = Decision(verdict, "test", Contact(cid, name, owner, False, "amocrm"))
    commands = commands_for(variables_for(decision))  # what agi/server writes, in order
    assert commands[0] == f"SET VARIABLE CALLGUARD_VERDICT {verdict.value}"  # the verdict first, alone
    for command in commands:
        wire = (command + "\n").encode()
        assert wire.count(b"\n") == 1 and b"\r" not in wire
        assert len(wire) <= AGI_MAX_LINE  # res_agi.c: fgets() into AGI_BUF_LEN (2048) bytes
    got = channel_variables(commands)
    # what arrives is the cleaned value, cut to fit: a prefix, never something else
    assert got["CALLGUARD_VERDICT"] == verdict.value
    assert _cleaned(name, MAX_ARRAY_VALUE).startswith(got.get("CALLGUARD_CONTACT_NAME", ""))
    assert channel_variables(commands, func_strings=False)["CALLGUARD_VERDICT"] == verdict.value  # never needs ARRAY()


def test_array_command_shapes() -> None:
    command = set_variables([("A", "x,y"), ("B", 'Ivan "Big" (Jr) [x] \\ z'), ("C", "")])
    assert command == 'SET VARIABLE ARRAY(A,B,C) "x\\\\,y,Ivan \\\\\\"Big\\\\\\" \\\\(Jr\\\\) \\\\[x\\\\] \\\\\\\\ z,"'
    assert channel_variables([command]) == {"A": "x,y", "B": 'Ivan "Big" (Jr) [x] \\ z', "C": ""}
    assert set_variables([("A", "1")]) == set_variable("A", "1")  # one variable: the plain command
    with pytest.raises(ValueError, match="variable name"):
        set_variables([("A", "1"), ("B C", "2")])


def test_plain_long_value_cannot_smuggle_a_second_command() -> None:
    # Found live: 2,011 plain characters then "HANGUP" went out bare and uncut; res_agi read HANGUP as
    # the next command.
    line = set_variable("CALLGUARD_CONTACT_NAME", "A" * 2011 + "HANGUP")
    assert len(line.encode()) + 1 <= AGI_MAX_LINE and "HANGUP" not in line
    assert channel_variables([line]) == {"CALLGUARD_CONTACT_NAME": "A" * MAX_VALUE_LENGTH}
