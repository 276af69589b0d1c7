"""Wiring and lifecycle: start the parts in order, stop them in reverse (STYLE.md rule 8).

A part is anything with ``name``, ``async start()`` and ``async stop()``. ``start()`` returns once the
part is serving (a listening socket bound, a worker task running); ``stop()`` drains within its own bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from callguard import metrics, sdnotify, watchdog
from callguard.config import Config
from callguard.crm import offload
from callguard.errors import CallguardError, exit_code
from callguard.screening.rules import Schedule, parse_schedule
from callguard.store import Store

log = structlog.get_logger("callguard.app")
T = TypeVar("T")


class Part(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    """What the parts share: config, store, and references health/readiness reads."""

    cfg: Config
    store: Store
    schedule: Schedule
    parts: dict[str, Any] = field(default_factory=dict)


def build_parts(rt: Runtime) -> list[Part]:
    """The parts in start order. Later issues add theirs here."""
    from callguard.agi.server import AgiServer
    from callguard.screening.screener import ScreenService

    screener = ScreenService(rt.cfg, rt.store, rt.schedule)
    parts: list[Part] = [screener, AgiServer(rt.cfg.agi, screener)]
    parts.extend(_missed_call_parts(rt, screener))
    if rt.cfg.crm.kind != "none":
        # Before web: webhooks hand contact ids to the running sync part.
        from callguard.sync import build_sync

        parts.append(build_sync(rt))
    if rt.cfg.web.enabled:
        # Last: it reports on the others (readiness), so they exist when it serves.
        from callguard.web.server import WebServer

        parts.append(WebServer(rt))
    return parts


def _missed_call_parts(rt: Runtime, screener: Any) -> list[Part]:
    """The outbox worker always runs (queued leads leave even with AMI off); with ``ami.enabled`` the
    tracker and the AMI link too. Start order outbox → calls → ami, so stop (reverse) ends intake first,
    then persists the tracker's outcomes, then stops delivery."""
    from callguard.leads.outbox import OutboxWorker
    from callguard.leads.sinks import build_sink

    worker = OutboxWorker(rt.cfg, rt.store, build_sink(rt.cfg, rt.store))
    parts: list[Part] = [worker]
    if rt.cfg.ami.enabled:
        from callguard.ami.client import AmiClient
        from callguard.calls.recorder import CallFlow
        from callguard.calls.tracker import CallTracker

        flow = CallFlow(CallTracker(rt.cfg), rt.store, on_lead=worker.wake)
        screener.subscribe(flow.on_screen)  # FastAGI verdicts tie to calls by agi_uniqueid
        parts += [flow, AmiClient(rt.cfg.ami, flow.on_event, flow.on_link_lost)]
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
        self.runtime: Runtime | None = None
        self.stall: watchdog.StallWatchdog | None = None

    async def start(self) -> Runtime:
        """Open the store, then start the parts in order. A failure a restart cannot cure (a typed
        ``CallguardError``: store, bind) logs one ``startup_failed`` and propagates; the CLI prints it as
        one line and exits with its code (``errors.exit_code``)."""
        try:
            store = await Store.open(self.cfg.store.path, self.cfg.store.busy_timeout_ms)
        except CallguardError as e:
            _startup_failed("store", e)
            raise
        rt = Runtime(self.cfg, store, parse_schedule(self.cfg.hours, self.cfg.phone.default_region))
        self.runtime = rt
        name = "build"
        try:
            for part in build_parts(rt):
                name = part.name
                rt.parts[part.name] = part
                await part.start()
                self.started.append(part)
                log.info("part_started", part=part.name)
        except BaseException as e:
            if isinstance(e, CallguardError):
                _startup_failed(name, e)
            await self.stop()
            raise
        return rt

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
        offload.shutdown()  # the CRM page parser's worker process, if a sync started one
        if self.runtime is not None:
            await self.runtime.store.close()
            self.runtime = None

    def _watch(self, rt: Runtime) -> watchdog.StallWatchdog | None:
        """The stall watchdog for the loop; it shuts the FastAGI sockets the ``agi`` part holds."""
        agi = rt.parts.get("agi")
        no_fds: watchdog.Fds = list
        return watchdog.start(self.cfg, getattr(agi, "held_fds", no_fds), getattr(agi, "listen_fds", no_fds))

    async def run_until_signal(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        notifier = sdnotify.Notifier()
        try:
            rt = await self.start()
            self.stall = self._watch(rt)
            stalls = watchdog.StallLog(watchdog.stall_log_path(self.cfg))
            metrics.LOOP_STALLS.source = stalls.count  # read at scrape time
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
