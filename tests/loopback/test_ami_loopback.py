"""Every recorded scenario end to end over real loopback sockets: a fake Asterisk replays the FastAGI
request (to callguard's screen server) and the AMI stream (to callguard's AMI client); the tracker's
outcomes go through the store and the outbox to a sink. And a link that drops mid-call."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from structlog.testing import capture_logs

from callguard.agi.server import AgiServer
from callguard.ami.client import AmiClient
from callguard.calls.recorder import CallFlow
from callguard.calls.tracker import CallOutcome, CallTracker
from callguard.config import Config
from callguard.leads.outbox import OutboxWorker
from callguard.screening.rules import parse_schedule
from callguard.screening.screener import ScreenService
from callguard.store import Store
from tests.fakes import asterisk_agi
from tests.fakes.asterisk_ami import (  # noqa: F401 (fresh_logging: autouse)
    CALLERS,
    EXPECTED,
    LEADS,
    TRACES,
    FakeAsterisk,
    Script,
    events_after_login,
    fresh_logging,
    loopback_cfg,
)
from tests.fakes.leads import RecordingSink


def has_agi(name: str) -> bool:
    return (TRACES / f"{name}.agi.txt").stat().st_size > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_scenario_over_loopback_gives_exactly_the_expected_leads(cfg: Config, store: Store, name: str) -> None:
    await store.overrides.upsert_many([("+15550000666", "block", "lab"), ("+15550000999", "block", "lab")])
    fake = await FakeAsterisk([Script(events_after_login(name))]).start()
    cfg = loopback_cfg(cfg, fake.port)
    screener = ScreenService(cfg, store, parse_schedule(cfg.hours))
    agi = AgiServer(cfg.agi, screener)
    ended: list[CallOutcome] = []
    done = asyncio.Event()
    flow = CallFlow(CallTracker(cfg), store)
    accept = flow.accept

    def on_outcome(o: CallOutcome) -> None:
        ended.append(o)
        accept(o)
        done.set()

    flow.accept = on_outcome  # type: ignore[method-assign]
    screener.subscribe(flow.on_screen)
    sink = RecordingSink()
    worker = OutboxWorker(cfg, store, sink)
    client = AmiClient(cfg.ami, flow.on_event, flow.on_link_lost)
    for part in (screener, agi, flow):
        await part.start()
    try:
        if has_agi(name):  # Asterisk runs the AGI while the AMI events stream; the screen lands first here
            transcript = asterisk_agi.load(name)
            assert agi.port is not None
            await asterisk_agi.session(agi.port, transcript.header, transcript)
        await client.start()
        await asyncio.wait_for(done.wait(), 10)
        await client.stop()
        await flow.stop()
        await worker.run_once()
    finally:
        await client.stop()
        await agi.stop()
        await screener.stop()
        await fake.stop()
    assert [(o.outcome.value, o.reason) for o in ended] == [EXPECTED[name]]
    row = await store.calls.get(ended[0].linkedid)
    assert row is not None and (row.outcome, row.reason) == EXPECTED[name]
    if name in LEADS:
        assert [(c.linkedid, c.reason) for c in sink.calls] == [(ended[0].linkedid, EXPECTED[name][1])]
        assert sink.calls[0].caller == CALLERS[name]
    else:
        assert sink.calls == []
    if has_agi(name):
        assert ended[0].uniqueid == asterisk_agi.load(name).header.decode().split("agi_uniqueid: ")[1].split("\n")[0]


async def test_link_drop_mid_call_without_a_record_is_logged_as_lost_and_makes_no_lead(
    cfg: Config, store: Store
) -> None:
    """A dialplan without the shipped hangup handler (no AstDB record): the lost call is re-checked, found
    nowhere, and written as lost; never a lead."""
    body = events_after_login("s03_queue_timeout")
    cut = body.index(b"Event: QueueCallerJoin")
    fake = await FakeAsterisk([Script(body[:cut], drop=True), Script(events_after_login("s14_direct_busy"))],
                              astdb={}).start()
    cfg = loopback_cfg(cfg, fake.port)
    cfg = dataclasses.replace(cfg, calls=dataclasses.replace(cfg.calls, stale_after=0.2))
    flow = CallFlow(CallTracker(cfg), store)
    client = AmiClient(cfg.ami, flow.on_event, flow.on_link_lost, flow.resync)
    with capture_logs() as logs:
        await flow.start()
        await client.start()
        try:
            async with asyncio.timeout(10):
                while await store.calls.get("1795435939.94") is None or flow.outcomes.get("missed", 0) < 1:
                    flow.recorded.clear()
                    await flow.recorded.wait()
        finally:
            await client.stop()
            await flow.stop()
            await fake.stop()
    assert client.logins == 2
    events = [e["event"] for e in logs]
    assert "ami_link_lost" in events and "calls_events_lost" in events
    (lost,) = [e for e in logs if e["event"] == "call_lost"]
    assert lost["linkedid"] == "1795435939.94" and lost["reason"] in ("stale", "ended_unseen")
    assert "call_lost_no_record" in events
    assert await store.outbox.counts() == {"pending": 1}  # only the busy call from after the reconnect
    assert (await store.outbox.get("1795440311.12")) is not None
