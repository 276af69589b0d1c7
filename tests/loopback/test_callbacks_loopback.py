"""The recorded outbound call-backs (s18 answered, s19 not answered, s20 busy, s21 a missed call and then
its call-back) replayed over a real loopback AMI socket into the running driver (its tasks, the AMI
client's fan-out): the open call-back is recorded as reached, or as attempted when nobody answered."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from callguard.ami.client import AmiClient
from callguard.callbacks.driver import CallbackDriver
from callguard.callbacks.settings import parse_roster
from callguard.callbacks.wiring import ClientLink, fan_out
from callguard.config import Config
from callguard.store import Store
from callguard.store.callbacks import Callbacks
from tests.callbacks_support import LINKEDID, RecordingCrm, deliver_lead, lab_config, member
from tests.fakes.asterisk_ami import FakeAsterisk, Script, events_after_login, loopback_cfg


@pytest.mark.parametrize(("scenario", "state"), [
    ("s18_callback_answered", "reached"), ("s19_callback_noanswer", "attempted"),
    ("s20_callback_busy", "attempted"), ("s21_missed_then_callback", "reached"),
])
async def test_recorded_call_back_over_loopback_is_recorded_with_its_outcome(
    tmp_path: Path, scenario: str, state: str,
) -> None:
    # a store on disk, as in production (WAL): a shared-cache memory DB locks tables between its two
    # connections, which a reader polling beside the driver's writer trips over
    store = await Store.open(tmp_path / "cg.sqlite3")
    fake = await FakeAsterisk([Script(body=events_after_login(scenario))]).start()
    try:
        import time

        now = time.time()
        await deliver_lead(store, LINKEDID, now - 60)
        cb_cfg = lab_config()
        crm = RecordingCrm()
        d = CallbackDriver(cb_cfg, parse_roster(cb_cfg), Callbacks(store.db), crm, rng=random.Random(1), poll_s=0.05)
        d.on_event(member("Agent101", "Local/101@agents"), now)
        await d.start()
        async with asyncio.timeout(10):
            while not crm.calls:  # the lead taken in and assigned (the timer's intake)
                d.saved.clear()
                if not crm.calls:
                    await d.saved.wait()
        seen: list[str] = []
        cfg = loopback_cfg(Config(), fake.port)
        client = AmiClient(cfg.ami, fan_out(lambda f, t: seen.append(f.get("Event", "")), d.on_event))
        d.link = ClientLink(client)
        await client.start()
        rows = Callbacks(store.db)
        async with asyncio.timeout(10):
            while True:  # cleared before the look, so a save between the look and the wait is not missed
                d.saved.clear()
                if (rec := await rows.get(LINKEDID)) is not None and rec.state == state:
                    break
                await d.saved.wait()
        assert "DialBegin" in seen and rec.row["by"] == "Ivan"
        assert rec.row["first_attempt_at"] is not None
        assert (rec.row["first_talk_at"] is not None) is (state == "reached")
        await client.stop()
        await d.stop()
    finally:
        await fake.stop()
        await store.close()
