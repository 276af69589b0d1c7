"""Every recorded scenario end to end over real loopback sockets: a fake Asterisk replays the FastAGI
request (to callguard's screen server) and the AMI stream (to callguard's AMI client); the tracker's
outcomes go through the store and the outbox to a sink. Plus `callguard replay` and `callguard outbox`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callguard.agi.server import AgiServer
from callguard.ami.client import AmiClient
from callguard.app import Service
from callguard.calls.recorder import CallFlow
from callguard.calls.tracker import CallOutcome, CallTracker
from callguard.cli import main
from callguard.config import Config
from callguard.leads.outbox import OutboxWorker
from callguard.screening.rules import parse_schedule
from callguard.screening.screener import ScreenService
from callguard.store import Store
from tests.fakes import asterisk_agi
from tests.fakes.asterisk_ami import (  # noqa: F401 (fresh_logging: autouse)
    CALLERS,
    EXPECTED,
    TIMING,
    TRACES,
    FakeAsterisk,
    Script,
    events_after_login,
    fresh_logging,
)
from tests.test_outbox import RecordingSink

LEADS = {name for name, (outcome, _) in EXPECTED.items() if outcome == "missed"}


def has_agi(name: str) -> bool:
    return (TRACES / f"{name}.agi.txt").stat().st_size > 0


def live_cfg(cfg: Config, ami_port: int) -> Config:
    return dataclasses.replace(
        cfg,
        agi=dataclasses.replace(cfg.agi, port=0),
        ami=dataclasses.replace(cfg.ami, enabled=True, port=ami_port, secret="secret", reconnect_min=0.01,
                                reconnect_max=0.05),
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_scenario_over_loopback_gives_exactly_the_expected_leads(cfg: Config, store: Store, name: str) -> None:
    await store.overrides.upsert_many([("+15550000666", "block", "lab"), ("+15550000999", "block", "lab")])
    fake = await FakeAsterisk([Script(events_after_login(name))]).start()
    cfg = live_cfg(cfg, fake.port)
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


async def test_service_runs_ami_and_outbox_and_persists_on_stop(cfg: Config) -> None:
    fake = await FakeAsterisk([Script(events_after_login("s04_caller_abandon"))]).start()
    cfg = live_cfg(cfg, fake.port)
    cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, enabled=False))
    service = Service(cfg)
    try:
        rt = await service.start()
        assert {"outbox", "calls", "ami"} <= set(rt.parts)
        flow: CallFlow = rt.parts["calls"]
        await asyncio.wait_for(flow.recorded.wait(), 10)
        started = time.monotonic()
    finally:
        await service.stop()  # what SIGTERM does
    assert time.monotonic() - started < 5
    store = await Store.open(cfg.store.path)
    try:
        row = await store.calls.get("1795435962.104")
        item = await store.outbox.get("1795435962.104")
    finally:
        await store.close()
    assert row is not None and row.reason == "abandoned"
    assert item is not None and item.state in ("pending", "sent")
    assert any(a.get("Action") == "Logoff" for a in fake.actions)
    await fake.stop()


def _cli(cfg: Config, *argv: str) -> list[str]:
    assert cfg.source is not None
    return ["--config", str(cfg.source), *argv]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_replay_command_one_line_per_call(cfg: Config, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(cfg, "replay", str(TRACES / f"{name}.ami.txt"), "--json")) == 0
    lines = capsys.readouterr().out.splitlines()
    (obj,) = [json.loads(line) for line in lines]
    assert (obj["outcome"], obj["reason"]) == EXPECTED[name]
    assert obj["lead"] == (name in LEADS)


def test_replay_command_plain_with_timing(cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(cfg, "replay", str(TIMING / "s04_caller_abandon.ami.jsonl"))) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("1795435962.104  caller=+15551230003  did=5551000  missed  reason=abandoned  wait_s=7.0")
    assert out.endswith("LEAD")


def test_replay_command_cut_capture_and_garbage(
    cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (TRACES / "s03_queue_timeout.ami.txt").read_bytes()
    cut = tmp_path / "cut.ami.txt"
    cut.write_bytes(data[: data.index(b"Event: QueueCallerAbandon")] + b"garbage line\r\n\r\n")
    assert main(_cli(cfg, "replay", str(cut))) == 0
    captured = capsys.readouterr()
    assert "lost  reason=no_end_in_capture" in captured.out and "no lead" in captured.out
    assert "1 unparseable AMI frame(s) skipped" in captured.err
    assert main(_cli(cfg, "replay", str(tmp_path / "missing.txt"))) == 1


async def test_outbox_command_list_retry_drop(cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_outbox import lead, row

    store = await Store.open(cfg.store.path)
    try:
        for lid in ("D1", "D2", "P1"):
            await store.calls.record(row(lid), lead(lid), 1.0)
        await store.outbox.mark_dead("D1", "webhook refused the lead: 400", 2.0)
        await store.outbox.mark_dead("D2", "gave up after 12 attempts", 2.0)
    finally:
        await store.close()
    await asyncio.to_thread(_outbox_cli, cfg, capsys)


def _outbox_cli(cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()  # the migration's log line, printed before main() configures logging
    assert main(_cli(cfg, "outbox", "list")) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["D1", "D2"] and "error=webhook refused the lead: 400" in out[0]
    assert main(_cli(cfg, "outbox", "retry", "D1")) == 0
    assert main(_cli(cfg, "outbox", "drop", "D2")) == 0
    assert main(_cli(cfg, "outbox", "drop", "P1")) == 1  # not a dead letter
    capsys.readouterr()
    assert main(_cli(cfg, "outbox", "list", "--state", "all", "--json")) == 0
    states = {j["linkedid"]: j["state"] for j in map(json.loads, capsys.readouterr().out.splitlines())}
    assert states == {"D1": "pending", "P1": "pending"}


async def test_link_drop_mid_call_is_logged_as_lost_and_makes_no_lead(cfg: Config, store: Store) -> None:
    body = events_after_login("s03_queue_timeout")
    cut = body.index(b"Event: QueueCallerJoin")
    fake = await FakeAsterisk([Script(body[:cut], drop=True), Script(events_after_login("s14_direct_busy"))]).start()
    cfg = live_cfg(cfg, fake.port)
    cfg = dataclasses.replace(cfg, calls=dataclasses.replace(cfg.calls, stale_after=0.2))
    flow = CallFlow(CallTracker(cfg), store)
    client = AmiClient(cfg.ami, flow.on_event, flow.on_link_lost)
    with capture_logs() as logs:
        await flow.start()
        await client.start()
        try:
            async with asyncio.timeout(10):
                while flow.outcomes.get("lost", 0) < 1 or flow.outcomes.get("missed", 0) < 1:
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
    assert lost["linkedid"] == "1795435939.94" and lost["reason"] == "stale"
    assert await store.outbox.counts() == {"pending": 1}  # only the busy call from after the reconnect
    assert (await store.outbox.get("1795440311.12")) is not None
