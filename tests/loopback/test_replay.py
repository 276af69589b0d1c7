"""`callguard replay` on the recorded captures, and the service running the AMI link, the tracker and the
outbox against a fake Asterisk over loopback (persisting on stop)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pytest

from callguard.app import Service
from callguard.cli import main
from callguard.config import Config
from callguard.store import Store
from tests.fakes.asterisk_ami import (  # noqa: F401 (fresh_logging: autouse)
    EXPECTED,
    LEADS,
    TIMING,
    TRACES,
    FakeAsterisk,
    Script,
    events_after_login,
    fresh_logging,
    loopback_cfg,
)


async def test_service_runs_ami_and_outbox_and_persists_on_stop(cfg: Config) -> None:
    fake = await FakeAsterisk([Script(events_after_login("s04_caller_abandon"))]).start()
    cfg = loopback_cfg(cfg, fake.port)
    cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, enabled=False))
    service = Service(cfg)
    try:
        parts = await service.start()
        assert {"outbox", "calls", "ami"} <= {p.name for p in parts.ordered()}
        flow = parts.calls
        assert flow is not None
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


