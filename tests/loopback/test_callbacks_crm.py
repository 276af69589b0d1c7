"""The CRM side of the call-back loop over a real store, a recording CRM and a fake clock: the
lead is read before a hand-on (a status or responsible changed in the CRM closes it, an unchanged lead is
handed on, a CRM read outage delays the hand-on and never doubles it), a webhook's hint closes it at once,
and a restart keeps "least recently assigned"."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from callguard.callbacks.driver import CallbackDriver
from callguard.callbacks.settings import CallbackConfig, ManagerConfig, parse_roster
from callguard.store import Store
from callguard.store.callbacks import Callbacks
from tests.callbacks_support import ALL_DAY, LINKEDID, T0, Clock, RecordingCrm, deliver_lead, lab_config, member

PAUSE = 600


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = await Store.open(":memory:")
    yield s
    await s.close()


def driver(store: Store, crm: RecordingCrm, clock: Clock, cfg: CallbackConfig | None = None,
           seed: int = 3) -> CallbackDriver:
    cfg = cfg or lab_config()
    d = CallbackDriver(cfg, parse_roster(cfg), Callbacks(store.db), crm, clock=clock, rng=random.Random(seed))
    for name, dev in (("Agent101", "Local/101@agents"), ("Agent102", "Local/102@agents"),
                      ("Agent103", "Local/103@agents")):
        d.on_event(member(name, dev), clock())
    return d


async def state_of(store: Store, key: str = LINKEDID) -> dict[str, Any]:
    rec = await Callbacks(store.db).get(key)
    assert rec is not None
    return rec.to_json()


async def assigned(store: Store, crm: RecordingCrm, clock: Clock) -> CallbackDriver:
    await deliver_lead(store, LINKEDID, T0)
    d = driver(store, crm, clock)
    await d.load()
    clock.t = T0 + 1
    await d.pump(clock.t)
    assert [c[0] for c in crm.calls] == ["responsible", "task"] and crm.reads == 1  # read, then assigned
    return d


async def test_status_changed_in_the_crm_during_the_pause_closes_it(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    d = await assigned(store, crm, clock)
    try:
        crm.status = "IN_PROCESS"  # a manager moved the lead on in the CRM
        clock.t = T0 + 1 + PAUSE + 1
        await d.pump(clock.t)
        st = await state_of(store)
        assert st["state"] == "closed_in_crm" and st["reason"] == "crm_status" and st["handoffs"] == 0
        assert len(crm.calls) == 2 and crm.reads == 2  # the read, no hand-on
        clock.t += 10 * PAUSE
        await d.pump(clock.t)
        assert len(crm.calls) == 2 and len(d.book) == 0
    finally:
        await d.stop()


async def test_responsible_changed_by_hand_closes_it(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    d = await assigned(store, crm, clock)
    try:
        crm.responsible = 7  # the head took it in the CRM
        clock.t = T0 + 1 + PAUSE + 1
        await d.pump(clock.t)
        st = await state_of(store)
        assert st["state"] == "closed_in_crm" and st["reason"] == "crm_responsible" and st["by"] == "Olga"
        assert len(crm.calls) == 2
    finally:
        await d.stop()


async def test_unchanged_lead_is_handed_on(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    d = await assigned(store, crm, clock)
    try:
        first = crm.responsibles()[0]
        clock.t = T0 + 1 + PAUSE + 1
        await d.pump(clock.t)
        st = await state_of(store)
        assert st["state"] == "handed_on" and st["handoffs"] == 1
        assert len(crm.responsibles()) == 2 and crm.responsibles()[1] != first
    finally:
        await d.stop()


async def test_crm_read_down_delays_the_hand_on_exactly_one_after(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    d = await assigned(store, crm, clock)
    try:
        crm.reads_failing = 3
        clock.t = T0 + 1 + PAUSE + 1
        for _ in range(3):
            await d.pump(clock.t)
            st = await state_of(store)
            assert st["state"] == "assigned" and st["handoffs"] == 0 and len(crm.calls) == 2
            clock.t += 61  # callback.crm_retry is 1m
        await d.pump(clock.t)  # up again: the read, then exactly one hand-on
        await d.pump(clock.t + 1)
        st = await state_of(store)
        assert st["state"] == "handed_on" and st["handoffs"] == 1 and len(crm.responsibles()) == 2
        assert [c[0] for c in crm.calls] == ["responsible", "task", "responsible", "task"]
    finally:
        await d.stop()


async def test_a_webhook_hint_closes_it_without_waiting_for_the_pause(store: Store) -> None:
    crm, clock = RecordingCrm(), Clock(T0)
    d = await assigned(store, crm, clock)
    try:
        assert d.lead_hint(["lead-unknown"]) == 0
        assert d.lead_hint(["lead-77"]) == 1  # unchanged yet: the read changes nothing
        clock.t = T0 + 60
        await d.pump(clock.t)
        assert (await state_of(store))["state"] == "assigned"
        crm.status = "CONVERTED"
        assert d.lead_hint(["lead-77"]) == 1
        assert d.lead_hint(["lead-77"]) == 0  # already queued
        clock.t = T0 + 90  # well inside the pause
        await d.pump(clock.t)
        st = await state_of(store)
        assert st["state"] == "closed_in_crm" and st["reason"] == "crm_status" and st["closed_at"] == clock.t
        assert len(crm.calls) == 2
    finally:
        await d.stop()


def three() -> CallbackConfig:
    managers = [ManagerConfig(name=n, crm_user_id=u, devices=[f"Local/{u}@agents"], days=ALL_DAY)
                for n, u in (("Ivan", 101), ("Petr", 102), ("Anna", 103))]
    return lab_config(managers=managers)


async def picks(store: Store, restart: bool, seed: int) -> list[str]:
    """Four misses one after another; the fourth's pick depends on who was assigned least recently."""
    crm, clock = RecordingCrm(), Clock(T0)
    cfg = three()
    d = driver(store, crm, clock, cfg, seed)
    await d.load()
    out = []
    for i in range(4):
        await deliver_lead(store, f"{LINKEDID}{i}", T0 + 10 * i, ref=f"lead-{i}", caller=f"+7903555014{i}")
        clock.t = T0 + 10 * i + 1
        if restart and i == 3:
            await d.stop()
            d = driver(store, crm, clock, cfg, seed + 1)  # a new process (its own random source), the same store
            await d.load()
        await d.pump(clock.t)
        cb = await state_of(store, f"{LINKEDID}{i}")
        out.append(cb["manager"])
    await d.stop()
    return out


@pytest.mark.parametrize("seed", range(1, 9))
async def test_restart_keeps_least_recently_assigned(tmp_path: Any, seed: int) -> None:
    plain = await Store.open(tmp_path / "a.db")
    restarted = await Store.open(tmp_path / "b.db")
    try:
        without = await picks(plain, restart=False, seed=seed)
        with_restart = await picks(restarted, restart=True, seed=seed)
        assert len(set(without[:3])) == 3  # everyone once
        assert with_restart == without  # the fourth goes to the least recent, as without a restart
        times = {m: T0 + 10 * i + 1 for i, m in enumerate(without[:3])} | {without[3]: T0 + 31}
        assert await Callbacks(restarted.db).last_assigned() == times
    finally:
        await plain.close()
        await restarted.close()
