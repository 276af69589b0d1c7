"""CRM webhooks: authenticated deliveries refresh the cache through the API; bad ones change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from callguard import metrics
from callguard.config import Config
from callguard.crm.amocrm import AmoCrm
from callguard.crm.bitrix24 import Bitrix24
from callguard.phone import normalise
from callguard.screening.rules import decide, parse_schedule
from callguard.store import Store
from callguard.sync import SyncService
from callguard.web.webhooks import add_routes
from tests.crm_support import amo_config, b24_config
from tests.fakes.amocrm import FakeAmo
from tests.fakes.bitrix24 import FakeBitrix

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Harness:
    def __init__(self, cfg: Config, store: Store, svc: SyncService) -> None:
        self.cfg, self.store, self.svc = cfg, store, svc
        app = web.Application()
        add_routes(app, cfg.crm, svc.hint)
        self.runner = web.AppRunner(app, access_log=None)
        self.http = aiohttp.ClientSession()
        self.base = ""

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        await self.svc.full()
        await self.svc.start()  # the poll is not due: only webhooks can change the cache now

    async def close(self) -> None:
        await self.svc.stop()
        await self.http.close()
        await self.runner.cleanup()
        await self.store.close()

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        async with self.http.post(self.base + path, data=body, headers=headers or FORM) as resp:
            await resp.read()
            return resp.status

    async def verdict(self, raw: str) -> str:
        phone = normalise(raw, "RU")
        lookup = await self.store.numbers.lookup(phone.key)
        return decide(phone, "", datetime.now(UTC), lookup, self.cfg.screening, parse_schedule(self.cfg.hours)).verdict

    async def rows(self) -> list[Any]:
        async with self.store.db.reader.execute("SELECT * FROM numbers ORDER BY phone, contact_id") as cur:
            return list(await cur.fetchall())


@pytest.fixture
async def amo(tmp_path: Path) -> AsyncIterator[tuple[Harness, FakeAmo]]:
    fake = FakeAmo(rps=50)
    await fake.start()
    cfg = amo_config(tmp_path, f"http://127.0.0.1:{fake.port}")
    store = await Store.open(cfg.store.path)
    h = Harness(cfg, store, SyncService(cfg, store, AmoCrm(cfg, store)))
    try:
        yield h, fake
    finally:
        await h.close()
        await fake.close()
    assert fake.errors == []


@pytest.fixture
async def b24(tmp_path: Path) -> AsyncIterator[tuple[Harness, FakeBitrix]]:
    fake = FakeBitrix(rate=100, burst=20)
    await fake.start()
    cfg = b24_config(tmp_path, f"http://127.0.0.1:{fake.port}")
    store = await Store.open(cfg.store.path)
    h = Harness(cfg, store, SyncService(cfg, store, Bitrix24(cfg)))
    try:
        yield h, fake
    finally:
        await h.close()
        await fake.close()
    assert fake.errors == []


async def test_amocrm_spam_flag_by_webhook_reaches_the_verdict_without_a_poll(amo: tuple[Harness, FakeAmo]) -> None:
    h, fake = amo
    cid = fake.add_contact("Звонилка", ["8 (912) 555-44-33"], spam=False)
    await h.start()
    assert await h.verdict("+79125554433") == "clean"
    fake.update_contact(cid, spam=True)
    polls = fake.calls["GET /api/v4/contacts"]
    assert await h.post("/webhooks/amocrm/hook-secret", fake.webhook_body("update", cid)) == 200
    await h.svc.drain()
    assert await h.verdict("89125554433") == "spam"
    # One re-read by id (filter[id][]), no listing by updated_at: the webhook did it, not a poll.
    assert fake.calls["GET /api/v4/contacts"] == polls + 1
    fake.delete_contact(cid)
    assert await h.post("/webhooks/amocrm/hook-secret", fake.webhook_body("delete", cid)) == 200
    await h.svc.drain()
    assert (await h.store.numbers.lookup("+79125554433")).contact is None


async def test_amocrm_payload_is_only_a_hint(amo: tuple[Harness, FakeAmo]) -> None:
    h, fake = amo
    cid = fake.add_contact("Честный", ["+79125554400"], spam=False)
    await h.start()
    # A forged "delete" for a contact that still exists: the re-read keeps it.
    assert await h.post("/webhooks/amocrm/hook-secret", fake.webhook_body("delete", cid)) == 200
    await h.svc.drain()
    found = await h.store.numbers.lookup("+79125554400")
    assert found.contact is not None and not found.contact.spam


async def test_amocrm_bad_requests_are_refused_and_leave_the_cache(amo: tuple[Harness, FakeAmo]) -> None:
    h, fake = amo
    cid = fake.add_contact("Жертва", ["+79125550000"], spam=False)
    await h.start()
    before = await h.rows()
    fake.update_contact(cid, spam=True)
    count = metrics.WEBHOOKS.labels("amocrm", "bad_token")._value.get()
    assert await h.post("/webhooks/amocrm/wrong", fake.webhook_body("update", cid)) == 401
    assert metrics.WEBHOOKS.labels("amocrm", "bad_token")._value.get() == count + 1
    assert await h.post("/webhooks/amocrm/hook-secret", fake.webhook_body("update", cid, account_id=1)) == 401
    assert await h.post("/webhooks/amocrm/hook-secret", b"\xff\xfe garbage \x00") == 400
    assert await h.post("/webhooks/amocrm/hook-secret", b"contacts[update][0][id]=abc&account[id]=28805383") == 400
    assert await h.post("/webhooks/amocrm/hook-secret", b"a=" + b"1" * 70_000) == 413
    await h.svc.drain()
    assert await h.rows() == before
    assert fake.calls["GET /api/v4/contacts"] == 1  # only the initial full sync: nothing was re-read


async def test_bitrix24_events(b24: tuple[Harness, FakeBitrix]) -> None:
    h, fake = b24
    cid = fake.add_contact("Иван Б", ["89125551111"], spam=False)
    await h.start()
    before = await h.rows()
    fake.update_contact(cid, spam=True)
    assert await h.post("/webhooks/bitrix24", fake.event_body("ONCRMCONTACTUPDATE", cid, token="nope")) == 401
    assert await h.post("/webhooks/bitrix24", b"event=ONCRMCONTACTUPDATE&data[FIELDS][ID]=") == 401
    assert await h.post("/webhooks/bitrix24", b"\x00\x01\x02") == 400
    assert await h.post("/webhooks/bitrix24", b"x=" + b"y" * 70_000) == 413
    await h.svc.drain()
    assert await h.rows() == before
    assert await h.post("/webhooks/bitrix24", fake.event_body("ONCRMCONTACTUPDATE", cid)) == 200
    await h.svc.drain()
    assert await h.verdict("+79125551111") == "spam"
    del fake.contacts[cid]
    assert await h.post("/webhooks/bitrix24", fake.event_body("ONCRMCONTACTDELETE", cid)) == 200
    await h.svc.drain()
    assert (await h.store.numbers.lookup("+79125551111")).contact is None
