"""The call-back loop's real CRM adapters against the CRM fakes at the vendors' own rate limits: the read
before a hand-on, the task (amoCRM ``POST /api/v4/tasks``, Bitrix24 ``crm.activity.todo.add``), and a
lost reply to the task's create that a redo finds by its marker instead of creating a second task."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from callguard.callbacks.driver import CallbackDriver
from callguard.callbacks.settings import parse_roster
from callguard.crm.amocrm_api import AmoApi
from callguard.crm.bitrix24 import Bitrix24
from callguard.crm.callbacks import AmoCallbacks, Bitrix24Callbacks
from callguard.store import Store
from callguard.store.callbacks import Callbacks
from tests.callbacks_support import LINKEDID, T0, Clock, deliver_lead, lab_config, member
from tests.crm_support import amo_config, b24_config
from tests.fakes.amocrm import FakeAmo
from tests.fakes.bitrix24 import FakeBitrix

PAUSE = 600


class Rig:
    """A fake CRM at its real limits, its adapter, a store with one delivered lead, a driver on a fake clock."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.fake: Any = FakeBitrix(rate=2, burst=50) if kind == "bitrix24" else FakeAmo(rps=7)
        self.clock = Clock(T0)

    async def start(self, tmp_path: Path) -> CallbackDriver:
        base = await self.fake.start()
        self.store = await Store.open(":memory:")
        if self.kind == "bitrix24":
            self.lead = self.fake.m_crm_lead_add({"fields": {"TITLE": "Пропущенный звонок", "STATUS_ID": "NEW"}})[
                "result"]
            crm: Any = Bitrix24Callbacks(Bitrix24(b24_config(tmp_path, base, rate_rps=2.0, rate_burst=50)))
        else:
            self.lead = 9_100_001
            self.fake.leads[self.lead] = {"id": self.lead, "name": "Звонок", "responsible_user_id": 504141,
                                          "status_id": 47_000_001, "created_at": 0}
            crm = AmoCallbacks(AmoApi(amo_config(tmp_path, base, rate_rps=7.0)))
        await deliver_lead(self.store, LINKEDID, T0, ref=str(self.lead))
        cfg = lab_config()
        self.d = CallbackDriver(cfg, parse_roster(cfg), Callbacks(self.store.db), crm, clock=self.clock,
                                rng=random.Random(3))
        for name, dev in (("Agent101", "Local/101@agents"), ("Agent102", "Local/102@agents")):
            self.d.on_event(member(name, dev), T0)
        await self.d.load()
        return self.d

    async def state(self) -> dict[str, Any]:
        rec = await Callbacks(self.store.db).get(LINKEDID)
        assert rec is not None
        return rec.to_json()

    def tasks(self) -> list[tuple[int, int, str]]:
        """(responsible, lead, text) of every task/activity the fake holds."""
        if self.kind == "bitrix24":
            return [(int(a["RESPONSIBLE_ID"]), int(a["OWNER_ID"]), a["DESCRIPTION"]) for a in self.fake.activities]
        return [(t["responsible_user_id"], t["entity_id"], t["text"]) for t in self.fake.tasks]

    def responsibles(self) -> list[int]:
        if self.kind == "bitrix24":
            return [f["ASSIGNED_BY_ID"] for lid, f in self.fake.lead_updates if lid == self.lead]
        return [b["responsible_user_id"] for lid, b in self.fake.lead_patches if lid == self.lead]

    def move_status(self) -> None:
        if self.kind == "bitrix24":
            self.fake.leads[self.lead]["STATUS_ID"] = "IN_PROCESS"
        else:
            self.fake.leads[self.lead]["status_id"] = 47_000_002

    async def close(self) -> None:
        await self.d.stop()
        await self.store.close()
        await self.fake.close()


@pytest.fixture(params=["amocrm", "bitrix24"])
async def rig(request: Any, tmp_path: Path) -> Any:
    r = Rig(request.param)
    await r.start(tmp_path)
    try:
        yield r
    finally:
        await r.close()
    assert r.fake.errors == [], r.fake.errors
    assert r.fake.violations == 0  # paced under the real limits: never a 429 / QUERY_LIMIT_EXCEEDED


async def test_assignment_task_then_an_unchanged_lead_is_handed_on(rig: Rig) -> None:
    rig.clock.t = T0 + 1
    await rig.d.pump(rig.clock.t)
    rig.clock.t += PAUSE + 1
    await rig.d.pump(rig.clock.t)
    st = await rig.state()
    assert st["state"] == "handed_on" and st["handoffs"] == 1
    users = [{"Ivan": 101, "Petr": 102}[m] for m in st["assignees"]]
    assert rig.responsibles() == users
    assert [(u, lead) for u, lead, _ in rig.tasks()] == [(u, rig.lead) for u in users]
    assert [f"[callguard:{LINKEDID}:{e}]" in text for e, (_, _, text) in enumerate(rig.tasks(), 1)] == [True, True]
    if rig.kind == "bitrix24":
        assert rig.fake.calls["crm.lead.get"] == 3  # at each assignment and before the hand-on
        assert rig.fake.activities[-1]["SUBJECT"] == "Перезвонить клиенту"
    else:
        assert rig.fake.calls[f"GET /api/v4/leads/{rig.lead}"] == 3


async def test_status_moved_in_the_crm_closes_it_without_a_hand_on(rig: Rig) -> None:
    rig.clock.t = T0 + 1
    await rig.d.pump(rig.clock.t)
    rig.move_status()
    rig.clock.t += PAUSE + 1
    await rig.d.pump(rig.clock.t)
    st = await rig.state()
    assert st["state"] == "closed_in_crm" and st["reason"] == "crm_status"
    assert len(rig.responsibles()) == 1 and len(rig.tasks()) == 1


async def test_a_lost_task_reply_leaves_exactly_one_task_after_the_redo(rig: Rig) -> None:
    rig.fake.fail_after_commit(504, match="crm.activity.todo.add" if rig.kind == "bitrix24" else "POST /api/v4/tasks")
    rig.clock.t = T0 + 1
    await rig.d.pump(rig.clock.t)
    assert len(rig.tasks()) == 1 and (await rig.state())["state"] == "assigned"  # made, but the reply was lost
    rig.clock.t += 61  # callback.crm_retry: the same step again, which looks for its task first
    await rig.d.pump(rig.clock.t)
    assert len(rig.tasks()) == 1 and len(rig.responsibles()) == 2  # the PATCH/update again (idempotent)
    looked = rig.fake.calls["crm.activity.list"] if rig.kind == "bitrix24" else rig.fake.calls["GET /api/v4/tasks"]
    assert looked == 1
    st = await rig.state()
    assert st["state"] == "assigned" and st["due"] == pytest.approx(rig.clock.t + PAUSE, abs=1)
    rig.clock.t += PAUSE + 1  # and the loop goes on: one hand-on, one more task
    await rig.d.pump(rig.clock.t)
    assert (await rig.state())["handoffs"] == 1 and len(rig.tasks()) == 2
