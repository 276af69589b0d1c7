"""FastAGI screening in worker processes (``agi.workers``), supervised by the main process.

The main process binds the listening socket and starts the workers (``agi_worker``), which all accept on
it: the kernel hands each new connection to a worker that is waiting in ``accept``, so an idle worker
takes the next call while a busy one finishes its own. One Python process is one core; with the workers,
screening uses every core of the host and never waits behind the main loop's CRM sync, webhooks or AMI
parsing.

What the rest of callguard needs from a screen reaches the main process over each worker's link: the
screen's record goes to ``ScreenService.ingest`` (metrics, the call tracker, the screens table), the AGI
error counters and open connections to this process's metrics.

A worker whose link goes silent for LINK_SILENCE (its loop frozen with the GIL held, or the process
stopped: its own stall watchdog cannot act) is killed with SIGKILL, so the kernel closes the FastAGI
connections it holds and Asterisk fails open (``agi_worker_unresponsive``).

A worker that dies is started again (``agi_worker_exited``, back-off from RESTART_MIN to RESTART_MAX);
its siblings go on answering meanwhile. On stop each worker gets SIGTERM and drains its in-flight screens
within ``agi.drain_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

import callguard
from callguard import log as logsetup
from callguard import metrics, sdnotify
from callguard.agi import rxtime
from callguard.agi.server import BACKLOG
from callguard.agi.worker import LinkEnd, Ready, Stats, decode
from callguard.config import Config
from callguard.errors import BindError, CallguardError
from callguard.screening.screener import ScreenService
from callguard.store.screens import ScreenRecord

log = structlog.get_logger("callguard.agi.pool")

START_TIMEOUT = 20.0  # a worker's Python start-up and imports, on a busy host
STOP_GRACE = 2.0  # beyond agi.drain_seconds, before SIGKILL
RESTART_MIN = 0.5
RESTART_MAX = 10.0
STABLE_AFTER = 30.0  # a worker that ran this long restarts after RESTART_MIN again
MAX_LINE = 1 << 20
WORKER_MODULE = "callguard.agi.worker"
# A worker's stats come every agi_worker.STATS_INTERVAL (0.5 s). Silent this long past the worker's own
# service.stall_timeout: SIGKILL, checked every LINK_CHECK. The default 1 + 0.5 s, plus one check,
# closes a stopped worker's held calls within 1.75 s of its last beat.
LINK_GRACE = 0.5
LINK_CHECK = 0.25


class WorkerStartError(CallguardError):
    """An AGI worker process did not come up."""


def uses_workers(cfg: Config) -> bool:
    """Workers need a database file they can open themselves; ``:memory:`` is this process's alone."""
    return cfg.agi.workers > 0 and str(cfg.store.path) != ":memory:"


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    link: WorkerLink | None = None
    ready: asyncio.Future[int] | None = None
    started_at: float = 0.0
    active: int = 0
    errors: dict[str, float] = field(default_factory=dict)
    timeouts: float = 0.0
    supervisor: asyncio.Task[None] | None = None
    heard: float = 0.0  # time.monotonic() of the last bytes on its link

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class WorkerLink(LinkEnd):
    """The main process's end of one worker's link: lines in, messages dispatched."""

    def __init__(self, pool: AgiPool, worker: Worker) -> None:
        super().__init__()
        self.pool = pool
        self.worker = worker
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.worker.heard = time.monotonic()
        buf = self._buf
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            self.pool.on_message(self.worker, bytes(buf[start:end]))
            start = end + 1
        del buf[:start]
        if len(buf) > MAX_LINE:
            self.pool.on_bad_message(self.worker, ValueError(f"line over {MAX_LINE} bytes"))
            buf.clear()


class AgiPool:
    """The ``agi`` part when ``agi.workers`` > 0."""

    name = "agi"

    def __init__(self, cfg: Config, screener: ScreenService) -> None:
        self.cfg = cfg
        self.screener = screener
        self.port: int | None = None
        self.workers: list[Worker] = []
        self._sock: socket.socket | None = None
        self._stopping = False
        self._link_watch: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._sock is not None and any(_alive(w) for w in self.workers)

    @property
    def active(self) -> int:
        return sum(w.active for w in self.workers if _alive(w))

    def held_fds(self) -> list[int]:
        """For the main process's stall watchdog: the workers hold the FastAGI connections, not this one."""
        return []

    def listen_fds(self) -> list[int]:
        """None: shutting the listening socket would stop the workers' accept too (it is one socket)."""
        return []

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        agi = self.cfg.agi
        self._sock = _listen(agi.host, agi.port)
        self.port = self._sock.getsockname()[1]
        self.workers = [Worker(i) for i in range(agi.workers)]
        try:
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
        except BaseException:
            await self.stop()
            raise
        for w in self.workers:
            w.supervisor = asyncio.create_task(self._supervise(w), name=f"agi-worker-{w.index}")
        if self.cfg.service.stall_timeout:
            self._link_watch = asyncio.create_task(self._watch_links(), name="agi-worker-links")
        metrics.AGI_ACTIVE.set_function(lambda: self.active)  # read at scrape time
        log.info(
            "agi_listening", host=agi.host, port=self.port, deadline_ms=agi.deadline_ms, workers=len(self.workers),
            pids=[w.pid for w in self.workers],
        )

    async def stop(self) -> None:
        self._stopping = True
        if self._link_watch is not None:
            self._link_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._link_watch
        for w in self.workers:
            if w.supervisor is not None:
                w.supervisor.cancel()
        # Supervisors first: none may start a worker after the SIGTERMs (one cut short in the middle of
        # a restart leaves its new process in ``w.proc``, which is then signalled with the others).
        await asyncio.gather(*(w.supervisor for w in self.workers if w.supervisor), return_exceptions=True)
        running = [w for w in self.workers if _alive(w)]
        for w in running:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        await asyncio.gather(*(self._reap(w) for w in running))
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if running:
            log.info("agi_workers_stopped", workers=len(running),
                     exit_codes=[w.proc.returncode for w in running if w.proc is not None])

    async def _reap(self, w: Worker) -> None:
        """Wait for a stopping worker to exit (SIGKILL past its drain bound), then for its link."""
        assert w.proc is not None
        timeout = self.cfg.agi.drain_seconds + STOP_GRACE
        try:
            await asyncio.wait_for(w.proc.wait(), timeout)
        except TimeoutError:
            log.error("agi_worker_killed", worker=w.index, pid=w.pid, after_s=timeout)
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            await w.proc.wait()
        await _drained(w)

    # --- one worker -------------------------------------------------------------------------------------

    async def _spawn(self, w: Worker) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        fmt, level, stream = logsetup.settings()
        try:
            out = stream.fileno()
        except (AttributeError, OSError, ValueError):  # a StringIO in a test: inherit ours
            out = None
        env = {k: v for k, v in os.environ.items() if k not in sdnotify.ENV_VARS}  # systemd's are ours alone
        # The same callguard as this process, even when it was imported from a checkout.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        w.ready = loop.create_future()
        w.errors, w.timeouts, w.active = {}, 0.0, 0
        try:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.flush()
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", WORKER_MODULE, str(self._sock.fileno()), str(theirs.fileno()),
                fmt, level, stdin=asyncio.subprocess.PIPE, stdout=out, env=env,
                pass_fds=(self._sock.fileno(), theirs.fileno()),
            )
        finally:
            theirs.close()
        w.started_at = w.heard = time.monotonic()
        _, w.link = await loop.create_connection(lambda: WorkerLink(self, w), sock=ours)
        assert w.proc.stdin is not None
        w.proc.stdin.write(pickle.dumps(self.cfg))
        w.proc.stdin.close()
        waits = [w.ready, asyncio.ensure_future(w.proc.wait())]
        await asyncio.wait(waits, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not w.ready.done():
            waits[1].cancel()
            code = w.proc.returncode
            if code is None:
                w.proc.kill()
                await w.proc.wait()
            raise WorkerStartError(
                f"AGI worker {w.index} did not start: "
                + (f"it exited with code {code}" if code is not None else f"not ready in {START_TIMEOUT:.0f} s")
            )
        waits[1].cancel()

    async def _supervise(self, w: Worker) -> None:
        delay = RESTART_MIN
        while not self._stopping:
            assert w.proc is not None
            code = await w.proc.wait()
            await _drained(w)
            if self._stopping:
                return
            ran = time.monotonic() - w.started_at
            delay = RESTART_MIN if ran >= STABLE_AFTER else min(delay * 2, RESTART_MAX)
            metrics.AGI_ERRORS.labels(kind="worker_exit").inc()
            log.error("agi_worker_exited", worker=w.index, pid=w.pid, exit_code=code, ran_s=round(ran, 1),
                      restart_in_s=delay, serving=sum(1 for x in self.workers if _alive(x)))
            while not self._stopping:
                await asyncio.sleep(delay)
                try:
                    await self._spawn(w)
                except (WorkerStartError, OSError) as e:
                    delay = min(delay * 2, RESTART_MAX)
                    log.error("agi_worker_restart_failed", worker=w.index, error=str(e), restart_in_s=delay)
                    continue
                log.info("agi_worker_restarted", worker=w.index, pid=w.pid)
                break

    async def _watch_links(self) -> None:
        """SIGKILL a serving worker whose link is silent: its loop cannot beat, nor its watchdog act."""
        silence = self.cfg.service.stall_timeout + LINK_GRACE
        last = time.monotonic()
        while True:
            await asyncio.sleep(LINK_CHECK)
            now = time.monotonic()
            if now - last > silence / 2:  # this loop was late itself: what it has not read yet proves nothing
                for w in self.workers:
                    w.heard = max(w.heard, now)
            last = now
            for w in self.workers:
                if _alive(w) and w.ready is not None and w.ready.done() and now - w.heard > silence:
                    metrics.AGI_ERRORS.labels(kind="worker_unresponsive").inc()
                    log.error("agi_worker_unresponsive", worker=w.index, pid=w.pid, silent_s=round(now - w.heard, 3),
                              action="SIGKILL")
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.kill()  # type: ignore[union-attr]
                    w.heard = now  # once; the supervisor restarts it

    # --- the links --------------------------------------------------------------------------------------

    def on_message(self, w: Worker, line: bytes) -> None:
        try:
            msg = decode(line)
        except ValueError as e:
            self.on_bad_message(w, e)
            return
        if isinstance(msg, ScreenRecord):
            self.screener.ingest(msg)
        elif isinstance(msg, Stats):
            for kind, total in msg.errors.items():
                if total > w.errors.get(kind, 0.0):
                    metrics.AGI_ERRORS.labels(kind=kind[:40]).inc(total - w.errors.get(kind, 0.0))
                    w.errors[kind] = total
            if msg.timeouts > w.timeouts:
                metrics.AGI_TIMEOUTS.inc(msg.timeouts - w.timeouts)
                w.timeouts = msg.timeouts
            w.active = msg.active
        elif isinstance(msg, Ready) and w.ready is not None and not w.ready.done():
            w.ready.set_result(msg.pid)

    def on_bad_message(self, w: Worker, error: ValueError) -> None:
        metrics.AGI_ERRORS.labels(kind="worker_link").inc()
        log.error("agi_worker_bad_message", worker=w.index, pid=w.pid, error=str(error)[:200])


async def _drained(w: Worker) -> None:
    """After a worker exited: take in every record it wrote before it went."""
    if w.link is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(w.link.closed), 1.0)
    w.active = 0


def _alive(w: Worker) -> bool:
    return w.proc is not None and w.proc.returncode is None


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket the workers share (SO_REUSEADDR, as asyncio's create_server binds).

    One address: an IPv4 one when the name has any. asyncio would bind every address of a name, and
    "localhost" resolves to ::1 first on some hosts; binding only that would refuse the shipped dialplan's
    agi://127.0.0.1 and leave every call unscreened (fail-open, silently)."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:  # socket.gaierror: a host name that does not resolve
        raise BindError("agi", host, port, e) from e
    family, kind, proto, _, addr = next((a for a in found if a[0] == socket.AF_INET), found[0])
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rxtime.enable(sock)  # the workers' screens count from the first byte (callguard/agi/rxtime.py)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise BindError("agi", host, port, e) from e
    except BaseException:
        sock.close()
        raise
    return sock


def _package_root() -> str:
    return str(Path(callguard.__file__).resolve().parent.parent)
