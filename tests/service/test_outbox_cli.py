"""`callguard outbox list | retry | drop` against a store the outbox filled."""

from __future__ import annotations

import asyncio
import json

import pytest

from callguard.cli import main
from callguard.config import Config
from callguard.store import Store
from tests.fakes.asterisk_ami import fresh_logging  # noqa: F401 (fresh_logging: autouse)
from tests.fakes.leads import lead, row


def _cli(cfg: Config, *argv: str) -> list[str]:
    assert cfg.source is not None
    return ["--config", str(cfg.source), *argv]


async def test_outbox_command_list_retry_drop(cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
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


