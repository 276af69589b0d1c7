"""A fake Asterisk on the AMI side, speaking exactly as the recordings in tests/fixtures/traces.

Each connection gets the recorded banner line, the recorded Login response (only its ActionID is the
client's, as Asterisk echoes it), then the recorded bytes that followed, ``\\r\\n`` framing untouched.
It answers ``Ping`` as Asterisk 22 does (``Ping: Pong`` + ``Timestamp``) and ``Logoff`` with Goodbye.
Scripts per connection let a test drop the link mid-call, go silent (half-open) or reject the login
with the recorded ``Authentication failed`` (s00 badlogin).

``CoreShowChannels``, ``DBGetTree`` and ``DBGet`` are answered in the layout recorded on Asterisk 22.10.1
(tests/fixtures/astdb/*.ami.txt: header order, ``EventList``, ``ListItems``, the not-found error), from
``channels`` (CoreShowChannel frames) and ``astdb`` (key → value, by default every entry of
calls.dbgettree.ami.txt). ``denied`` answers them as a user without ``write = reporting`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from callguard.ami.wire import EOM, Frame, FrameFeeder, parse_stream
from callguard.config import Config

FIXTURES = Path(__file__).parent.parent / "fixtures"
TRACES = FIXTURES / "traces"
TIMING = FIXTURES / "ami_timing"
ASTDB = FIXTURES / "astdb"


def recorded_astdb() -> dict[str, str]:
    """Key → value of every entry in the recorded DBGetTree reply."""
    frs = FrameFeeder(expect_banner=False).feed((ASTDB / "calls.dbgettree.ami.txt").read_bytes())
    return {f["Key"]: f["Val"] for f in frs if f.get("Event") == "DBGetTreeResponse"}


def recorded_channels() -> list[Frame]:
    """The CoreShowChannel events recorded mid-queue (one call: caller ;1/;2 and a member's two legs)."""
    frs = FrameFeeder(expect_banner=False).feed((ASTDB / "coreshowchannels.ami.txt").read_bytes())
    return [f for f in frs if f.get("Event") == "CoreShowChannel"]


def _frame(fields: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode() + b"\r\n"


def _list_reply(aid: str, message: str, events: list[list[tuple[str, str]]], complete: str) -> bytes:
    head = _frame([("Response", "Success"), ("ActionID", aid), ("EventList", "start"), ("Message", message)])
    done = _frame([("Event", complete), ("ActionID", aid), ("EventList", "Complete"), ("ListItems", str(len(events)))])
    return head + b"".join(_frame(e) for e in events) + done

# scenario → (outcome, reason) as recorded (README of the traces + the bytes).
EXPECTED: dict[str, tuple[str, str]] = {
    "s01_spam_blocked": ("spam", "screened"),
    "s02_clean_answered": ("answered", "queue"),
    "s03_queue_timeout": ("missed", "timeout"),
    "s04_caller_abandon": ("missed", "abandoned"),
    "s05_queue_no_members": ("missed", "no_agents"),
    "s06_agi_down_failopen": ("answered", "queue"),
    "s07a_anonymous_empty_cid": ("answered", "queue"),
    "s07b_anonymous_cid": ("answered", "queue"),
    "s09b_redirect": ("answered", "queue"),
    "s10_short_hangup_before_queue": ("missed", "hangup_before_queue"),
    "s11_agi_protocol_replies": ("answered", "queue"),
    "s13_ringgroup_noanswer": ("missed", "no_answer"),
    "s14_direct_busy": ("missed", "busy"),
    "s16_queue_timeout_userevent": ("missed", "timeout"),
}
CALLERS = {
    "s01_spam_blocked": "+15550000666", "s03_queue_timeout": "+15551230002",
    "s04_caller_abandon": "+15551230003", "s05_queue_no_members": "+15551230004",
    "s10_short_hangup_before_queue": "+15551239999", "s13_ringgroup_noanswer": "+15551230022",
    "s14_direct_busy": "+15551230023", "s16_queue_timeout_userevent": "+15551230002",
}
ID_KEYS = ("Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid")


def raw(name: str) -> bytes:
    return (TRACES / f"{name}.ami.txt").read_bytes()


def frames(name: str) -> list[Frame]:
    return parse_stream(raw(name))[1]


def timed_chunks(name: str) -> list[tuple[float, bytes]]:
    """The received read() chunks with their recorded offsets in seconds."""
    out = []
    for line in (TIMING / f"{name}.ami.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["dir"] == "recv":
            out.append((float(rec["t"]), rec["data"].encode("latin-1")))
    return out


def relabel(frs: list[Frame], tag: str) -> list[Frame]:
    """A copy of a call with its channel ids made unique, for overlapping-call tests."""
    out = []
    for f in frs:
        g = dict(f)
        for k in ID_KEYS:
            if g.get(k) and g[k] not in ("none", "<unknown>"):
                g[k] = f"{g[k]}{tag}"
        out.append(g)
    return out


def split_recording(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(banner line with its \\r\\n, Login response with its \\r\\n\\r\\n, everything after)."""
    nl = data.index(b"\r\n") + 2
    end = data.index(EOM, nl) + len(EOM)
    return data[:nl], data[nl:end], data[end:]


@dataclass
class Script:
    """What one connection does. ``body`` is sent after a good login; ``drop`` closes the link after
    it, ``silent`` stops answering pings (a half-open link), ``reject`` answers the login with the
    recorded failure."""

    body: bytes = b""
    drop: bool = False
    silent: bool = False
    reject: bool = False
    astdb: bool = True  # False: this connection's AstDB and channel list are empty (the call is yet to end)


@dataclass
class FakeAsterisk:
    scripts: list[Script]
    login_recording: str = "s02_clean_answered"
    logins: list[Frame] = field(default_factory=list)
    actions: list[Frame] = field(default_factory=list)
    connections: int = 0
    astdb: dict[str, str] = field(default_factory=recorded_astdb)
    channels: list[Frame] = field(default_factory=list)
    denied: bool = False
    sent: asyncio.Event = field(default_factory=asyncio.Event)  # set when a script's body was written
    server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> FakeAsterisk:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self._writers):
                w.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._converse(script, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _converse(self, script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        banner, login_ok, _ = split_recording(raw(self.login_recording))
        writer.write(banner)
        feeder = FrameFeeder(expect_banner=False)
        logged_in = False
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            for action in feeder.feed(chunk):
                self.actions.append(action)
                name = action.get("Action", "").lower()
                aid = action.get("ActionID", "")
                if name == "login" and script.reject:
                    _, bad, _ = split_recording(raw("s00_ami_login_failure.badlogin"))
                    writer.write(_with_action_id(bad, aid))
                elif name == "login":
                    self.logins.append(action)
                    logged_in = True
                    writer.write(_with_action_id(login_ok, aid))
                    writer.write(script.body)
                    await writer.drain()
                    self.sent.set()
                    if script.drop:
                        return
                elif name == "ping" and logged_in and not script.silent:
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\nTimestamp: {time.time():.6f}\r\n\r\n"
                        .encode()
                    )
                elif name in ("coreshowchannels", "dbgettree", "dbget") and logged_in:
                    writer.write(self.answer(name, action, aid, script.astdb))
                elif name == "logoff":
                    writer.write(f"Response: Goodbye\r\nActionID: {aid}\r\nMessage: Thanks for all the fish.\r\n\r\n"
                                 .encode())
                    await writer.drain()
                    return
            await writer.drain()


    def answer(self, name: str, action: Frame, aid: str, filled: bool = True) -> bytes:
        if self.denied:
            return _frame([("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")])
        if name == "coreshowchannels":
            events = [[("Event", "CoreShowChannel"), ("ActionID", aid),
                       *((k, v) for k, v in ch.items() if k not in ("Event", "ActionID"))]
                      for ch in (self.channels if filled else [])]
            return _list_reply(aid, "Channels will follow", events, "CoreShowChannelsComplete")
        family = "/" + action.get("Family", "").strip("/")
        astdb = self.astdb if filled else {}
        if name == "dbget":
            key = f"{family}/{action.get('Key', '')}"
            if key not in astdb:
                return _frame([("Response", "Error"), ("ActionID", aid), ("Message", "Database entry not found")])
            event = [("Event", "DBGetResponse"), ("Family", family[1:]), ("Key", action.get("Key", "")),
                     ("Val", astdb[key]), ("ActionID", aid)]
            return _list_reply(aid, "Result will follow", [event], "DBGetComplete")
        events = [[("Event", "DBGetTreeResponse"), ("Key", k), ("Val", v), ("ActionID", aid)]
                  for k, v in sorted(astdb.items()) if k.startswith(family + "/")]
        return _list_reply(aid, "Result will follow", events, "DBGetTreeComplete")


def _with_action_id(response: bytes, action_id: str) -> bytes:
    lines = response.split(b"\r\n")
    return b"\r\n".join(
        b"ActionID: " + action_id.encode() if line.startswith(b"ActionID: ") else line for line in lines
    )


def events_after_login(name: str) -> bytes:
    return split_recording(raw(name))[2]


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """``cli.main`` configures structlog onto the sys.stderr of the test that ran it, a capture stream
    pytest closes afterwards; start every test of ours from structlog's defaults instead."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


LEADS = {name for name, (outcome, _) in EXPECTED.items() if outcome == "missed"}


def loopback_cfg(cfg: Config, ami_port: int) -> Config:
    """``cfg`` talking to a ``FakeAsterisk`` on ``ami_port``, the FastAGI server on a free port, quick
    reconnects."""
    return dataclasses.replace(
        cfg,
        agi=dataclasses.replace(cfg.agi, port=0),
        ami=dataclasses.replace(cfg.ami, enabled=True, port=ami_port, secret="secret", reconnect_min=0.01,
                                reconnect_max=0.05),
    )
