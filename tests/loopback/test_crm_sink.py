"""Missed call → exactly one lead in the CRM, linked to the right contact; repeat → note; lost reply →
still one lead. Run against both strict fakes."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callguard.config import Config
from callguard.crm.sink import CrmSink, build_crm_sink
from callguard.errors import CrmUnavailableError
from callguard.leads import describe
from callguard.leads.model import MissedCall
from callguard.store import Store
from callguard.sync import SyncService
from tests.crm_support import amo_config, b24_config
from tests.fakes.amocrm import FakeAmo
from tests.fakes.bitrix24 import FakeBitrix


def missed(linkedid: str, caller: str = "+79125554433", **kw: Any) -> MissedCall:
    now = time.time()
    return MissedCall(linkedid=linkedid, caller=caller, did="+74950000000", reason="timeout",
                      started_at=now - 40, ended_at=now - 5, wait_s=35.0, **kw)


class World:
    """One CRM fake + config + store, with CRM-neutral views of what the fake holds."""

    def __init__(self, kind: str, fake: Any, cfg: Config, store: Store) -> None:
        self.kind, self.fake, self.cfg, self.store = kind, fake, cfg, store

    def add_contact(self, name: str, phones: list[str], **kw: Any) -> str:
        return str(self.fake.add_contact(name, phones, **kw))

    def leads(self) -> list[dict[str, Any]]:
        return list(self.fake.leads.values())

    def lead_contact(self, lead: dict[str, Any]) -> str:
        if self.kind == "amocrm":
            return str(lead["contacts"][0]) if lead["contacts"] else ""
        return str(lead.get("CONTACT_ID", ""))

    def notes_on(self, lead_id: str) -> int:
        if self.kind == "amocrm":
            return sum(1 for n in self.fake.notes if str(n["entity_id"]) == lead_id)
        return sum(1 for c in self.fake.comments if str(c["ENTITY_ID"]) == lead_id)

    def sink(self) -> CrmSink:
        sink = build_crm_sink(self.cfg, self.store)
        assert isinstance(sink, CrmSink)
        return sink


@pytest.fixture(params=["amocrm", "amocrm_lead_task", "bitrix24"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    kind = "bitrix24" if request.param == "bitrix24" else "amocrm"
    fake: Any = FakeBitrix(rate=100, burst=20) if kind == "bitrix24" else FakeAmo(rps=50)
    await fake.start()
    base = f"http://127.0.0.1:{fake.port}"
    if kind == "bitrix24":
        cfg = b24_config(tmp_path, base)
    else:
        cfg = amo_config(tmp_path, base, lead_mode="lead_task" if request.param.endswith("task") else "unsorted")
    store = await Store.open(cfg.store.path)
    try:
        yield World(kind, fake, cfg, store)
    finally:
        await store.close()
        await fake.close()
    assert fake.errors == [], fake.errors


async def test_missed_call_makes_one_lead_linked_to_the_contact(world: World) -> None:
    other = world.add_contact("Другой", ["+79001112233"])
    cid = world.add_contact("Клиент", ["8 (912) 555-44-33"])
    if world.kind == "amocrm":  # digits of the caller inside another contact's order number (§1.4 trap)
        world.fake.update_contact(int(other), order="ORD-79125554433")
    sink = world.sink()
    try:
        delivery = await sink.deliver(missed("1710140185.1"))
        assert not delivery.repeat
        leads = world.leads()
        assert len(leads) == 1 and str(leads[0]["id" if world.kind == "amocrm" else "ID"]) == delivery.ref
        assert world.lead_contact(leads[0]) == cid
        assert (await sink.find_delivered(missed("1710140185.1"))) == delivery
        assert await sink.find_delivered(missed("1710140185.999")) is None
    finally:
        await sink.close()


async def test_cache_first_then_unknown_caller(world: World) -> None:
    cid = world.add_contact("Из кэша", ["+79125550001"])
    crm_sync = SyncService(world.cfg, world.store, world.sink().crm)
    await crm_sync.full()
    await crm_sync.crm.close()
    sink = world.sink()
    try:
        searches_before = sum(world.fake.calls.values())
        await sink.deliver(missed("c.1", caller="+79125550001"))
        # One request only: the lead. The contact came from the cache, no CRM search.
        made = sum(world.fake.calls.values()) - searches_before
        assert made == (2 if world.cfg.crm.amocrm.lead_mode == "lead_task" and world.kind == "amocrm" else 1)
        assert world.lead_contact(world.leads()[0]) == cid
        await sink.deliver(missed("c.2", caller="+79169990000"))  # nobody has this number
        assert len(world.leads()) == 2
        assert (await sink.deliver(missed("c.3", caller="anonymous"))).ref
    finally:
        await sink.close()


async def test_repeat_miss_adds_a_note_to_the_open_lead(world: World) -> None:
    world.add_contact("Клиент", ["+79125554433"])
    sink = world.sink()
    try:
        first = await sink.deliver(missed("r.1"))
        repeat = missed("r.2", open_lead_ref=first.ref, misses=2)
        second = await sink.deliver(repeat)
        assert second.repeat and second.ref == first.ref
        assert len(world.leads()) == 1 and world.notes_on(first.ref) == 1
        assert await sink.find_delivered(repeat) == second
    finally:
        await sink.close()


async def test_lost_reply_after_the_crm_accepted_still_one_lead(world: World) -> None:
    world.add_contact("Клиент", ["+79125554433"])
    call = missed("crash.1")
    sink = world.sink()
    try:
        # The CRM makes the lead; the reply never arrives.
        world.fake.fail_after_commit(504, match="crm.lead.add" if world.kind == "bitrix24" else "POST /api/v4/leads")
        with pytest.raises(CrmUnavailableError):
            await sink.deliver(call)
        assert len(world.leads()) == 1
        # Same process, outbox retry: the marker is found, nothing is re-sent.
        assert (await sink.deliver(call)).ref == str(_lead_id(world, world.leads()[0]))
        assert len(world.leads()) == 1
    finally:
        await sink.close()
    # A restart: a fresh sink asked by the outbox recovery finds it too.
    fresh = world.sink()
    try:
        found = await fresh.find_delivered(call)
        assert found is not None and found.ref == str(_lead_id(world, world.leads()[0]))
    finally:
        await fresh.close()


def _lead_id(world: World, lead: dict[str, Any]) -> Any:
    return lead["id"] if world.kind == "amocrm" else lead["ID"]


@pytest.mark.parametrize("reason", sorted(describe.REASONS))
async def test_every_lead_says_why_it_was_missed(world: World, reason: str) -> None:
    """In each CRM and both amoCRM modes: the reason in words (and its key), the caller, the DID."""
    call = dataclasses.replace(missed(f"why.{reason}", reconciled=True), reason=reason, did="+74950000001")
    sink = world.sink()
    try:
        delivery = await sink.deliver(call)
    finally:
        await sink.close()
    (lead,) = [lead for lead in world.leads() if str(lead.get("id", lead.get("ID"))) == delivery.ref]
    tasks = [t for t in getattr(world.fake, "tasks", []) if str(t.get("entity_id")) == delivery.ref]
    unsorted = [u for u in getattr(world.fake, "unsorted", []) if str(u.get("lead_id")) == delivery.ref]
    said = json.dumps([lead, tasks, unsorted], ensure_ascii=False)
    assert describe.SHORT[reason] in said and f"({reason})" in said and call.caller in said
    assert call.did in said  # the source: in the lead's own text, the task, or the Unsorted metadata
    assert "восстановлен по записи Asterisk" in said
    if world.kind == "bitrix24" or world.cfg.crm.amocrm.lead_mode == "lead_task":
        assert describe.REASONS[reason] in said and "Ждал ответа" in said
