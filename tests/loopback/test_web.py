"""The web part on a real loopback port: auth, readiness, metrics, the read API, no secret in any body."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from callguard.agi.server import AgiServer
from callguard.ami.client import AmiClient
from callguard.config import Config, load_config
from callguard.screening.rules import parse_schedule
from callguard.screening.screener import ScreenService
from callguard.store import Store
from callguard.web.server import WebApp, WebServer, is_loopback, secret_values, warn_if_exposed
from tests.fakes.asterisk_ami import FakeAsterisk, Script

TOKEN = "web-token-5f0e9c1d2b"
SECRETS = {
    "CALLGUARD_WEB_TOKEN": TOKEN,
    "CALLGUARD_AMI_SECRET": "ami-secret-77a1c0",
    "CALLGUARD_CRM_TOKEN": "amocrm-token-d41d8cd9",
    "CALLGUARD_CRM_WEBHOOK_URL": "https://x.bitrix24.ru/rest/1/hook-key-9b2e7/",
    "CALLGUARD_CRM_APP_TOKEN": "b24-app-token-31337",
    "CALLGUARD_CRM_WEBHOOK_SECRET": "amo-webhook-secret-0042",
    "CALLGUARD_SINK_SECRET": "sink-secret-abcdef",
}
ENDPOINTS = ["/healthz", "/readyz", "/metrics", "/v1/check/+79123456789", "/v1/stats?since=7d&by=did", "/nope"]


def make_cfg(tmp_path: Path, token: bool = True, **ami: object) -> Config:
    path = tmp_path / "config.toml"
    path.write_text('[store]\npath = "cg.sqlite3"\n[agi]\nport = 0\n[web]\nport = 0\n')
    env = SECRETS if token else {k: v for k, v in SECRETS.items() if k != "CALLGUARD_WEB_TOKEN"}
    cfg = load_config(path, env=env)
    if ami:
        cfg = dataclasses.replace(cfg, ami=dataclasses.replace(cfg.ami, **ami))
    return cfg


@dataclass
class Running:
    store: Store
    web: WebServer
    agi: AgiServer
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web.port}"

    async def get(self, path: str, token: str | None = TOKEN) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(self.base + path, headers=headers) as resp:
            return resp.status, await resp.text(), resp.headers


@contextlib.asynccontextmanager
async def running(cfg: Config, extra: list[object] | None = None) -> AsyncIterator[Running]:
    """The real parts (screener, AGI, optional AMI, web) started in order and stopped in reverse, the web
    given the others as ``app.py`` gives them."""
    store = await Store.open(cfg.store.path)
    screener = ScreenService(cfg, store, parse_schedule(cfg.hours, cfg.phone.default_region))
    agi = AgiServer(cfg.agi, screener)
    ami = next((p for p in extra or [] if isinstance(p, AmiClient)), None)
    web = WebServer(cfg, store, screener=screener, agi=agi, ami=ami)
    parts = [screener, agi, *(extra or []), web]
    started = []
    try:
        for part in parts:
            await part.start()  # type: ignore[attr-defined]
            started.append(part)
        async with aiohttp.ClientSession() as http:
            yield Running(store, web, agi, http)
    finally:
        for part in reversed(started):
            await part.stop()  # type: ignore[attr-defined]
        await store.close()


async def test_every_endpoint_needs_the_token(tmp_path: Path) -> None:
    async with running(make_cfg(tmp_path)) as r:
        for path in ENDPOINTS:
            for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
                status, _, headers = await r.get(path, token)
                assert status == 401, (path, token)
                assert headers["WWW-Authenticate"] == "Bearer"
            status, _, _ = await r.get(path)
            assert status == (404 if path == "/nope" else 200), path
        async with r.http.get(r.base + "/healthz", headers={"Authorization": f"Basic {TOKEN}"}) as resp:
            assert resp.status == 401


async def test_no_token_configured_means_open_on_loopback(tmp_path: Path) -> None:
    async with running(make_cfg(tmp_path, token=False)) as r:
        status, body, _ = await r.get("/healthz", None)
        assert (status, body) == (200, '{"status": "ok"}')


async def test_no_secret_in_any_response(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    assert len(secret_values(cfg)) == len(SECRETS)
    async with running(cfg) as r:
        bodies = []
        for path in ENDPOINTS:
            for token in (None, "wrong", TOKEN):
                _, body, headers = await r.get(path, token)
                bodies.append(body + "".join(f"{k}: {v}" for k, v in headers.items()))
        assert len(bodies) == 3 * len(ENDPOINTS)
        for body in bodies:
            for secret in SECRETS.values():
                assert secret not in body
        # An error text that quotes a secret (a URL with a webhook key, say) is scrubbed on the way out.
        app: WebApp = r.web.webapp  # type: ignore[assignment]
        leaked = f"POST {SECRETS['CALLGUARD_CRM_WEBHOOK_URL']}crm.lead.add failed"
        assert app._json({"last_error": leaked}).text == '{"last_error": "POST ***crm.lead.add failed"}'


async def test_readyz_follows_the_agi_listener(tmp_path: Path) -> None:
    async with running(make_cfg(tmp_path)) as r:
        status, body, _ = await r.get("/readyz")
        assert status == 200
        data = json.loads(body)
        assert data["ready"] is True
        assert data["parts"]["store"] == {"state": "ok"}
        assert data["parts"]["agi"] == {"state": "ok", "port": r.agi.port}
        assert data["parts"]["ami"] == {"state": "disabled"}
        assert data["parts"]["sync"]["state"] == "disabled"
        await r.agi.stop()
        status, body, _ = await r.get("/readyz")
        data = json.loads(body)
        assert status == 503 and data["ready"] is False and data["parts"]["agi"]["state"] == "down"


async def _ami_readiness(tmp_path: Path, script: Script) -> tuple[int, dict[str, object]]:
    fake = await FakeAsterisk([script]).start()
    try:
        cfg = make_cfg(tmp_path, enabled=True, port=fake.port, reconnect_min=0.01, reconnect_max=0.05)
        client = AmiClient(cfg.ami, lambda frame, now: None)
        async with running(cfg, [client]) as r:
            deadline = time.monotonic() + 5
            want = "Authentication failed" if script.reject else ""
            while time.monotonic() < deadline:  # the client logs in (or fails to) on its own task
                if (client.connected and not want) or (want and want in client.last_error):
                    break
                await asyncio.sleep(0.01)
            status, body, _ = await r.get("/readyz")
            return status, json.loads(body)
    finally:
        await fake.stop()


async def test_readyz_reports_ami_logged_in(tmp_path: Path) -> None:
    status, data = await _ami_readiness(tmp_path, Script())
    assert status == 200
    assert data["parts"]["ami"] == {"state": "ok", "last_error": "", "reconnects": 0}  # type: ignore[index]


async def test_readyz_is_503_when_ami_rejects_the_login(tmp_path: Path) -> None:
    status, data = await _ami_readiness(tmp_path, Script(reject=True))
    assert status == 503 and data["ready"] is False
    ami = data["parts"]["ami"]  # type: ignore[index]
    assert ami["state"] == "down" and "Authentication failed" in ami["last_error"]


async def test_metrics_parse_and_gauges_come_from_the_store(tmp_path: Path) -> None:
    async with running(make_cfg(tmp_path)) as r:
        now = time.time()
        async with r.store.db.write() as conn:
            for i, (state, created) in enumerate([("pending", now - 300), ("sending", now - 60), ("dead", now - 9e3),
                                                  ("sent", now - 9e4)]):
                await conn.execute(
                    "INSERT INTO outbox(linkedid, payload, state, next_at, created_at, updated_at) "
                    "VALUES (?, '{}', ?, ?, ?, ?)", (f"l{i}", state, now, created, now),
                )
            for phone, contact, spam in [("+7912001", "1", 0), ("+7912001", "2", 1), ("+7912002", "3", 1),
                                         ("+7912003", "4", 0)]:
                await conn.execute(
                    "INSERT INTO numbers(phone, contact_id, spam, source, updated_at) VALUES (?, ?, ?, 'amocrm', ?)",
                    (phone, contact, spam, now),
                )
            await conn.execute("INSERT INTO sync_state(crm, last_sync_at) VALUES ('amocrm', ?)", (now - 120,))
        status, text, headers = await r.get("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
        }
        assert samples[("callguard_outbox_pending", ())] == 2
        assert 299 <= samples[("callguard_outbox_oldest_age_seconds", ())] < 330
        assert samples[("callguard_outbox_dead", ())] == 1
        assert samples[("callguard_numbers_cached", ())] == 4  # rows: a phone shared by two contacts counts twice
        assert samples[("callguard_numbers_spam", ())] == 2
        assert 119 <= samples[("callguard_sync_age_seconds", ())] < 150
        names = {name for name, _ in samples}
        for family in ("callguard_screen_latency_seconds_bucket", "callguard_agi_active_connections",
                       "callguard_ami_connected", "callguard_agi_deadline_exceeded_total"):
            assert family in names


async def test_check_and_stats_api(tmp_path: Path) -> None:
    async with running(make_cfg(tmp_path)) as r:
        await r.store.overrides.upsert_many([("+79123456789", "block", "test")])
        status, body, _ = await r.get("/v1/check/8%20(912)%20345-67-89?did=84951234567")
        data = json.loads(body)
        assert status == 200
        assert (data["normalised"], data["verdict"], data["reason"]) == ("+79123456789", "spam", "local_block")
        assert data["did"] == "+74951234567"
        assert data["variables"] == {"CALLGUARD_VERDICT": "spam"}
        status, body, _ = await r.get("/v1/check/+79990000000")
        assert json.loads(body)["verdict"] == "clean"

        async with r.store.db.write() as conn:
            await conn.execute("INSERT INTO screens VALUES ('u1', ?, '+7912', '+74951234567', 'spam', 'r', 1)",
                               (time.time() - 60,))
        status, body, _ = await r.get("/v1/stats?since=1d&by=did")
        data = json.loads(body)
        assert status == 200 and data["total"]["spam_blocked"] == 1
        assert [row["key"] for row in data["rows"]] == ["+74951234567"]
        assert data["callbacks"] is None  # the call-back loop is switched off in this config
        for bad in ("/v1/stats?by=week", "/v1/stats?since=soon"):
            status, body, _ = await r.get(bad)
            assert status == 400 and "error" in body


CALLBACK_ON = """[callback]
enabled = true
sla = "10m"
[[callback.managers]]
name = "Ivan"
devices = ["Local/101@agents"]
"""


async def test_stats_api_carries_the_call_back_figures_the_cli_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from callguard.cli import main
    from tests.support.callback_seed import DID_A, DID_B, DID_EVIL, seed_callbacks

    path = tmp_path / "config.toml"
    path.write_text('[store]\npath = "cg.sqlite3"\n[agi]\nport = 0\n[web]\nport = 0\n' + CALLBACK_ON)
    cfg = load_config(path, env=SECRETS)
    async with running(cfg) as r:
        await seed_callbacks(r.store, time.time())
        status, body, _ = await r.get("/v1/stats?since=7d")
        cb = json.loads(body)["callbacks"]
        capsys.readouterr()
        assert await asyncio.get_running_loop().run_in_executor(None, main, ["--config", str(path), "stats",
                                                                             "--json"]) == 0
        printed = capsys.readouterr().out
    assert status == 200
    # the seeded week (tests/support/callback_seed.py): waits 60, 300, 1200 s of six misses; SLA 10 min
    t = cb["total"]
    assert (cb["sla_s"], t["misses"], t["called_back"], t["never_called_back"]) == (600.0, 6, 3, 3)
    assert (t["median_s"], t["p90_s"], t["within_sla"], t["within_sla_share"]) == (300.0, 1200.0, 2, 0.3333)
    assert (t["open"], t["escalated"], t["handoffs"], cb["waiting_total"]) == (3, 1, 6, 2)
    assert [g["key"] for g in cb["by_manager"]] == ["Petr", "Ivan", "-"]
    assert [g["key"] for g in cb["by_did"]] == [DID_A, DID_B, DID_EVIL]
    cli = json.loads(printed.strip().splitlines()[-1])["callbacks"]
    ages = ("waiting",)  # the only part that moves with the clock between the two reads
    assert {k: v for k, v in cli.items() if k not in ages} == {k: v for k, v in cb.items() if k not in ages}


async def test_webhooks_are_exempt_from_the_bearer_token(tmp_path: Path) -> None:
    try:
        import callguard.web.webhooks  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("callguard.web.webhooks is not in this build: nothing to mount")
    async with running(make_cfg(tmp_path)) as r:
        app: WebApp = r.web.webapp  # type: ignore[assignment]
        assert app.webhook_routes, "add_routes mounted no route"
        for resource in app.webhook_routes:
            # A concrete URL for a dynamic route (/webhooks/amocrm/{token}): a literal brace matches nothing.
            path = re.sub(r"\{[^}]+\}", "not-the-secret", resource.canonical)
            async with r.http.post(r.base + path, data=b"") as resp:
                # Refused by the webhook's own check (if at all), never by the API bearer token.
                assert resp.headers.get("WWW-Authenticate") != "Bearer", path
                assert resp.status != 404, path


def test_exposure_warning(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and not is_loopback("pbx.example")
    cfg = make_cfg(tmp_path, token=False)
    with capture_logs() as logs:
        warn_if_exposed(dataclasses.replace(cfg.web, host="0.0.0.0"))
        warn_if_exposed(dataclasses.replace(cfg.web, host="127.0.0.1"))
        warn_if_exposed(dataclasses.replace(cfg.web, host="0.0.0.0", token="t0ken"))
    assert [(e["event"], e["log_level"], e["host"]) for e in logs] == [("web_exposed", "warning", "0.0.0.0")]


async def test_the_service_serves_the_pages_behind_a_login(tmp_path: Path) -> None:
    """The dashboard is part of the running web server: without a session only the login page; the API
    still wants the bearer token; /readyz's data reaches the page's health box once logged in."""
    async with running(make_cfg(tmp_path)) as r, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b:
        async with b.get(r.base + "/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"].startswith("/login")
        assert (await r.get("/v1/stats", token=None))[0] == 401
        async with b.get(r.base + "/login") as resp:
            form = await resp.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert resp.status == 200 and csrf is not None
        data = {"csrf": csrf.group(1), "name": "", "password": TOKEN, "next": "/"}
        async with b.post(r.base + "/login", data=data, allow_redirects=False) as resp:
            assert resp.status == 303
        async with b.get(r.base + "/") as resp:
            page = await resp.text()
        assert resp.status == 200 and "Calls screened" in page and "not reported" not in page
