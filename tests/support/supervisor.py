"""A fake systemd for ``Type=notify`` services: READY, the watchdog, and the kill sequence.

It does what systemd does for scripts/callguard.service, with nothing installed: it binds a datagram
socket, starts the command with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``/``WATCHDOG_PID``, records every
notification, and once READY=1 came, when WATCHDOG=1 stops for ``watchdog_sec`` it sends SIGABRT
(``WatchdogSignal``) to the main process and ``abort_sec`` later SIGKILL to its whole process group (the
cgroup, ``KillMode=mixed``). Each of the two timers fires ``timer_slack`` late, as systemd's may (sd-event's
default accuracy is 250 ms): the kill comes at the worst time systemd would allow. ``stop()`` is
``systemctl stop``: SIGTERM, then SIGKILL after ``stop_sec``.

    sup = Supervisor([sys.executable, "-m", "callguard", "--config", cfg, "run"], watchdog_sec=1.5)
    sup.start()
    sup.wait_ready()            # raises TimeoutError, or RuntimeError if the process exited first
    ...                         # sup.pid, sup.notifications, sup.watchdog_fired_at, sup.killed_at
    code = sup.stop()           # the exit status (negative: killed by that signal)

Blocking calls, a background thread: from an asyncio test, ``await asyncio.to_thread(sup.wait_ready)``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic()
    fields: dict[str, str]  # "READY=1\nSTATUS=x" -> {"READY": "1", "STATUS": "x"}


class Supervisor:
    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, *, watchdog_sec: float = 2.0,
        abort_sec: float = 0.5, stop_sec: float = 30.0, timer_slack: float = 0.25, stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None, cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """``watchdog_sec`` 0 turns the watchdog off (no WATCHDOG_USEC). ``stdout``/``stderr`` as for
        ``subprocess.Popen`` (None inherits)."""
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.watchdog_sec = watchdog_sec
        self.abort_sec = abort_sec
        self.stop_sec = stop_sec
        self.timer_slack = timer_slack
        self._popen_kw: dict[str, Any] = {"stdout": stdout, "stderr": stderr, "cwd": cwd}
        self.proc: subprocess.Popen[bytes] | None = None
        self.notifications: list[Notification] = []
        self.watchdog_fired_at: float | None = None  # when SIGABRT went
        self.killed_at: float | None = None  # when SIGKILL went to the group
        self._changed = threading.Condition()
        self._dir = tempfile.TemporaryDirectory(prefix="fake-systemd-")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(Path(self._dir.name) / "notify"))
        self._sock.settimeout(0.05)
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # --- systemctl ------------------------------------------------------------------------------------

    def start(self) -> None:
        env = {**self.env, "NOTIFY_SOCKET": self._sock.getsockname()}
        if self.watchdog_sec:
            env["WATCHDOG_USEC"] = str(int(self.watchdog_sec * 1e6))
        # The pid is known only after the fork: WATCHDOG_PID is left out (callguard then takes it as its own).
        env.pop("WATCHDOG_PID", None)
        self.proc = subprocess.Popen(self.argv, env=env, start_new_session=True, **self._popen_kw)
        self._thread = threading.Thread(target=self._run, name="fake-systemd", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> Notification:
        return self.wait_for("READY", timeout)

    def wait_for(self, key: str, timeout: float = 30.0, after: int = 0) -> Notification:
        """The first notification from index ``after`` on that sets ``key``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for n in self.notifications[after:]:
                    if key in n.fields:
                        return n
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"exited with {self.proc.returncode} before {key}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {key} in {timeout} s")
                self._changed.wait(min(left, 0.1))

    def pings(self) -> list[float]:
        return [n.at for n in self.notifications if n.fields.get("WATCHDOG") == "1"]

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int:
        """SIGTERM; SIGKILL to the group after ``stop_sec``; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_sec)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.proc.wait()
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        """Kill what is left (the group) and free the socket; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self._kill_group()
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # workers that outlived the main process
        self._done.set()
        if self._thread is not None:
            self._thread.join(1.0)
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._sock.close()
        self._dir.cleanup()

    # --- the manager's loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        assert self.proc is not None
        while not self._done.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                data = self._sock.recv(4096)
                self._record(data)
            if self.proc.poll() is not None:
                continue  # keep reading until close(): late datagrams are still recorded
            self._check_watchdog()

    def _record(self, data: bytes) -> None:
        fields = dict(line.split("=", 1) for line in data.decode(errors="replace").split("\n") if "=" in line)
        with self._changed:
            self.notifications.append(Notification(time.monotonic(), fields))
            self._changed.notify_all()

    def _check_watchdog(self) -> None:
        if not self.watchdog_sec or self.killed_at is not None:
            return
        ready = next((n.at for n in self.notifications if "READY" in n.fields), None)
        if ready is None:
            return
        last = max([ready, *self.pings()])
        now = time.monotonic()
        if self.watchdog_fired_at is None and now - last >= self.watchdog_sec + self.timer_slack:
            self.watchdog_fired_at = now
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGABRT)
        elif self.watchdog_fired_at is not None and now - self.watchdog_fired_at >= self.abort_sec + self.timer_slack:
            self._kill_group()

    def _kill_group(self) -> None:
        self.killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
