"""systemd's notify protocol by hand (sd_notify(3)): READY=1, STOPPING=1, STATUS=, and WATCHDOG=1 pings.

A datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace). The pings come from the
event loop, so a loop that is frozen, or a process that is stopped, stops pinging and systemd's watchdog
(``WatchdogSec=`` in scripts/callguard.service) kills the service: its sockets close and Asterisk fails
open. Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("callguard.sdnotify")

# A ping every sixth of WatchdogSec (0.25 s for the unit's 1.5 s): systemd then acts no sooner than
# 1.25 s into a freeze, after the stall watchdog (service.stall_timeout, 1 s), which logs and counts.
PINGS_PER_PERIOD = 6


def _address(env: Mapping[str, str]) -> str | None:
    addr = env.get("NOTIFY_SOCKET", "")
    if not addr or addr[0] not in "/@":
        return None
    return "\0" + addr[1:] if addr[0] == "@" else addr


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings for ``$WATCHDOG_USEC`` (None when not asked, or asked of another pid)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID") or os.getpid())
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 1e6 / PINGS_PER_PERIOD


class Notifier:
    """One socket for the process's life; a failed send is logged once, never raised."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env)
        self.interval = watchdog_interval(env) if self.address else None
        self._sock: socket.socket | None = None
        self._failed = False
        self._handle: asyncio.TimerHandle | None = None

    def send(self, state: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(state.encode(), self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warning("sd_notify_failed", error=str(e), state=state.split("=", 1)[0])
            return False
        self._failed = False
        return True

    def ready(self, status: str = "") -> None:
        """READY=1 and, with ``$WATCHDOG_USEC``, the pings from this loop from now on."""
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))
        if self.interval is not None:
            log.info("sd_watchdog_pinging", interval_s=round(self.interval, 3))
            self._ping()

    def stopping(self, status: str = "") -> None:
        self._cancel()
        self.send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def close(self) -> None:
        self._cancel()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _ping(self) -> None:
        self.send("WATCHDOG=1")
        assert self.interval is not None
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._ping)

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
