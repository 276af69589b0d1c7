"""End to end: the outbox worker delivering missed calls through the CRM sink to the amoCRM fake —
one lead per call, a note for a repeat, and one lead after a crash between CRM success and commit."""

from __future__ import annotations

import json
import time
from pathlib import Path

from callguard.crm.sink import build_crm_sink
from callguard.leads.model import MissedCall
from callguard.leads.outbox import OutboxWorker
from callguard.store import Store
from callguard.store.outbox import enqueue
from tests.crm_support import amo_config
from tests.fakes.amocrm import FakeAmo


def call(linkedid: str) -> MissedCall:
    now = time.time()
    return MissedCall(linkedid=linkedid, caller="+79125554433", did="+74950000000", reason="abandoned",
                      started_at=now - 30, ended_at=now - 1, wait_s=29.0)


async def put(store: Store, c: MissedCall) -> None:
    async with store.db.write() as conn:
        await enqueue(conn, c.linkedid, json.dumps(c.to_json()), time.time())


async def test_outbox_through_the_crm_sink(tmp_path: Path) -> None:
    fake = FakeAmo(rps=50)
    await fake.start()
    cfg = amo_config(tmp_path, f"http://127.0.0.1:{fake.port}")
    store = await Store.open(cfg.store.path)
    try:
        cid = fake.add_contact("Клиент", ["89125554433"])
        worker = OutboxWorker(cfg, store, build_crm_sink(cfg, store))
        await put(store, call("1.1"))
        await put(store, call("1.2"))  # a repeat inside the dedupe window
        assert await worker.run_once() == 2
        assert len(fake.leads) == 1 and next(iter(fake.leads.values()))["contacts"] == [cid]
        assert len(fake.notes) == 1 and fake.notes[0]["params"]["uniq"] == "1.2"
        await worker.sink.close()

        # Crash: the CRM took the lead for 2.1, the process died before recording it ('sending' stays).
        crashed = call("2.1")
        await put(store, crashed)
        assert await store.outbox.mark_sending(crashed.linkedid, crashed.to_json(), time.time())
        first = build_crm_sink(cfg, store)
        await first.deliver(MissedCall.from_json({**crashed.to_json(), "open_lead_ref": ""}))
        await first.close()
        leads_before = len(fake.leads)
        restarted = OutboxWorker(cfg, store, build_crm_sink(cfg, store))
        await restarted.recover()
        await restarted.run_once()
        await restarted.sink.close()
        item = await store.outbox.get("2.1")
        assert item is not None and item.state == "sent"
        assert len(fake.leads) == leads_before  # found by its marker, not sent again
    finally:
        await store.close()
        await fake.close()
    assert fake.errors == []
