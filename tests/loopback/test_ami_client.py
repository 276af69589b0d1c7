"""The AMI client against a fake Asterisk speaking the recorded bytes over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import pytest
from structlog.testing import capture_logs

from callguard.ami.client import AmiClient
from callguard.ami.wire import Frame
from callguard.calls.tracker import CallOutcome, CallTracker, Outcome
from callguard.config import AmiConfig, Config
from tests.fakes.asterisk_ami import FakeAsterisk, Script, events_after_login, frames, fresh_logging  # noqa: F401 (fresh_logging: autouse)


def ami_cfg(cfg: Config, port: int, **kw: float) -> AmiConfig:
    base = {"reconnect_min": 0.01, "reconnect_max": 0.05, "connect_timeout": 2.0, "ping_interval": 30.0,
            "pong_timeout": 5.0}
    base.update(kw)
    return dataclasses.replace(cfg.ami, enabled=True, port=port, secret="secret", **base)


class Collector:
    def __init__(self) -> None:
        self.frames: list[tuple[Frame, float]] = []
        self.changed = asyncio.Event()
        self.lost = 0

    def __call__(self, frame: Frame, now: float) -> None:
        self.frames.append((frame, now))
        self.changed.set()

    def link_lost(self) -> None:
        self.lost += 1
        self.changed.set()

    async def until(self, cond: Callable[[], bool], limit: float = 5.0) -> None:
        async with asyncio.timeout(limit):
            while not cond():
                self.changed.clear()
                # events wake us at once; client state (reconnects, logins) is re-checked every 10 ms
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.01)


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeAsterisk]]:
    started: list[FakeAsterisk] = []
    yield started
    for f in started:
        await f.stop()


async def serve(fakes: list[FakeAsterisk], *scripts: Script) -> FakeAsterisk:
    fake = await FakeAsterisk(list(scripts)).start()
    fakes.append(fake)
    return fake


async def received_as_recorded(got: Collector, scenario: str) -> None:
    """Every event the scenario recorded reaches the handler, in the recorded order."""
    want = [f for f in frames(scenario) if "Event" in f]
    await got.until(lambda: len(got.frames) >= len(want))
    assert [f for f, _ in got.frames] == want


async def test_events_arrive_in_recorded_order(cfg: Config, fakes: list[FakeAsterisk]) -> None:
    fake = await serve(fakes, Script(events_after_login("s02_clean_answered")))
    got = Collector()
    client = AmiClient(ami_cfg(cfg, fake.port), got)
    await client.start()
    try:
        await received_as_recorded(got, "s02_clean_answered")
        assert client.connected and client.logins == 1 and client.version == "11.0.0"
        assert fake.logins[0]["Username"] == "callguard" and fake.logins[0]["Secret"] == "secret"
    finally:
        await client.stop()
    assert not client.connected
    assert any(a.get("Action") == "Logoff" for a in fake.actions)


async def test_rejected_login_keeps_retrying_and_says_why(cfg: Config, fakes: list[FakeAsterisk]) -> None:
    fake = await serve(fakes, Script(reject=True))
    got = Collector()
    client = AmiClient(ami_cfg(cfg, fake.port), got)
    await client.start()
    try:
        await got.until(lambda: fake.connections >= 3 and client.reconnects >= 2)
        assert not client.connected and client.logins == 0
        assert "Authentication failed" in client.last_error
    finally:
        await client.stop()


async def test_connection_refused_is_retried(cfg: Config, fakes: list[FakeAsterisk]) -> None:
    fake = await serve(fakes, Script())
    port = fake.port
    await fake.stop()
    fakes.clear()
    got = Collector()
    client = AmiClient(ami_cfg(cfg, port), got)
    await client.start()
    try:
        await got.until(lambda: client.reconnects >= 3)
        assert not client.connected and client.last_error
    finally:
        await client.stop()


async def test_link_drop_mid_call_reconnects_relogs_in_and_never_makes_a_phantom_lead(
    cfg: Config, fakes: list[FakeAsterisk]
) -> None:
    body = events_after_login("s03_queue_timeout")
    cut = body.index(b"Event: QueueCallerJoin")  # the link dies while the caller waits in the queue
    fake = await serve(fakes, Script(body[:cut], drop=True), Script(events_after_login("s04_caller_abandon")))
    cfg = dataclasses.replace(cfg, calls=dataclasses.replace(cfg.calls, stale_after=0.3))
    tracker = CallTracker(cfg)
    outcomes: list[CallOutcome] = []
    got = Collector()

    def on_event(frame: Frame, now: float) -> None:
        outcomes.extend(tracker.feed(frame, now))
        got(frame, now)

    def on_lost() -> None:
        tracker.link_lost()
        got.link_lost()

    client = AmiClient(ami_cfg(cfg, fake.port), on_event, on_lost)
    await client.start()
    try:
        await got.until(lambda: any(o.reason == "abandoned" for o in outcomes) and client.logins == 2)
        assert fake.logins and len(fake.logins) == 2
        assert got.lost == 1 and client.reconnects >= 1 and client.connected
        # stale_after later on the tracker's clock (here the arrival time fed in): no need to sleep it out
        outcomes.extend(tracker.expire(time.time() + 0.35))
    finally:
        await client.stop()
    by_call = {o.linkedid: (o.outcome, o.reason) for o in outcomes}
    assert by_call == {"1795435939.94": (Outcome.LOST, "stale"), "1795435962.104": (Outcome.MISSED, "abandoned")}


async def test_call_answered_while_the_link_was_down_is_no_phantom_lead(
    cfg: Config, fakes: list[FakeAsterisk]
) -> None:
    """The link drops before an answered call starts and comes back after its AgentConnect: the rest of
    that call (AgentComplete, hang-ups) must not read as a miss. The next call is tracked normally."""
    body = events_after_login("s02_clean_answered")
    tail = body[body.index(b"\r\n\r\n", body.index(b"Event: AgentConnect")) + 4:]
    fake = await serve(fakes, Script(b"", drop=True), Script(tail + events_after_login("s04_caller_abandon")))
    tracker = CallTracker(cfg)
    outcomes: list[CallOutcome] = []
    got = Collector()

    def on_event(frame: Frame, now: float) -> None:
        outcomes.extend(tracker.feed(frame, now))
        got(frame, now)

    client = AmiClient(ami_cfg(cfg, fake.port), on_event, tracker.link_lost)
    await client.start()
    try:
        # the recorded events come in the same read as the Login reply, so they may be handled before
        # the login coroutine resumes and counts the login: wait for both
        await got.until(lambda: any(o.reason == "abandoned" for o in outcomes) and client.logins == 2)
    finally:
        await client.stop()
    by_call = {o.linkedid: (o.outcome, o.reason) for o in outcomes}
    assert by_call == {"1795435929.88": (Outcome.LOST, "start_unseen"),
                       "1795435962.104": (Outcome.MISSED, "abandoned")}


async def test_half_open_link_is_detected_by_the_pong_deadline(cfg: Config, fakes: list[FakeAsterisk]) -> None:
    fake = await serve(fakes, Script(silent=True), Script())
    got = Collector()
    client = AmiClient(ami_cfg(cfg, fake.port, ping_interval=0.05, pong_timeout=0.1), got, got.link_lost)
    with capture_logs() as logs:
        await client.start()
        await got.until(lambda: got.lost >= 1 and client.logins >= 2)
    try:
        assert any(e["event"] == "ami_pong_timeout" for e in logs)
        assert fake.connections >= 2
        pings = [a for a in fake.actions if a.get("Action") == "Ping"]
        assert pings
    finally:
        await client.stop()


async def test_answered_pings_keep_the_link(cfg: Config, fakes: list[FakeAsterisk]) -> None:
    fake = await serve(fakes, Script())
    got = Collector()
    client = AmiClient(ami_cfg(cfg, fake.port, ping_interval=0.02, pong_timeout=0.5), got, got.link_lost)
    await client.start()
    try:
        await got.until(lambda: sum(a.get("Action") == "Ping" for a in fake.actions) >= 5)
        assert client.connected and got.lost == 0 and client.logins == 1
    finally:
        await client.stop()


async def test_garbage_from_the_peer_is_counted_not_fatal(cfg: Config, fakes: list[FakeAsterisk]) -> None:
    body = b"this is not ami\r\n\r\n\x00\x01\x02\r\n\r\n" + events_after_login("s14_direct_busy")
    fake = await serve(fakes, Script(body))
    got = Collector()
    client = AmiClient(ami_cfg(cfg, fake.port), got)
    await client.start()
    try:
        await received_as_recorded(got, "s14_direct_busy")
        assert client.connected and client.logins == 1
    finally:
        await client.stop()


async def test_link_closed_during_login_is_retried_at_once(cfg: Config, fakes: list[FakeAsterisk]) -> None:
    """A peer that closes after the banner: the pending Login fails now, not after connect_timeout."""

    async def banner_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(banner_then_close, "127.0.0.1", 0)
    got = Collector()
    client = AmiClient(ami_cfg(cfg, server.sockets[0].getsockname()[1], connect_timeout=30.0), got)
    try:
        await client.start()
        await got.until(lambda: client.reconnects >= 3, limit=3.0)
        assert "closed" in client.last_error
    finally:
        await client.stop()
        server.close()
        await server.wait_closed()
