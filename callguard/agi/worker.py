"""An AGI worker process: screens calls on the listening socket it shares with its siblings.

``agi_pool`` (the main process) starts ``python -m callguard.agi.worker LISTEN_FD LINK_FD FORMAT LEVEL``
and writes the pickled ``Config`` to its stdin. The worker reads the cache through its own read-only
SQLite connection and answers Asterisk exactly as the in-process server does; what the main process
needs from it goes over LINK_FD, one JSON object per line (``encode_*``/``decode`` below):

    {"ready": PID}                                        serving
    {"screen": [uniqueid, at, caller, did, verdict, reason, latency_ms]}
    {"stats": {"errors": {KIND: N}, "timeouts": N, "active": N}}   AGI counters so far, every STATS_INTERVAL

The stats are also the worker's heartbeat: they come from its event loop, so a worker whose loop is
frozen (or that is stopped) goes silent and the main process kills it (``agi_pool``, LINK_SILENCE). The
worker also runs its own stall watchdog (``callguard.watchdog``), which shuts the connections it holds,
never the shared listening socket, and exits 70.

It stops on SIGTERM/SIGINT (stop accepting, drain within ``agi.drain_seconds``, exit 0) and when the main
process goes away (EOF on the link), so it never outlives the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson
import structlog

from callguard import metrics, watchdog
from callguard.config import Config
from callguard.screening.rules import Verdict
from callguard.store.screens import ScreenRecord

if TYPE_CHECKING:
    from callguard.agi.server import AgiServer

log = structlog.get_logger("callguard.agi.worker")

STATS_INTERVAL = 0.5  # also the heartbeat the main process supervises (agi_pool.LINK_SILENCE)
# A screen's record reaches the main process at most this late. The call tracker needs a verdict before
# the call ends; a spam call ends with Asterisk's hangup after the AGI, tens of ms later at the least,
# and the tracker also reads the verdict from AMI (VarSet CALLGUARD_VERDICT).
LINK_FLUSH_S = 0.01
_VERDICTS = frozenset(v.value for v in Verdict)


# --- the link's messages (pure) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class Stats:
    errors: dict[str, float]  # AGI_ERRORS by kind, totals since the worker started
    timeouts: float  # AGI_TIMEOUTS total
    active: int  # connections open now


Message = Ready | ScreenRecord | Stats


def encode_ready(pid: int) -> bytes:
    return orjson.dumps({"ready": pid}) + b"\n"


def encode_record(r: ScreenRecord) -> bytes:
    return orjson.dumps({"screen": [r.uniqueid, r.at, r.caller, r.did, r.verdict, r.reason, r.latency_ms]}) + b"\n"


def encode_stats(s: Stats) -> bytes:
    return orjson.dumps({"stats": {"errors": s.errors, "timeouts": s.timeouts, "active": s.active}}) + b"\n"


def decode(line: bytes) -> Message:
    """One line from a worker; ``ValueError`` for anything that is not one of the three messages."""
    doc = orjson.loads(line)  # orjson.JSONDecodeError is a ValueError
    if not isinstance(doc, dict) or len(doc) != 1:
        raise ValueError("not a one-key object")
    (kind, body), = doc.items()
    if kind == "screen":
        if not (isinstance(body, list) and len(body) == 7):
            raise ValueError("screen: not a 7-item list")
        uniqueid, at, caller, did, verdict, reason, latency_ms = body
        if not all(isinstance(v, str) for v in (uniqueid, caller, did, reason)) or verdict not in _VERDICTS:
            raise ValueError("screen: bad field")
        if not (_number(at) and _number(latency_ms)):
            raise ValueError("screen: bad time")
        return ScreenRecord(uniqueid, float(at), caller, did, verdict, reason, float(latency_ms))
    if kind == "stats":
        if not isinstance(body, dict):
            raise ValueError("stats: not an object")
        errors, timeouts, active = body.get("errors"), body.get("timeouts"), body.get("active")
        if not (isinstance(errors, dict) and all(isinstance(k, str) and _number(v) for k, v in errors.items())):
            raise ValueError("stats: bad errors")
        if not (_number(timeouts) and isinstance(active, int) and not isinstance(active, bool)):
            raise ValueError("stats: bad counts")
        return Stats({k: float(v) for k, v in errors.items()}, float(timeouts), active)
    if kind == "ready":
        if not (isinstance(body, int) and not isinstance(body, bool)):
            raise ValueError("ready: not a pid")
        return Ready(body)
    raise ValueError(f"unknown message {kind[:20]!r}")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def counters(active: int) -> Stats:
    """This process's AGI counters, read from its metrics registry."""
    errors = {
        s.labels["kind"]: s.value
        for family in metrics.AGI_ERRORS.collect()
        for s in family.samples
        if s.name.endswith("_total")
    }
    timeouts = sum(
        s.value for family in metrics.AGI_TIMEOUTS.collect() for s in family.samples if s.name.endswith("_total")
    )
    return Stats(errors, timeouts, active)


# --- the worker process ----------------------------------------------------------------------------------


class LinkEnd(asyncio.Protocol):
    """Either end of a worker's link: ``closed`` resolves when the other side is gone."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def eof_received(self) -> bool:
        self._closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()

    def _closed(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class LinkToMain(LinkEnd):
    """The worker's end of the link. Writes are gathered for LINK_FLUSH_S: one write, and one wake-up
    of the main process, for all the screens answered meanwhile, not one each (a write and a wake-up per
    screen cost ~30 µs here and ~90 µs of the main process's CPU per screen at 1,000 screens/s)."""

    def __init__(self) -> None:
        super().__init__()
        self._out: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        pass  # the main process never writes

    def send(self, data: bytes) -> None:
        if not self._out:
            asyncio.get_running_loop().call_later(LINK_FLUSH_S, self.flush)
        self._out.append(data)

    def record(self, record: ScreenRecord) -> None:
        self.send(encode_record(record))

    def flush(self) -> None:
        transport = cast(asyncio.WriteTransport | None, self.transport)  # a socket's: it writes
        if self._out and transport is not None and not transport.is_closing():
            transport.write(b"".join(self._out))
        self._out.clear()


async def serve(cfg: Config, listen_fd: int, link_fd: int) -> int:
    from callguard.agi.server import AgiServer
    from callguard.screening.rules import parse_schedule
    from callguard.screening.screener import ScreenService
    from callguard.store import Store

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _, link = await loop.create_connection(LinkToMain, sock=socket.socket(fileno=link_fd))
    store = await Store.open(cfg.store.path, cfg.store.busy_timeout_ms)
    try:
        screener = ScreenService(cfg, store, parse_schedule(cfg.hours, cfg.phone.default_region), sink=link.record)
        server = AgiServer(cfg.agi, {"screen": screener.handle}, sock=socket.socket(fileno=listen_fd))
        await server.start()
        link.send(encode_ready(os.getpid()))
        stall = watchdog.start(cfg, "worker", server.held_fds)  # no listening fds: the siblings share it
        reporter = asyncio.create_task(_report(link, server))
        ended = asyncio.create_task(stop.wait())
        await asyncio.wait([ended, link.closed], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            log.warning("agi_worker_orphaned", hint="the main process went away; stopping")
        ended.cancel()
        await server.stop()
        if stall is not None:
            stall.stop()
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        link.send(encode_stats(counters(server.active)))
        link.flush()
    finally:
        await store.close()
    assert link.transport is not None
    link.transport.close()
    return 0


async def _report(link: LinkToMain, server: AgiServer) -> None:
    while True:  # every time, changed or not: it is the heartbeat
        await asyncio.sleep(STATS_INTERVAL)
        link.send(encode_stats(counters(server.active)))


def main(argv: list[str]) -> int:
    from callguard import log as logsetup
    from callguard.app import run_loop

    listen_fd, link_fd, fmt, level = int(argv[0]), int(argv[1]), argv[2], argv[3]
    cfg = pickle.load(sys.stdin.buffer)  # from the main process, not from outside
    if not isinstance(cfg, Config):
        raise SystemExit("agi_worker: stdin did not carry a Config")
    logsetup.configure(fmt, level, final=True)
    return run_loop(serve(cfg, listen_fd, link_fd))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
