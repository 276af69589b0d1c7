"""The FastAGI server over real loopback sockets, fed the requests a real Asterisk 22 sent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from callguard import metrics
from callguard.agi.connection import AgiSession
from callguard.agi.server import AgiServer
from callguard.config import Config
from callguard.screening.rules import parse_schedule
from callguard.screening.screener import ScreenService
from callguard.store import Store
from callguard.store.db import HOT_BUSY_TIMEOUT_MS
from callguard.store.numbers import Lookup
from tests.fakes import asterisk_agi
from tests.fakes.asterisk_agi import Channel, header_with, load, session

SCENARIOS = {
    # scenario → the verdict callguard must send (lab spam list: +15550000666, +15550000999)
    "s01_spam_blocked": "spam",
    "s02_clean_answered": "clean",
    "s03_queue_timeout": "clean",
    "s04_caller_abandon": "clean",
    "s05_queue_no_members": "clean",
    "s07a_anonymous_empty_cid": "anonymous",
    "s07b_anonymous_cid": "anonymous",
    "s09b_redirect": "clean",
    "s10_short_hangup_before_queue": "clean",
    "s11_agi_protocol_replies": "clean",
    "s13_ringgroup_noanswer": "clean",
    "s14_direct_busy": "clean",
    "s16_queue_timeout_userevent": "clean",
}


@dataclasses.dataclass
class Running:
    server: AgiServer
    screener: ScreenService
    store: Store

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


async def _start(cfg: Config, store: Store, **agi: object) -> Running:
    cfg = dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, port=0, **agi))
    screener = ScreenService(cfg, store, parse_schedule(cfg.hours))
    await screener.start()
    server = AgiServer(cfg.agi, screener)
    await server.start()
    return Running(server, screener, store)


@pytest.fixture
async def running(cfg: Config, store: Store) -> AsyncIterator[Running]:
    await store.overrides.upsert_many([("+15550000666", "block", "lab"), ("+15550000999", "block", "lab")])
    r = await _start(cfg, store)
    try:
        yield r
    finally:
        await r.server.stop()
        await r.screener.stop()


async def _good_request(r: Running) -> list[str]:
    started = time.perf_counter()
    commands = await session(r.port, load("s02_clean_answered").header)
    assert commands == ["SET VARIABLE CALLGUARD_VERDICT clean"]
    assert time.perf_counter() - started < 1.0
    return commands


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_recorded_request_gets_verdict(running: Running, name: str) -> None:
    transcript = load(name)
    commands = await session(running.port, transcript.header, transcript)
    expected = f"SET VARIABLE CALLGUARD_VERDICT {SCENARIOS[name]}"
    assert commands == [expected]
    recorded = [cmd for cmd, _ in transcript.exchanges if cmd.startswith("SET VARIABLE CALLGUARD_VERDICT")]
    if SCENARIOS[name] in ("clean", "spam"):
        assert recorded == [expected]  # byte for byte what the lab's server sent


async def test_screens_are_recorded_off_the_call_path(running: Running) -> None:
    await session(running.port, load("s01_spam_blocked").header)
    await running.screener.stop()  # flushes
    assert await running.store.screens.verdict_of("1795435927.85") in (None, "spam")
    uniqueid = load("s01_spam_blocked").header.decode().split("agi_uniqueid: ")[1].split("\n")[0]
    assert await running.store.screens.verdict_of(uniqueid) == "spam"


async def _add_contact(store: Store) -> None:
    async with store.db.write() as conn:
        await conn.execute(
            "INSERT INTO numbers VALUES ('+15551230001', '4711', 'Ivan \"Big\" Petrov', 'Anna', 0, 'amocrm', 1)"
        )


CONTACT_VARIABLES = {
    "CALLGUARD_VERDICT": "clean",
    "CALLGUARD_CONTACT_ID": "4711",
    "CALLGUARD_CONTACT_NAME": 'Ivan "Big" Petrov',
    "CALLGUARD_OWNER": "Anna",
}
CONTACT_COMMANDS = [  # the verdict alone first (DESIGN.md, the dialplan contract), then the contact in one ARRAY()
    "SET VARIABLE CALLGUARD_VERDICT clean",
    'SET VARIABLE ARRAY(CALLGUARD_CONTACT_ID,CALLGUARD_CONTACT_NAME,CALLGUARD_OWNER) '
    '"4711,Ivan \\\\\\"Big\\\\\\" Petrov,Anna"',
]


async def test_known_contact_sets_contact_variables(running: Running) -> None:
    await _add_contact(running.store)
    header = load("s02_clean_answered").header
    for _ in range(2):  # every call the same: no state between calls
        channel = Channel()
        assert await session(running.port, header, channel=channel) == CONTACT_COMMANDS
        assert channel.variables == CONTACT_VARIABLES


async def test_contact_variables_without_func_strings(running: Running) -> None:
    """An Asterisk without func_strings.so (no ARRAY()) still gets the verdict, in its own plain command:
    only the contact variables are missing (the caller's name is not shown); no error, no retry."""
    await _add_contact(running.store)
    with capture_logs() as logs:
        channel = Channel(func_strings=False)
        assert await session(running.port, load("s02_clean_answered").header, channel=channel) == CONTACT_COMMANDS
    assert channel.variables == {"CALLGUARD_VERDICT": "clean"}
    assert [e["event"] for e in logs if e["log_level"] == "error"] == []


async def test_a_rejected_command_stops_the_rest(running: Running) -> None:
    """Asterisk refusing a SET VARIABLE (520) ends the writes: the verdict went first, the dialplan
    branches on what it has, and the screen is recorded as not delivered."""
    await _add_contact(running.store)

    class Refusing(Channel):
        def execute(self, command: str) -> str:
            return "520 Invalid command syntax." if "VERDICT" in command else super().execute(command)

    with capture_logs() as logs:
        got = await session(running.port, load("s02_clean_answered").header, channel=Refusing())
    assert got == CONTACT_COMMANDS[:1]
    assert [e["command"] for e in logs if e["event"] == "agi_command_rejected"] == ["CALLGUARD_VERDICT"]
    assert [e["delivered"] for e in logs if e["event"] == "call_screened"] == [False]


async def test_async_hangup_line_is_not_taken_for_the_reply(running: Running) -> None:
    transcript = load("s10_short_hangup_before_queue")
    assert transcript.unsolicited == ["HANGUP"]
    commands = await session(running.port, transcript.header, transcript)
    assert commands == ["SET VARIABLE CALLGUARD_VERDICT clean"]
    await _good_request(running)


async def test_recorded_reply_formats_over_the_wire(cfg: Config, store: Store) -> None:
    """s11: the commands the lab sent, answered with the recorded replies, parsed by AgiSession."""
    transcript = load("s11_agi_protocol_replies")
    seen = []

    class Probe(AgiServer):  # the lab's script instead of the screen
        async def converse(self, session: AgiSession) -> None:
            for command, _ in transcript.exchanges:
                seen.append(await session.send_command(command))

    cfg = dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, port=0))
    server = Probe(cfg.agi, ScreenService(cfg, store, parse_schedule(cfg.hours)))
    await server.start()
    try:
        assert server.port is not None
        await session(server.port, transcript.header, transcript)
    finally:
        await server.stop()
    by_code = [(r.code, r.result, r.data) for r in seen]
    assert by_code == [
        (200, "1", "+15551230099"),
        (200, "1", '"Protocol Test" <+15551230099>'),
        (200, "1", "s11_agi_protocol_replies"),
        (200, "0", ""),
        (200, "1", ""),
        (200, "4", ""),
        (510, "", ""),
        (520, "", ""),
        (200, "1", ""),
    ]


# --- bad input: each must leave the server answering the next good request -------------------------


async def _raw(port: int, payload: bytes, wait: float = 2.0) -> bytes:
    """Send ``payload``, half-close, return what the server answered before closing.

    A server that closes with our bytes unread makes the kernel send RST: that too is "closed"."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), wait)
    except (ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()


async def test_truncated_request_then_close(running: Running) -> None:
    header = load("s02_clean_answered").header
    assert await _raw(running.port, header[: len(header) // 2]) == b""
    await _good_request(running)


async def test_header_without_blank_line_then_close(running: Running) -> None:
    # The exact case that freezes panoramisk 1.4's Application.handler.
    header = load("s02_clean_answered").header.rstrip(b"\n") + b"\n"
    assert await _raw(running.port, header) == b""
    await _good_request(running)


async def test_request_without_network_script(running: Running) -> None:
    lines = [ln for ln in load("s02_clean_answered").header.split(b"\n") if b"agi_network_script" not in ln]
    assert await _raw(running.port, b"\n".join(lines)) == b""
    await _good_request(running)


async def test_unknown_script_is_closed_cleanly(running: Running) -> None:
    header = header_with(load("s02_clean_answered"), agi_network_script="dial-out")
    assert await session(running.port, header) == []
    await _good_request(running)


async def test_one_megabyte_header(running: Running) -> None:
    payload = b"agi_network_script: screen\nagi_x: " + b"9" * (1 << 20) + b"\n\n"
    assert await _raw(running.port, payload) == b""
    many_lines = b"agi_network_script: screen\n" + b"agi_x: 1\n" * 200_000 + b"\n"
    assert await _raw(running.port, many_lines) == b""
    await _good_request(running)


async def test_binary_garbage(running: Running) -> None:
    assert await _raw(running.port, bytes(range(256)) * 40 + b"\n\n") == b""
    await _good_request(running)


async def test_silent_client_is_timed_out_and_does_not_block_others(cfg: Config, store: Store) -> None:
    r = await _start(cfg, store, read_timeout_ms=300)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        await _good_request(r)  # served while the silent client is connected
        assert await asyncio.wait_for(reader.read(), 3.0) == b""  # then dropped after the read timeout
        writer.close()
        await writer.wait_closed()
    finally:
        await r.server.stop()
        await r.screener.stop()


async def test_decision_past_the_deadline_is_not_trusted(running: Running, monkeypatch) -> None:
    """A read that stalls the thread (a dying disk) cannot be cut short; past the deadline its answer
    is replaced by clean and counted."""
    real = running.store.numbers.lookup_now

    def stalled(phone: str | None) -> Lookup:
        time.sleep(0.35)
        return real(phone)

    monkeypatch.setattr(running.store.numbers, "lookup_now", stalled)
    before = metrics.REGISTRY.get_sample_value("callguard_agi_deadline_exceeded_total") or 0.0
    assert await session(running.port, load("s01_spam_blocked").header) == ["SET VARIABLE CALLGUARD_VERDICT clean"]
    assert metrics.REGISTRY.get_sample_value("callguard_agi_deadline_exceeded_total") == before + 1


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), sqlite3.OperationalError("database is locked")])
async def test_internal_error_answers_clean(running: Running, monkeypatch, error: Exception) -> None:
    """A database lock surfaces as OperationalError once the hot read's bounded wait is over: that
    bound is well inside the deadline, and what it raises answers clean like any fault of ours."""
    assert running.store.db.hot.execute("PRAGMA busy_timeout").fetchone()[0] == HOT_BUSY_TIMEOUT_MS
    assert running.screener.cfg.agi.deadline_ms / 2 > HOT_BUSY_TIMEOUT_MS

    def broken(phone: str | None) -> None:
        raise error

    monkeypatch.setattr(running.store.numbers, "lookup_now", broken)
    with capture_logs() as logs:
        assert await session(running.port, load("s01_spam_blocked").header) == [
            "SET VARIABLE CALLGUARD_VERDICT clean"
        ]
    screened = [e for e in logs if e["event"] == "call_screened"]
    assert screened[0]["reason"] == f"fail_open:internal_error:{type(error).__name__}"


async def test_connection_limit_refuses_beyond_it(cfg: Config, store: Store) -> None:
    r = await _start(cfg, store, max_connections=1, read_timeout_ms=2000)
    try:
        _, idle_writer = await asyncio.open_connection("127.0.0.1", r.port)
        await asyncio.sleep(0.05)
        # Over the limit: closed at once, so Asterisk fails open.
        assert await asyncio.wait_for(session(r.port, load("s02_clean_answered").header), 2) == []
        idle_writer.close()
        await idle_writer.wait_closed()
    finally:
        await r.server.stop()
        await r.screener.stop()


async def test_stop_drains_in_flight_requests(running: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(load("s01_spam_blocked").header)
    # The verdict is out and the server waits for Asterisk's "200 result=1": the screen is in flight.
    assert await reader.readline() == b"SET VARIABLE CALLGUARD_VERDICT spam\n"
    stopping = asyncio.create_task(running.server.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done() and not running.server.listening
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"200 result=1\n")
    assert await reader.read() == b""  # finished, then closed by the server
    writer.close()
    await asyncio.wait_for(stopping, 5)


def test_fixture_transcripts_exist() -> None:
    assert set(SCENARIOS) <= {p.name.split(".")[0] for p in asterisk_agi.TRACES.glob("*.agi.txt")}


# --- monitor mode: the verdict is computed, logged and counted, spam is let through -----------


async def test_monitor_mode_answers_spam_clean_and_counts_it(cfg: Config, store: Store) -> None:
    await store.overrides.upsert_many([("+15550000666", "block", "lab")])
    cfg = dataclasses.replace(cfg, screening=dataclasses.replace(cfg.screening, mode="monitor"))
    r = await _start(cfg, store)
    before = metrics.SCREENS.labels(verdict="would_block")._value.get()
    try:
        with capture_logs() as logs:
            spam = await session(r.port, load("s01_spam_blocked").header)
            clean = await session(r.port, load("s02_clean_answered").header)
    finally:
        await r.server.stop()
        await r.screener.stop()
    assert spam == ["SET VARIABLE CALLGUARD_VERDICT clean"]  # the dialplan lets it through
    assert clean == ["SET VARIABLE CALLGUARD_VERDICT clean"]
    screened = {e["caller"]: e for e in logs if e["event"] == "call_screened"}
    assert screened["+15550000666"]["would_block"] is True and screened["+15550000666"]["reason"].startswith("monitor:")
    assert screened["+15551230001"]["would_block"] is False
    uniqueid = load("s01_spam_blocked").header.decode().split("agi_uniqueid: ")[1].split("\n")[0]
    assert await store.screens.verdict_of(uniqueid) == "would_block"
    assert metrics.SCREENS.labels(verdict="would_block")._value.get() == before + 1
    report = await store.stats.report(0, time.time() + 1)
    assert report.total.would_block == 1 and report.total.spam_blocked == 0


async def test_check_says_what_monitor_mode_would_do(cfg: Config, store: Store) -> None:
    await store.overrides.upsert_many([("+15550000666", "block", "lab")])
    for mode, verdict in (("enforce", "spam"), ("monitor", "clean")):
        c = dataclasses.replace(cfg, screening=dataclasses.replace(cfg.screening, mode=mode))
        doc = await ScreenService(c, store, parse_schedule(c.hours)).explain("+15550000666")
        assert doc["verdict"] == verdict and doc["variables"]["CALLGUARD_VERDICT"] == verdict
        assert doc["reason"].startswith("monitor:") == (mode == "monitor")


def test_the_dashboard_shows_would_block_only_when_there_is_some() -> None:
    from callguard.store.stats import Report, Row
    from callguard.web.dashboard import _kpis

    quiet = Report(since=0, until=1, by=None, total=Row("", screened=3, verdicts={"clean": 3}), rows=[],
                   missed_by_did={})
    monitor = Report(since=0, until=1, by=None, total=Row("", screened=3, verdicts={"clean": 1, "would_block": 2}),
                     missed_by_did={},
                     rows=[])
    assert 'data-figure="would_block"' not in _kpis(quiet)
    assert 'data-figure="would_block"' in _kpis(monitor) and ">2<" in _kpis(monitor)
