"""AMI framing on the recorded bytes: banner, frames, incremental feeding, garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callguard.ami.wire import FrameFeeder, encode_action, parse_banner, parse_frame, parse_stream, unescape
from callguard.errors import AmiProtocolError
from tests.fakes.asterisk_ami import EXPECTED, raw


def test_banner_from_recording() -> None:
    assert parse_banner(raw("s02_clean_answered").split(b"\r\n")[0]) == "11.0.0"
    with pytest.raises(AmiProtocolError):
        parse_banner(b"SSH-2.0-OpenSSH_9.6")


def test_frame_with_empty_value_and_colons() -> None:
    f = parse_frame(b"Event: Cdr\r\nAccountCode: \r\nUserField:\r\nAppData: CallguardQueue,Status: TIMEOUT")
    assert f == {"Event": "Cdr", "AccountCode": "", "UserField": "", "AppData": "CallguardQueue,Status: TIMEOUT"}


@pytest.mark.parametrize("junk", [b"hello world", b"\x00\x01\x02", b"no colon here\r\nEvent: X"])
def test_garbage_frame_is_a_typed_error(junk: bytes) -> None:
    with pytest.raises(AmiProtocolError):
        parse_frame(junk)


def test_login_failure_recording() -> None:
    banner, (resp,) = parse_stream(raw("s00_ami_login_failure.badlogin"))
    assert banner == "11.0.0"
    assert resp == {"Response": "Error", "ActionID": "bad-1", "Message": "Authentication failed"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recording_parses_whole(name: str) -> None:
    data = raw(name)
    _, frames = parse_stream(data)
    assert len(frames) == data.count(b"\r\n\r\n")
    assert frames[0]["Response"] == "Success" and frames[-1]["Response"] == "Goodbye"
    assert all("Event" in f or "Response" in f for f in frames)


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(1, 80_000), max_size=40), name=st.sampled_from(sorted(EXPECTED)))
def test_any_chunking_gives_the_same_frames(cuts: list[int], name: str) -> None:
    data = raw(name)
    feeder = FrameFeeder()
    got = []
    prev = 0
    for cut in [*sorted({c % len(data) for c in cuts}), len(data)]:
        got.extend(feeder.feed(data[prev:cut]))
        prev = cut
    assert got == parse_stream(data)[1]
    assert feeder.bad_frames == 0


def test_feeder_skips_garbage_and_counts_it() -> None:
    feeder = FrameFeeder(expect_banner=False)
    out = feeder.feed(b"Event: A\r\nX: 1\r\n\r\n\xff\xfe garbage\r\n\r\nEvent: B\r\n\r\n")
    assert [f["Event"] for f in out] == ["A", "B"]
    assert feeder.bad_frames == 1 and "bad AMI line" in feeder.last_error


def test_feeder_bounds_an_endless_message() -> None:
    feeder = FrameFeeder(expect_banner=False, max_frame_bytes=1000)
    with pytest.raises(AmiProtocolError):
        feeder.feed(b"Event: X\r\n" + b"A: b\r\n" * 500)


def test_encode_action_refuses_header_injection() -> None:
    assert encode_action({"Action": "Ping", "ActionID": "1"}) == b"Action: Ping\r\nActionID: 1\r\n\r\n"
    with pytest.raises(AmiProtocolError):
        encode_action({"Action": "Login", "Username": "x\r\nAction: Originate"})


# --- C escapes (main/utils.c ast_escape_c), applied by Asterisk to names and VarSet values -------------


def _ast_escape_c(s: str) -> str:
    """Asterisk's escaper, ported from main/utils.c for the round trip."""
    table = {"\a": "a", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t", "\v": "v", "\\": "\\",
             "'": "'", '"': '"', "?": "?"}
    return "".join("\\" + table[ch] if ch in table else ch for ch in s)


def test_unescape_recorded_shape() -> None:
    # live, Asterisk 22.10.1: CALLERID(name) = `" != "" & "):System(x)` came as NewCallerid CallerIDName
    assert unescape('\\" != \\"\\" & \\"):System(x)') == '" != "" & "):System(x)'
    assert unescape("plain") == "plain"
    assert unescape("a\\qb") == "a\\qb"  # not an escape Asterisk writes: kept


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_unescape_inverts_asterisk_escape(value: str) -> None:
    assert unescape(_ast_escape_c(value)) == value
