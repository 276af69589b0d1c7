"""CRM webhooks about leads feed the call-back loop: an authenticated delivery makes the loop re-read the
lead, and a status moved in the CRM closes the call-back at once (no waiting for the pause); forged,
malformed or unknown deliveries are refused and counted and change nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from callguard import metrics
from callguard.config import Config
from callguard.web.webhooks import add_routes
from tests.callbacks_support import T0
from tests.loopback.test_callbacks_crm_fakes import PAUSE, Rig

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Hooks:
    def __init__(self, cfg: Config, leads: object, contacts: list[str]) -> None:
        def contact_hint(ids: Sequence[str]) -> int:
            contacts.extend(ids)
            return len(ids)

        app = web.Application()
        add_routes(app, cfg.crm, contact_hint, leads)
        self.runner = web.AppRunner(app, access_log=None)
        self.base = ""

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def post(self, path: str, body: bytes) -> int:
        async with aiohttp.ClientSession() as http, http.post(self.base + path, data=body, headers=FORM) as resp:
            await resp.read()
            return resp.status


@pytest.mark.parametrize("kind", ["amocrm", "bitrix24"])
async def test_a_lead_webhook_closes_the_call_back_without_waiting(tmp_path: Path, kind: str) -> None:
    from tests.crm_support import amo_config, b24_config

    rig = Rig(kind)
    d = await rig.start(tmp_path)
    cfg = b24_config(tmp_path, "http://127.0.0.1:1") if kind == "bitrix24" else amo_config(tmp_path, "http://127.0.0.1:1")
    contacts: list[str] = []
    hooks = Hooks(cfg, d.lead_hint, contacts)
    await hooks.start()
    path = "/webhooks/bitrix24" if kind == "bitrix24" else "/webhooks/amocrm/hook-secret"

    def body(lead: int, token: str | None = None, account: int | None = None) -> bytes:
        if kind == "bitrix24":
            return rig.fake.event_body("ONCRMLEADUPDATE", lead, token=token)  # type: ignore[no-any-return]
        return rig.fake.lead_webhook_body("status", lead, account_id=account)  # type: ignore[no-any-return]

    try:
        rig.clock.t = T0 + 1
        await d.pump(rig.clock.t)
        assert (await rig.state())["state"] == "assigned"
        rejected = metrics.WEBHOOKS.labels(kind, "bad_token")._value.get()
        rig.move_status()  # a manager moved the lead on
        if kind == "bitrix24":
            assert await hooks.post(path, body(rig.lead, token="forged")) == 401
            assert await hooks.post(path, rig.fake.event_body("ONCRMDEALUPDATE", rig.lead)) == 400
            assert await hooks.post(path, body(0) .replace(b"ID%5D=0", b"ID%5D=x1")) == 400
        else:
            assert await hooks.post("/webhooks/amocrm/forged", body(rig.lead)) == 401
            assert await hooks.post(path, body(rig.lead, account=1)) == 401
            assert await hooks.post(path, b"leads[status][0][id]=x1&account[id]=28805383") == 400
            assert await hooks.post(path, b"tasks[add][0][id]=5&account[id]=28805383") == 400
        assert metrics.WEBHOOKS.labels(kind, "bad_token")._value.get() == rejected + 1
        await d.pump(rig.clock.t + 1)
        assert (await rig.state())["state"] == "assigned"  # nothing refused reached the loop
        assert await hooks.post(path, body(rig.lead)) == 200
        rig.clock.t = T0 + 120  # well inside the pause
        await d.pump(rig.clock.t)
        st = await rig.state()
        assert st["state"] == "closed_in_crm" and st["reason"] == "crm_status" and st["closed_at"] == rig.clock.t
        assert len(rig.responsibles()) == 1 and len(rig.tasks()) == 1 and contacts == []
        rig.clock.t += PAUSE * 3
        await d.pump(rig.clock.t)
        assert len(rig.responsibles()) == 1  # no hand-on after it
        assert await hooks.post(path, body(rig.lead)) == 200  # a later hint for a closed one: nothing to read
    finally:
        await hooks.runner.cleanup()
        await rig.close()
    assert rig.fake.errors == [] and rig.fake.violations == 0


async def test_lead_ids_without_a_call_back_loop_are_answered_and_counted(tmp_path: Path) -> None:
    from tests.crm_support import amo_config
    from tests.fakes.amocrm import FakeAmo

    fake = FakeAmo()
    cfg = amo_config(tmp_path, "http://127.0.0.1:1")
    contacts: list[str] = []
    hooks = Hooks(cfg, None, contacts)
    await hooks.start()
    try:
        ignored = metrics.WEBHOOKS.labels("amocrm", "leads_ignored")._value.get()
        assert await hooks.post("/webhooks/amocrm/hook-secret", fake.lead_webhook_body("update", 5)) == 200
        assert metrics.WEBHOOKS.labels("amocrm", "leads_ignored")._value.get() == ignored + 1
        cid = fake.add_contact("Иван", ["+79125550000"])
        assert await hooks.post("/webhooks/amocrm/hook-secret", fake.webhook_body("update", cid)) == 200
        assert contacts == [str(cid)]
    finally:
        await hooks.runner.cleanup()


@pytest.mark.parametrize("loop_on", [True, False])
async def test_the_service_wires_lead_webhooks_to_its_call_back_loop(tmp_path: Path, loop_on: bool) -> None:
    """Through the web part app.py builds (not a hand-mounted router): with the loop on, lead ids reach
    its ``lead_hint``; with it off they are answered and counted as ignored."""
    import dataclasses
    import socket

    from callguard.app import build_parts
    from callguard.store import Store
    from tests.callbacks_support import lab_config
    from tests.crm_support import amo_config
    from tests.fakes.amocrm import FakeAmo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cfg = amo_config(tmp_path, "http://127.0.0.1:1")
    cfg = dataclasses.replace(
        cfg, web=dataclasses.replace(cfg.web, enabled=True, port=port),
        ami=dataclasses.replace(cfg.ami, enabled=True, secret="x"),
        outbox=dataclasses.replace(cfg.outbox, sink="crm"),
        callback=lab_config() if loop_on else cfg.callback,
    )
    store = await Store.open(cfg.store.path)
    parts = build_parts(cfg, store)
    assert (parts.callbacks is not None) is loop_on and parts.web is not None
    await parts.web.start()  # type: ignore[union-attr]
    try:
        ignored = metrics.WEBHOOKS.labels("amocrm", "leads_ignored")._value.get()
        body = FakeAmo().lead_webhook_body("status", 4242)
        async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{port}/webhooks/amocrm/hook-secret", data=body, headers=FORM) as resp:
            assert resp.status == 200
        after = metrics.WEBHOOKS.labels("amocrm", "leads_ignored")._value.get()
        assert after == ignored + (0 if loop_on else 1)
    finally:
        await parts.web.stop()  # type: ignore[union-attr]
        await store.close()
