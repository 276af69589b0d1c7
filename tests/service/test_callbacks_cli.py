"""``callguard callbacks`` and ``callguard stats`` show the call-back and its times; ``callbacks simulate``
prints the loop's steps over a recorded capture (s21) touching no CRM."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from callguard.callbacks.driver import CallbackDriver
from callguard.callbacks.settings import parse_roster
from callguard.cli import main
from callguard.store import Store
from callguard.store.callbacks import Callbacks
from tests.callbacks_support import ALL_DAY, LINKEDID, Clock, RecordingCrm, deliver_lead, lab_config, member
from tests.fakes.asterisk_ami import TRACES, frames

ROSTER = """
[callback]
enabled = true
pause = "10m"
[callback.head]
name = "Olga"
crm_user_id = 7
[[callback.managers]]
name = "Ivan"
crm_user_id = 101
devices = ["Local/101@agents"]
days = {{ {ALL} }}
[[callback.managers]]
name = "Petr"
crm_user_id = 102
devices = ["Local/102@agents"]
days = {{ {ALL} }}
""".replace("{{ {ALL} }}", "{ " + ", ".join(f'{d} = "00:00-24:00"' for d in ALL_DAY) + " }")


async def _called_back_store(path: Path, t0: float) -> None:
    store = await Store.open(path)
    try:
        await deliver_lead(store, LINKEDID, t0)
        cfg, clock = lab_config(), Clock(t0 + 1)
        d = CallbackDriver(cfg, parse_roster(cfg), Callbacks(store.db), RecordingCrm(), clock=clock,
                           rng=random.Random(3))
        d.on_event(member("Agent101", "Local/101@agents"), clock.t)
        await d.load()
        await d.pump(clock.t)
        clock.t = t0 + 95
        for f in frames("s18_callback_answered"):
            d.on_event(f, clock.t)
        await d.pump(clock.t)
        await d.stop()
    finally:
        await store.close()


async def test_callbacks_and_stats_show_the_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cg.sqlite3"
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(f'[store]\npath = "{db}"\n' + ROSTER)
    t0 = time.time() - 3600
    await _called_back_store(db, t0)
    capsys.readouterr()  # the driver's log lines

    import asyncio

    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, main, ["--config", str(cfg_path), "callbacks", "--json"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    row = json.loads(line)
    assert (row["state"], row["label"], row["by"], row["customer"]) == ("reached", "reached", "Ivan", "+79035550142")
    assert row["first_attempt_at"] - row["missed_at"] == pytest.approx(95)

    assert await loop.run_in_executor(None, main, ["--config", str(cfg_path), "callbacks"]) == 0
    text = capsys.readouterr().out
    assert "reached" in text and "95s" in text and "Ivan" in text

    assert await loop.run_in_executor(None, main, ["--config", str(cfg_path), "callbacks", "--open"]) == 0
    assert "no call-backs" in capsys.readouterr().out

    assert await loop.run_in_executor(None, main, ["--config", str(cfg_path), "stats", "--json"]) == 0
    cb = json.loads(capsys.readouterr().out)["callbacks"]
    assert cb["total"]["median_s"] == pytest.approx(95) and cb["total"]["within_sla_share"] == 1.0
    assert [m["key"] for m in cb["by_manager"]] == ["Ivan"] and [d["key"] for d in cb["by_did"]] == ["5551000"]
    assert await loop.run_in_executor(None, main, ["--config", str(cfg_path), "stats"]) == 0
    assert "manager Ivan" in capsys.readouterr().out


def test_simulate_prints_the_steps_of_s21(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = tmp_path / "config.toml"
    store = f'[store]\npath = "{tmp_path / "x.sqlite3"}"\n'
    cfg_path.write_text(store + '[ami]\ninbound_contexts = ["from-trunk"]\n' + ROSTER)
    capture = TRACES / "s21_missed_then_callback.ami.txt"
    assert main(["--config", str(cfg_path), "callbacks", "simulate", str(capture), "--json"]) == 0
    steps = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert steps[0]["cause"] == "lead"
    assert steps[-1]["state"] == "reached"
