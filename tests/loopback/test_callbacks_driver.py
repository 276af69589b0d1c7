"""The call-back driver over a real store and a recording CRM, with a fake clock: a delivered lead gets a
free manager, is handed on after the pause while untouched, stops at the recorded call-back (s18); a
restart resumes the timer; a CRM outage delays a hand-on and never doubles it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from callguard.callbacks.driver import CallbackDriver
from callguard.callbacks.settings import CallbackConfig, parse_roster
from callguard.store import Store
from callguard.store.callbacks import Callbacks
from tests.callbacks_support import LINKEDID, T0, Clock, RecordingCrm, deliver_lead, lab_config, member
from tests.fakes.asterisk_ami import frames


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = await Store.open(":memory:")
    yield s
    await s.close()


def driver(store: Store, crm: RecordingCrm, clock: Clock, cfg: CallbackConfig | None = None) -> CallbackDriver:
    cfg = cfg or lab_config()
    d = CallbackDriver(cfg, parse_roster(cfg), Callbacks(store.db), crm, clock=clock, rng=random.Random(3))
    for name, dev in (("Agent101", "Local/101@agents"), ("Agent102", "Local/102@agents")):
        d.on_event(member(name, dev), clock())
    return d


async def state_of(store: Store, key: str = LINKEDID) -> dict[str, Any]:
    rec = await Callbacks(store.db).get(key)
    assert rec is not None
    return rec.to_json()


async def test_free_manager_then_hand_on_then_the_call_back_stops_it(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    await deliver_lead(store, LINKEDID, T0)
    d = driver(store, crm, clock)
    await d.load()
    try:
        clock.t = T0 + 1
        await d.pump(clock.t)
        first = await state_of(store)
        assert first["state"] == "assigned" and first["lead"] == "lead-77" and first["did"] == "5551000"
        assert crm.responsibles() == [{"Ivan": 101, "Petr": 102}[first["manager"]]]
        assert [c[0] for c in crm.calls] == ["responsible", "task"]
        assert crm.calls[1][3] == pytest.approx(T0 + 1 + 600)  # the task is due at the end of the pause

        clock.t = T0 + 300  # inside the pause: nothing
        await d.pump(clock.t)
        assert len(crm.calls) == 2

        clock.t = T0 + 1 + 600 + 1  # the pause ran out, untouched: the other manager
        await d.pump(clock.t)
        second = await state_of(store)
        assert second["state"] == "handed_on" and second["handoffs"] == 1
        assert second["manager"] != first["manager"]
        assert len(set(crm.responsibles())) == 2 and len(crm.calls) == 4

        clock.t += 30  # Ivan calls the customer back from his phone (s18, recorded)
        for f in frames("s18_callback_answered"):
            d.on_event(f, clock.t)
        await d.pump(clock.t)
        done = await state_of(store)
        assert done["state"] == "reached" and done["by"] == "Ivan"
        assert done["first_attempt_at"] == done["first_talk_at"] == clock.t
        clock.t += 10_000
        await d.pump(clock.t)
        assert len(crm.calls) == 4  # stopped: no hand-on after the call-back
        assert await Callbacks(store.db).count_open() == 0
    finally:
        await d.stop()


async def test_restart_in_the_pause_resumes_the_timer_once(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    await deliver_lead(store, LINKEDID, T0)
    d = driver(store, crm, clock)
    await d.load()
    clock.t = T0 + 1
    await d.pump(clock.t)
    await d.stop()
    due = (await state_of(store))["due"]

    d2 = driver(store, crm, clock)  # a restart: the same store, a new process
    await d2.load()
    try:
        assert len(d2.book) == 1
        clock.t = due - 1
        await d2.pump(clock.t)
        assert len(crm.calls) == 2
        clock.t = due + 1
        await d2.pump(clock.t)
        await d2.pump(clock.t)
        assert (await state_of(store))["handoffs"] == 1 and len(crm.calls) == 4
        await d2.pump(clock.t + 1)  # the same lead is not taken in twice
        assert len(d2.book) == 1
    finally:
        await d2.stop()


async def test_crm_outage_delays_the_hand_on_never_doubles_it(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    await deliver_lead(store, LINKEDID, T0)
    d = driver(store, crm, clock)
    await d.load()
    try:
        crm.failing = 3
        clock.t = T0 + 1
        await d.pump(clock.t)
        assert crm.calls == [] and (await state_of(store))["state"] == "assigned"
        for _ in range(2):  # retries every crm_retry while the CRM is down: still the same assignment
            clock.t += 61
            await d.pump(clock.t)
        st = await state_of(store)
        assert st["handoffs"] == 0 and crm.calls == []
        clock.t += 61
        await d.pump(clock.t)  # up again: exactly one responsible + task, the pause starts now
        assert [c[0] for c in crm.calls] == ["responsible", "task"]
        st = await state_of(store)
        assert st["handoffs"] == 0 and st["due"] == pytest.approx(clock.t + 600, abs=1)
    finally:
        await d.stop()


async def test_pending_crm_step_is_redone_after_a_crash(store: Store) -> None:
    """A crash after the row was written and before the CRM call: the restart carries the step out."""
    crm, clock = RecordingCrm(), Clock(T0)
    await deliver_lead(store, LINKEDID, T0)
    d = driver(store, crm, clock)
    await d.load()
    clock.t = T0 + 1
    await d.intake(clock.t)
    await d.flush()  # persisted with its pending actions; the CRM worker never ran ("crash")
    await d.stop()
    assert crm.calls == [] and (await Callbacks(store.db).get(LINKEDID)).pending  # type: ignore[union-attr]
    d2 = driver(store, crm, clock)
    await d2.load()
    try:
        await d2.pump(clock.t)
        assert [c[0] for c in crm.calls] == ["responsible", "task"]
        assert (await Callbacks(store.db).get(LINKEDID)).pending == []  # type: ignore[union-attr]
    finally:
        await d2.stop()


async def test_the_customer_getting_through_closes_it_and_a_new_miss_opens_another(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    await deliver_lead(store, LINKEDID, T0)
    d = driver(store, crm, clock)
    await d.load()
    try:
        clock.t = T0 + 1
        await d.pump(clock.t)
        connect = next(f for f in frames("s02_clean_answered") if f.get("Event") == "AgentConnect")
        d.on_event({**connect, "CallerIDNum": "89035550142"}, clock.t + 5)  # the way the trunk sends it
        await d.pump(clock.t + 5)
        assert (await state_of(store))["state"] == "got_through"
        # a later miss from the same number: the first is over, so a new call-back
        await deliver_lead(store, "1796114999.5", clock.t + 100, misses=2)
        clock.t += 101
        await d.pump(clock.t)
        assert (await state_of(store, "1796114999.5"))["state"] == "assigned"
        assert len(d.book) == 1
    finally:
        await d.stop()


async def test_nobody_free_waits_for_the_first_who_becomes_free(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    await deliver_lead(store, LINKEDID, T0)
    cfg = lab_config()
    d = CallbackDriver(cfg, parse_roster(cfg), Callbacks(store.db), crm, clock=clock, rng=random.Random(1))
    d.on_event(member("Agent101", "Local/101@agents", paused="1"), T0)
    d.on_event(member("Agent102", "Local/102@agents", status="2"), T0)  # in use
    await d.load()
    try:
        clock.t = T0 + 1
        await d.pump(clock.t)
        assert (await state_of(store))["state"] == "waiting" and crm.calls == []
        d.on_event(member("Agent101", "Local/101@agents", paused="0"), T0 + 20)  # Ivan unpauses
        await d.pump(T0 + 20)
        st = await state_of(store)
        assert st["state"] == "assigned" and st["manager"] == "Ivan" and crm.responsibles() == [101]
    finally:
        await d.stop()


class FakeLink:
    def __init__(self, reply: list[dict[str, str]]) -> None:
        self.logins = 0
        self.reply = reply
        self.sent: list[dict[str, str]] = []

    async def send_action(self, action: dict[str, str]) -> Any:
        self.sent.append(action)
        return self.reply


async def test_each_connect_resets_presence_and_asks_queue_status(store: Store) -> None:
    recorded = [f for f in frames("s22_queue_member_added_removed") if f.get("ActionID") == "qs1"]
    cfg = lab_config()
    link = FakeLink(recorded)
    d = CallbackDriver(cfg, parse_roster(cfg), Callbacks(store.db), RecordingCrm(), link=link,
                       clock=Clock(T0), poll_s=3600)
    d.on_event(member("Agent102", "Local/102@agents"), T0)
    assert d.presence.free(T0) == ["Petr"]
    d.on_connected()
    assert d.presence.free(T0) == []  # stale state gone at once
    await d._tasks[-1]  # the QueueStatus request
    assert link.sent == [{"Action": "QueueStatus"}]
    assert d.presence.free(T0) == ["Ivan"]  # as the recorded list says (Agent101, Status 1)


# --- the real adapters against the CRM fakes (their contracts and rate limits) -----------------------


@pytest.mark.parametrize("kind", ["amocrm", "bitrix24"])
async def test_adapters_hand_on_in_the_crm_fakes(tmp_path: Any, kind: str) -> None:
    from callguard.crm.amocrm_api import AmoApi
    from callguard.crm.bitrix24 import Bitrix24
    from callguard.crm.callbacks import AmoCallbacks, Bitrix24Callbacks
    from tests.crm_support import amo_config, b24_config
    from tests.fakes.amocrm import FakeAmo
    from tests.fakes.bitrix24 import FakeBitrix

    fake: Any = FakeBitrix(rate=2, burst=50) if kind == "bitrix24" else FakeAmo(rps=7)  # the real limits
    base = await fake.start()
    store = await Store.open(":memory:")
    try:
        cfg = b24_config(tmp_path, base) if kind == "bitrix24" else amo_config(tmp_path, base)
        if kind == "bitrix24":
            lead = fake.m_crm_lead_add({"fields": {"TITLE": "Пропущенный звонок"}})["result"]
            crm: Any = Bitrix24Callbacks(Bitrix24(cfg))
        else:
            lead = 9_100_001
            fake.leads[lead] = {"id": lead, "name": "Звонок", "responsible_user_id": 504141, "created_at": 0}
            crm = AmoCallbacks(AmoApi(cfg))
        clock = Clock(T0)
        await deliver_lead(store, LINKEDID, T0, ref=str(lead))
        cb_cfg = lab_config()
        d = CallbackDriver(cb_cfg, parse_roster(cb_cfg), Callbacks(store.db), crm, clock=clock,
                           rng=random.Random(3))
        for name, dev in (("Agent101", "Local/101@agents"), ("Agent102", "Local/102@agents")):
            d.on_event(member(name, dev), T0)
        await d.load()
        clock.t = T0 + 1
        await d.pump(clock.t)
        clock.t += 601
        await d.pump(clock.t)
        st = await state_of(store)
        assert st["state"] == "handed_on"
        users = [{"Ivan": 101, "Petr": 102}[m] for m in st["assignees"]]
        if kind == "bitrix24":
            assert fake.lead_updates == [(lead, {"ASSIGNED_BY_ID": u}) for u in users]
            assert fake.leads[lead]["ASSIGNED_BY_ID"] == users[-1]
        else:
            assert fake.lead_patches == [(lead, {"responsible_user_id": u}) for u in users]
            assert [(t["responsible_user_id"], t["task_type_id"], t["entity_type"], t["entity_id"])
                    for t in fake.tasks] == [(u, 1, "leads", lead) for u in users]
            assert fake.tasks[-1]["complete_till"] == int(clock.t + 600)
        assert fake.errors == [], fake.errors
        await d.stop()
    finally:
        await store.close()
        await fake.close()


async def test_after_a_restart_the_intake_reads_minutes_of_leads_not_the_whole_day(store: Store) -> None:
    """The start looks back a day for leads not yet taken in; once caught up, each poll asks only for the
    last minutes (the query excludes taken leads, but SQLite still walks every row since the cursor)."""
    crm, clock = RecordingCrm(), Clock(T0)
    await deliver_lead(store, LINKEDID, T0 - 3 * 3600)  # delivered 3 h before the restart, not yet taken in
    d = driver(store, crm, clock)
    asked: list[float] = []
    real = d.rows.delivered_leads

    async def spy(since: float, limit: int = 200) -> Any:
        asked.append(since)
        return await real(since, limit)

    d.rows.delivered_leads = spy  # type: ignore[method-assign]
    await d.load()
    try:
        clock.t = T0 + 1
        await d.pump(clock.t)  # takes the 3-hour-old lead in
        assert (await state_of(store))["state"] == "assigned"
        assert asked[0] <= T0 - 86_000  # the start reads back a day
        await deliver_lead(store, "1796114370.200", T0 + 2, ref="lead-78")
        for t in (T0 + 3, T0 + 4, T0 + 5):
            clock.t = t
            await d.pump(t)
        assert (await state_of(store))["misses"] == 2  # the new lead (a repeat miss) was taken in
        assert min(asked[1:]) >= T0 + 1 - 600 - 5  # caught up: minutes back, never the day again
    finally:
        await d.stop()
