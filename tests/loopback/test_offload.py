"""CRM pages decoded and parsed in the worker process (callguard.crm.offload) read as they would inline."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import orjson
import pytest

from callguard.crm import CrmContact, offload
from callguard.crm.amocrm import AmoCrm, _embedded, _has_next, decode_contacts, parse_contact
from callguard.store import Store
from callguard.sync import SyncService
from tests.crm_support import amo_config
from tests.fakes.amocrm import FakeAmo


def _exit_unless_in(pid: int) -> str:
    """Kills a worker process; harmless in the test process itself (the inline fallback)."""
    if os.getpid() != pid:
        os._exit(1)
    return "inline"


async def test_runs_in_another_process_or_inline() -> None:
    assert await offload.run(1, os.getpid) != os.getpid()
    assert await offload.run(0, os.getpid) == os.getpid()


async def test_a_worker_that_dies_costs_one_inline_call_not_the_sync() -> None:
    assert await offload.run(1, _exit_unless_in, os.getpid()) == "inline"
    assert await offload.run(1, os.getpid) != os.getpid()  # a new pool took over


def test_decoded_page_matches_the_inline_parse() -> None:
    fake = FakeAmo(generated=600)
    page = {"_page": 1, "_links": {"next": {"href": "x"}},
            "_embedded": {"contacts": [fake.render(i, fake.generated_contact(i)) for i in range(1, 251)]}}
    raw = orjson.dumps(page)
    rows, body = decode_contacts(raw, 777, "RU")
    assert all(type(r) is tuple for r in rows)  # plain tuples cross the process boundary cheaply
    contacts = [CrmContact._make(r) for r in rows]
    assert contacts == [parse_contact(c, 777, "RU") for c in page["_embedded"]["contacts"]]
    assert sum(c.spam for c in contacts) == 5 and sum(len(c.phones) for c in contacts) == 333
    assert _has_next(body)
    assert [c["id"] for c in _embedded(body, "contacts")] == [c["id"] for c in page["_embedded"]["contacts"]]
    assert decode_contacts(b'{"_page": 1}', 777, "RU") == ([], {"_page": 1})


async def test_full_sync_gives_the_same_cache_with_and_without_workers(tmp_path: Path) -> None:
    fake = FakeAmo(rps=50)
    await fake.start()
    try:
        for n in range(40):
            fake.add_contact(f"Контакт {n}", [f"8 912 000-{n:02d}-00", f"+7912111{n:04d}"], spam=n % 7 == 0)
        tables = []
        for workers in (0, 1):
            (tmp_path / str(workers)).mkdir()
            cfg = amo_config(tmp_path / str(workers), f"http://127.0.0.1:{fake.port}")
            cfg = dataclasses.replace(cfg, sync=dataclasses.replace(cfg.sync, parse_workers=workers))
            store = await Store.open(cfg.store.path)
            svc = SyncService(cfg, store, AmoCrm(cfg, store))
            try:
                report = await svc.full()
                async with store.db.reader.execute(
                    "SELECT phone, contact_id, name, owner, spam FROM numbers ORDER BY phone") as cur:
                    tables.append((report.contacts, report.added, await cur.fetchall()))
            finally:
                await svc.crm.close()
                await store.close()
        assert tables[0] == tables[1] and tables[0][0] == 40 and tables[0][1] == 80
    finally:
        await fake.close()
    assert fake.errors == []


def test_worker_priority_not_permitted_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a sandbox that forbids setpriority the pool's initializer must not fail (a broken pool)."""
    def refuse(_: int) -> int:
        raise PermissionError("nice blocked by the sandbox")

    monkeypatch.setattr(os, "nice", refuse)
    offload._lower_priority()
