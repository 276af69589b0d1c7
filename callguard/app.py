"""Wiring and lifecycle: start the parts in order, stop them in reverse (STYLE.md rule 8).

A part is anything with ``name``, ``async start()`` and ``async stop()``. ``start()`` returns once the
part is serving (a listening socket bound, a worker task running); ``stop()`` drains within its own bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog

from callguard import metrics, sdnotify, watchdog
from callguard.agi.server import AgiServer
from callguard.ami.client import AmiClient
from callguard.callbacks.driver import CallbackDriver
from callguard.callbacks.notify import Notices
from callguard.callbacks.wiring import ClientLink, build_callbacks, fan_out
from callguard.calls.recorder import CallFlow
from callguard.calls.tracker import CallTracker
from callguard.config import REMOVED_KEYS, Config
from callguard.crm import offload
from callguard.errors import CallguardError, exit_code
from callguard.leads.outbox import OutboxWorker
from callguard.leads.sinks import build_sink
from callguard.screening.rules import parse_schedule
from callguard.screening.screener import ScreenService
from callguard.store import Store
from callguard.sync import SyncService, build_sync
from callguard.web.server import WebServer

log = structlog.get_logger("callguard.app")
T = TypeVar("T")


class Part(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Parts:
    """The service's parts, built once with what each needs (no service locator): ``ordered`` is the
    start order; stop runs it in reverse."""

    screener: ScreenService
    agi: AgiServer
    outbox: OutboxWorker
    calls: CallFlow | None = None
    notices: Notices | None = None
    callbacks: CallbackDriver | None = None
    ami: AmiClient | None = None
    sync: SyncService | None = None
    web: WebServer | None = None

    def ordered(self) -> list[Part]:
        # outbox → calls → ami: stop (reverse) ends intake first, then persists the tracker's outcomes,
        # then stops delivery; sync before web (webhooks hand it contact ids); web last (it reports on all).
        # callbacks after calls, before ami: the AMI feed stops first, then the loop persists its steps;
        # its notices before it, so they are sent until the loop has stopped.
        candidates: list[Part | None] = [self.screener, self.agi, self.outbox, self.calls, self.notices,
                                         self.callbacks, self.ami, self.sync, self.web]
        return [p for p in candidates if p is not None]


def build_parts(cfg: Config, store: Store) -> Parts:
    screener = ScreenService(cfg, store, parse_schedule(cfg.hours, cfg.phone.default_region))
    # The outbox worker always runs (queued leads leave even with AMI off).
    parts = Parts(screener, AgiServer(cfg.agi, screener), OutboxWorker(cfg, store, build_sink(cfg, store)))
    if cfg.ami.enabled:
        parts.calls = CallFlow(CallTracker(cfg), store, on_lead=parts.outbox.wake)
        screener.subscribe(parts.calls.on_screen)  # FastAGI verdicts tie to calls by agi_uniqueid
        on_event = parts.calls.on_event
        if cfg.callback.enabled:  # the call-back loop rides the same feed, after the call flow
            parts.callbacks, parts.notices = build_callbacks(cfg, store)
            on_event = fan_out(parts.calls.on_event, parts.callbacks.on_event)
        # after every login: re-attach calls in progress, rebuild those that ended in the gap
        parts.ami = AmiClient(cfg.ami, on_event, parts.calls.on_link_lost, parts.calls.resync)
        if parts.callbacks is not None:
            parts.callbacks.link = ClientLink(parts.ami)
    if cfg.crm.kind != "none":
        parts.sync = build_sync(cfg, store)
    if cfg.web.enabled:
        # CRM webhooks: contact ids to the sync, lead ids to the call-back loop (a re-read on its CRM worker)
        parts.web = WebServer(cfg, store, screener=screener, agi=parts.agi, ami=parts.ami, sync=parts.sync,
                              lead_hint=parts.callbacks.lead_hint if parts.callbacks is not None else None)
    return parts


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (it is a dependency; a missing one falls back):
    uvloop roughly halves the per-connection cost of the FastAGI path (scripts/bench_agi.py)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _startup_failed(part: str, error: CallguardError) -> None:
    log.error("startup_failed", part=part, error=str(error), exit_code=exit_code(error))


class Service:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.started: list[Part] = []
        self.store: Store | None = None
        self.parts: Parts | None = None
        self.stall: watchdog.StallWatchdog | None = None

    async def start(self) -> Parts:
        """Open the store, then start the parts in order. A failure a restart cannot cure (a typed
        ``CallguardError``: store, bind) logs one ``startup_failed`` and propagates; the CLI prints it as
        one line and exits with its code (``errors.exit_code``)."""
        try:
            self.store = await Store.open(self.cfg.store.path, self.cfg.store.busy_timeout_ms)
        except CallguardError as e:
            _startup_failed("store", e)
            raise
        name = "build"
        try:
            self.parts = build_parts(self.cfg, self.store)
            for part in self.parts.ordered():
                name = part.name
                await part.start()
                self.started.append(part)
                log.info("part_started", part=part.name)
        except BaseException as e:
            if isinstance(e, CallguardError):
                _startup_failed(name, e)
            await self.stop()
            raise
        return self.parts

    async def stop(self) -> None:
        while self.started:
            part = self.started.pop()
            try:
                await part.stop()
                log.info("part_stopped", part=part.name)
            except Exception:
                log.exception("part_stop_failed", part=part.name)
        if self.stall is not None:  # kept through the drain: a loop frozen there holds callers too
            self.stall.stop()
            self.stall = None
        offload.shutdown()  # the opt-in CRM page parser process (sync.parse_workers > 0), if a sync started one
        if self.store is not None:
            await self.store.close()
            self.store = None
        self.parts = None

    def _watch(self, parts: Parts) -> watchdog.StallWatchdog | None:
        """The stall watchdog for the loop; it shuts the FastAGI sockets the ``agi`` part holds."""
        return watchdog.start(self.cfg, parts.agi.held_fds, parts.agi.listen_fds)

    async def run_until_signal(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        notifier = sdnotify.Notifier()
        try:
            parts = await self.start()
            self.stall = self._watch(parts)
            stalls = watchdog.StallLog(watchdog.stall_log_path(self.cfg))
            metrics.LOOP_STALLS.source = stalls.count  # read at scrape time
            for key in self.cfg.ignored:
                log.warning("config_key_ignored", key=key, why=REMOVED_KEYS[key])
            log.info("service_ready", config=str(self.cfg.source) if self.cfg.source else "embedded defaults",
                     loop_stalls=stalls.count())
            notifier.ready(status="serving")  # after every part started: systemd's "active"
            await stop.wait()
            log.info("service_stopping")
        finally:
            notifier.stopping(status="stopping")
            await self.stop()
            notifier.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        log.info("service_stopped")
        return 0
