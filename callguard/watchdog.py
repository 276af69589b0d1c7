"""The loop-stall watchdog: a frozen event loop must not hold a caller (DESIGN.md, the dialplan contract).

Asterisk has no read timeout on a FastAGI socket (verified on 22.10.1), and the kernel keeps accepting
connections for a listener whose loop is frozen. So the loop beats a heartbeat (``BEAT_INTERVAL``) and a
daemon thread, which runs while the loop is blocked in a system call or in Python code (the GIL switches
every 5 ms), checks it. When the loop has not beaten for ``service.stall_timeout`` the thread runs the
stall action (``StallResponse``): it shuts the listening socket and every FastAGI connection the process
holds, so Asterisk reads EOF (or a reset) and the dialplan fails open; logs ``loop_stalled``; appends the
stall to the stall log (counted by ``callguard_loop_stalls_total`` after the restart); and exits the
process with EXIT_STALLED (70) for systemd to start it again.

A process that is stopped (SIGSTOP) or frozen with the GIL held stops its thread too: systemd's
watchdog (``sdnotify``) covers that case.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from callguard.config import Config
from callguard.errors import EXIT_STALLED

BEAT_INTERVAL = 0.25
CHECK_INTERVAL = 0.05
STALL_LOG_MAX = 1 << 20  # bytes of the stall log read to count it: ~15,000 stalls

Fds = Callable[[], list[int]]


def stall_log_path(cfg: Config) -> Path | None:
    """Beside the store (``/var/lib/callguard`` when installed); None for an in-memory store."""
    path = cfg.store.path
    return None if str(path) == ":memory:" else path.with_name(path.name + ".stalls")


class StallLog:
    """One line per stall, appended with one ``write`` (O_APPEND). Written from the watchdog thread: no
    SQLite, whose lock the frozen loop may hold."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def record(self, stalled_s: float) -> None:
        if self.path is None:
            return
        line = f"{time.time():.3f} pid={os.getpid()} stalled_s={stalled_s:.3f}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def count(self) -> int:
        if self.path is None:
            return 0
        try:
            with self.path.open("rb") as f:
                return f.read(STALL_LOG_MAX).count(b"\n")
        except FileNotFoundError:
            return 0


def shutdown_fds(fds: list[int]) -> int:
    """``shutdown(SHUT_RDWR)`` each socket, on a dup of its fd (the loop's transport still owns the fd);
    how many were shut. A listening socket shut this way also resets the connections queued on it."""
    done = 0
    for fd in fds:
        try:
            dup = os.dup(fd)
        except OSError:  # closed meanwhile
            continue
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=dup)
        except OSError:  # not a socket (the fd was closed and reused meanwhile)
            os.close(dup)
            continue
        with s, contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)  # OSError: not connected (any more)
            done += 1
    return done


@dataclass
class StallResponse:
    """The default stall action. ``held``: the FastAGI connections this process holds; ``listening``: its
    listening sockets (shut first, so no new call queues behind the frozen loop)."""

    held: Fds
    listening: Fds
    stall_log: StallLog | None = None
    log_fd: int = 2
    exit: Callable[[int], object] = os._exit

    def __call__(self, stalled_s: float) -> None:
        listening = shutdown_fds(self.listening())  # first: no new call queues behind the frozen loop
        held = shutdown_fds(self.held())
        self._log(stalled_s, held, listening)
        try:
            if self.stall_log is not None:
                self.stall_log.record(stalled_s)
        except OSError as e:
            self._log_line({"event": "loop_stall_not_recorded", "level": "error", "error": str(e)})
        self.exit(EXIT_STALLED)

    def _log(self, stalled_s: float, held: int, listening: int) -> None:
        self._log_line({
            "event": "loop_stalled", "level": "error", "stalled_s": round(stalled_s, 3), "held_connections": held,
            "listening_closed": listening, "pid": os.getpid(), "exit_code": EXIT_STALLED,
        })

    def _log_line(self, doc: dict[str, object]) -> None:
        """Straight to the fd in one ``write`` of one line, taking no lock: structlog's logger holds one
        per file while it writes, and the frozen loop may be the thread holding it."""
        doc["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with contextlib.suppress(OSError):
            os.write(self.log_fd, orjson.dumps(doc) + b"\n")


class StallWatchdog:
    """The heartbeat on the loop and the thread that watches it. ``on_stall(stalled_s)`` runs once, on the
    thread; tests inject their own to observe it without exiting."""

    def __init__(
        self, timeout: float, on_stall: Callable[[float], None], beat_interval: float = BEAT_INTERVAL,
    ) -> None:
        self.timeout = timeout
        self.on_stall = on_stall
        self.beat_interval = beat_interval
        self.fired = threading.Event()
        self._last = time.monotonic()
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """On the loop: beat now, then every ``beat_interval``; start the watching thread."""
        self._loop = asyncio.get_running_loop()
        self._beat()
        self._thread = threading.Thread(target=self._watch, name="callguard-stall-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    def _beat(self) -> None:
        self._last = time.monotonic()
        assert self._loop is not None
        self._handle = self._loop.call_later(self.beat_interval, self._beat)

    def _watch(self) -> None:
        while not self._done.wait(CHECK_INTERVAL):
            stalled = time.monotonic() - self._last
            if stalled >= self.timeout:
                self.fired.set()
                self.on_stall(stalled)
                return


def log_fd() -> int:
    """The fd the service logs to (stdout under systemd, both go to the journal), else stderr's."""
    from callguard import log as logsetup
    try:
        return logsetup.settings().stream.fileno()
    except (AttributeError, OSError, ValueError):
        return 2


def start(cfg: Config, held: Fds, listening: Fds) -> StallWatchdog | None:
    """Start the watchdog for this process (``service.stall_timeout``; None when it is 0)."""
    if not cfg.service.stall_timeout:
        return None
    response = StallResponse(held, listening, StallLog(stall_log_path(cfg)), log_fd())
    watchdog = StallWatchdog(cfg.service.stall_timeout, response)
    watchdog.start()
    return watchdog
