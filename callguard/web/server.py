"""The HTTP side: health, readiness, Prometheus metrics, a small read API, and the CRM webhooks.

Thin handlers (STYLE.md rule 11): check auth, parse, call a service, return JSON. Liveness (``/healthz``:
the loop answers) is apart from readiness (``/readyz``: the parts a call needs are up). A bearer token,
when configured, guards every endpoint except the CRM webhooks, which carry their own authentication
(callguard.web.webhooks). Bodies are scrubbed of configured secret values before they leave, as a last line
of defence: an error text quoting a URL with a key in it must not leak through ``/readyz``.

The server is given what it reports on (``app.py`` wires it): the store, and the parts it reads, each
through the few attributes it needs (the Protocols below); no SQL here (callguard.store holds it).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from collections.abc import Sequence
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callguard import metrics
from callguard.config import SECRET_KEYS, Config, WebConfig, parse_duration
from callguard.errors import BindError, ConfigError
from callguard.store import Store
from callguard.store.stats import callback_sla
from callguard.web import webhooks
from callguard.web.connections import BoundedFactory
from callguard.web.pages import PagesDeps, setup_pages

log = structlog.get_logger("callguard.web.server")

READY_QUERY_TIMEOUT = 2.0
# The sync counts as stale (reported, not fatal: calls are screened from the cache) after this many
# missed intervals.
SYNC_STALE_INTERVALS = 3
# The cache counts are recounted at most this often (seconds).
NUMBERS_REFRESH_S = 30.0


class Screener(Protocol):
    async def explain(self, number: str, did: str) -> dict[str, Any]: ...


class Listener(Protocol):  # the FastAGI part
    listening: bool
    port: int | None


class AmiLink(Protocol):
    connected: bool
    last_error: str | None
    reconnects: int


class Sync(Protocol):
    last_sync_at: float | None
    last_error: str | None

    def hint(self, contact_ids: Sequence[str]) -> int: ...


def secret_values(cfg: Config) -> list[str]:
    """The configured secret strings (token, AMI secret, CRM keys…), longest first for replacement."""
    values = set()
    for key in SECRET_KEYS:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part, None)
        # Very short values would turn ordinary text into stars; config secrets are long in practice.
        if isinstance(node, str) and len(node) >= 4:
            values.add(node)
    return sorted(values, key=len, reverse=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(cfg: WebConfig) -> None:
    """Beyond loopback with no token, anyone on the network reads the call statistics."""
    if not cfg.token and not is_loopback(cfg.host):
        log.warning("web_exposed", host=cfg.host, port=cfg.port,
                    hint="set web.token (CALLGUARD_WEB_TOKEN) or bind web.host to 127.0.0.1")


class WebApp:
    """The aiohttp application and its handlers, given the parts they read."""

    def __init__(self, cfg: Config, store: Store, screener: Screener | None = None, agi: Listener | None = None,
                 ami: AmiLink | None = None, sync: Sync | None = None,
                 lead_hint: webhooks.Hint | None = None) -> None:
        self.root = cfg
        self.cfg = cfg.web
        self.store = store
        self.screener, self.agi, self.ami, self.sync = screener, agi, ami, sync
        self._token = self.cfg.token.encode()
        self._secrets = secret_values(cfg)
        self._numbers_at = float("-inf")
        self.app = web.Application(client_max_size=self.cfg.max_body_bytes, middlewares=[self._auth])
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/v1/check/{number}", self.check)
        self.app.router.add_get("/v1/stats", self.stats)
        before = set(self.app.router.resources())
        webhooks.add_routes(self.app, cfg.crm, sync.hint if sync is not None else None, lead_hint)
        self.webhook_routes: set[Any] = set(self.app.router.resources()) - before  # they authenticate themselves
        # The browser pages (dashboard, lists) log in with a session cookie, not the bearer token.
        self.page_routes = setup_pages(self.app, PagesDeps(cfg, store, readiness=self.readiness))
        self.exempt = self.webhook_routes | self.page_routes

    # --- auth -------------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self._token and request.match_info.route.resource not in self.exempt:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            # compare_digest: the time taken must not tell how much of a guess was right.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
                return self._json({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})
        resp: web.StreamResponse = await handler(request)
        return resp

    def _json(self, data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            text=self._scrub(json.dumps(data, ensure_ascii=False)), status=status,
            content_type="application/json", headers=headers,
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    # --- health -----------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return self._json({"status": "ok"})

    async def readiness(self) -> dict[str, Any]:
        """``{"ready", "parts"}``: each part's state, as /readyz shows it and the dashboard's health box
        reads it."""
        parts = {
            "store": await self._store_state(),
            "agi": _agi_state(self.agi),
            "ami": _ami_state(self.ami),
            "sync": await self._sync_state(),
        }
        ready = all(p["state"] in ("ok", "disabled") for name, p in parts.items() if name != "sync")
        return {"ready": ready, "parts": parts}

    async def readyz(self, request: web.Request) -> web.Response:
        state = await self.readiness()
        return self._json(state, 200 if state["ready"] else 503)

    async def _store_state(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(READY_QUERY_TIMEOUT):
                await self.store.sync_state.latest_sync_at()  # any read of the file will do
        except Exception as e:  # any failure means "not ready", with the reason shown
            return {"state": "down", "error": str(e) or type(e).__name__}
        return {"state": "ok"}

    async def _sync_state(self) -> dict[str, Any]:
        part = self.sync
        try:
            stored = await self.store.sync_state.latest_sync_at()
        except Exception:
            stored = 0.0
        last = max(float(getattr(part, "last_sync_at", 0) or 0), stored)
        age = round(time.time() - last, 1) if last else None
        out: dict[str, Any] = {"last_sync_at": last or None, "age_s": age}
        if part is None:
            return {"state": "disabled", **out}
        error = str(getattr(part, "last_error", "") or "")
        stale = age is None or age > SYNC_STALE_INTERVALS * self.root.sync.interval
        return {"state": "stale" if stale else "ok", **out, "last_error": error}

    # --- metrics ----------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        await self.refresh_gauges()
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def refresh_gauges(self) -> None:
        """Gauges that describe the store, read at scrape time through the same store methods their
        parts use (``store.outbox.depth``, ``store.numbers.count``). ``callguard_ami_connected`` is
        the AMI client's alone: it sets it on each connect and loss."""
        now = time.time()
        depth = await self.store.outbox.depth()
        metrics.OUTBOX_DEPTH.set(depth.pending)
        metrics.OUTBOX_OLDEST.set(max(0.0, now - depth.oldest_created) if depth.oldest_created else 0.0)
        metrics.OUTBOX_DEAD.set(depth.dead)
        if now - self._numbers_at >= NUMBERS_REFRESH_S:
            # A full scan (~0.14 s per million rows); the cache changes only with a sync, so not per scrape.
            cached, spam = await self.store.numbers.count()
            metrics.CONTACTS_CACHED.set(cached)
            metrics.SPAM_CACHED.set(spam)
            self._numbers_at = now
        sync = await self._sync_state()
        if sync["age_s"] is not None:
            metrics.SYNC_AGE.set(sync["age_s"])

    # --- read API ---------------------------------------------------------------------------------

    async def check(self, request: web.Request) -> web.Response:
        number = request.match_info["number"]
        did = request.query.get("did", "")
        if self.screener is None:
            return self._json({"error": "screening is not running"}, 503)
        return self._json(await self.screener.explain(number, did))

    async def stats(self, request: web.Request) -> web.Response:
        by = request.query.get("by") or None
        if by not in (None, "day", "did", "reason"):
            return self._json({"error": "by must be day, did or reason"}, 400)
        try:
            since = parse_duration(request.query.get("since", "7d"), "since")
        except ConfigError as e:
            return self._json({"error": str(e)}, 400)
        now = time.time()
        report = await self.store.stats.report(now - since, now, by, ZoneInfo(self.root.hours.timezone),
                                               callback_sla=callback_sla(self.root))
        return self._json(report.as_dict())


def _agi_state(agi: Listener | None) -> dict[str, Any]:
    if agi is None:
        return {"state": "down", "error": "not started"}
    return {"state": "ok" if agi.listening else "down", "port": getattr(agi, "port", None)}


def _ami_state(ami: AmiLink | None) -> dict[str, Any]:
    if ami is None:
        return {"state": "disabled"}
    state = "ok" if ami.connected else "down"
    return {"state": state, "last_error": str(ami.last_error or ""), "reconnects": int(ami.reconnects)}


class WebServer:
    """The ``web`` part: listens on ``web.host:web.port`` (0 = any free port; ``.port`` tells which)."""

    name = "web"

    def __init__(self, cfg: Config, store: Store, *, screener: Screener | None = None, agi: Listener | None = None,
                 ami: AmiLink | None = None, sync: Sync | None = None,
                 lead_hint: webhooks.Hint | None = None) -> None:
        self.cfg = cfg
        self._deps = (store, screener, agi, ami, sync, lead_hint)
        self.webapp: WebApp | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._factory: BoundedFactory | None = None
        self.port: int | None = None

    async def start(self) -> None:
        cfg = self.cfg.web
        warn_if_exposed(cfg)
        self.webapp = WebApp(self.cfg, *self._deps)
        runner = web.AppRunner(self.webapp.app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                               keepalive_timeout=float(cfg.keepalive_timeout))
        await runner.setup()
        assert runner.server is not None
        # Not TCPSite: the bounded factory (callguard.web.connections) wraps aiohttp's protocol factory.
        self._factory = BoundedFactory(runner.server, cfg.max_connections, float(cfg.header_timeout))
        try:
            self._listener = await asyncio.get_running_loop().create_server(self._factory, cfg.host, cfg.port)
        except OSError as e:  # in use, not permitted, no such address (socket.gaierror too)
            await runner.cleanup()
            raise BindError("web", cfg.host, cfg.port, e) from e
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = self._listener.sockets
        self.port = int(sockets[0].getsockname()[1]) if sockets else cfg.port
        log.info("web_listening", host=cfg.host, port=self.port, auth=bool(cfg.token),
                 max_connections=cfg.max_connections)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._factory is not None:
            self._factory.close()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the open connections (shutdown_timeout bounds it)
            self._runner = None
