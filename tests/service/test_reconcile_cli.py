"""``callguard reconcile``: over a fake Asterisk answering with the recorded AstDB entries."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from callguard.calls.recorder import write_outcome
from callguard.calls.tracker import CallOutcome, Outcome
from callguard.cli import reconcile
from callguard.config import Config
from callguard.store import Store
from tests.fakes.asterisk_ami import (
    ASTDB,
    FakeAsterisk,
    Script,
    fresh_logging,  # noqa: F401 (autouse)
    loopback_cfg,
    recorded_astdb,
)

LIDS = json.loads((ASTDB / "scenarios.json").read_text())
ENDED = max(float(v.split("|")[3]) for v in recorded_astdb().values())
MISSED = {"s03_queue_timeout", "s04_caller_abandon", "s05_queue_no_members", "s10_short_hangup_before_queue",
          "s13_ringgroup_noanswer", "s14_direct_busy", "x_after_hours"}


@pytest.fixture
async def fake() -> FakeAsterisk:
    f = await FakeAsterisk([Script()]).start()
    yield f  # type: ignore[misc]
    await f.stop()


def _cfg(cfg: Config, port: int) -> Config:
    c = loopback_cfg(cfg, port)
    return dataclasses.replace(c, store=dataclasses.replace(c.store, path=Path(str(cfg.store.path))))


async def test_dry_run_says_call_by_call_what_it_would_create(
    cfg: Config, fake: FakeAsterisk, store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconcile.time, "time", lambda: ENDED + 60)
    s03 = LIDS["s03_queue_timeout"]
    await write_outcome(store, CallOutcome(s03, "u", "+15551230002", "5551000", "clean", Outcome.MISSED, "timeout",
                                           ENDED - 30, ENDED - 10, 20.0), False, ENDED)
    code = await reconcile.run(_cfg(cfg, fake.port), ENDED - 3600, dry_run=True, as_json=True)
    assert code == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_lid = {r["linkedid"]: r for r in rows}
    assert len(by_lid) == 12
    assert by_lid[s03]["action"] == "recorded" and not by_lid[s03]["lead"]
    leads = {name for name, lid in LIDS.items() if by_lid[lid]["lead"]}
    assert leads == MISSED - {"s03_queue_timeout"}
    assert by_lid[LIDS["s02_clean_answered"]]["outcome"] == "answered" and not by_lid[LIDS["x_dial_answered"]]["lead"]
    assert await store.outbox.counts() == {"pending": 1}  # dry run: nothing written
    assert [a.get("Action") for a in fake.actions if a.get("Action") != "Login"][:2] == ["CoreShowChannels",
                                                                                         "DBGetTree"]


async def test_without_dry_run_creates_each_missing_call_once(
    cfg: Config, fake: FakeAsterisk, store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconcile.time, "time", lambda: ENDED + 60)
    for _ in range(2):
        assert await reconcile.run(_cfg(cfg, fake.port), ENDED - 3600, dry_run=False, as_json=False) == 0
    out = capsys.readouterr().out
    assert "created 12 (7 leads)" in out and "created 0 (0 leads)" in out
    items = await store.outbox.in_state("pending")
    assert len(items) == len(MISSED) and all(i.payload["reconciled"] for i in items)
    hostile = await store.calls.get(LIDS["x_hostile_caller_id"])
    assert hostile is not None and hostile.outcome == "answered"
    assert "\x1b" not in out
