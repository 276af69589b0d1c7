"""`callguard run` as a real process at the PBX boundary: no caller waits on a hung callguard > 3 s.

A blocked event loop (tests/support/stalling.py) and a stopped process (SIGSTOP under the fake systemd of
tests/support/supervisor.py); and the notify protocol itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from callguard.errors import EXIT_STALLED
from tests.fakes.asterisk_agi import header_with, load
from tests.support.supervisor import Supervisor

ROOT = Path(__file__).parents[2]
STALL_CALLER = "+15557770000"
HEADER = header_with(load("s02_clean_answered"), agi_callerid=STALL_CALLER) + b"\n"
CLEAN_HEADER = load("s02_clean_answered").header + b"\n"
BOUND = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path) -> tuple[Path, int, int]:
    agi, web = _free_port(), _free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[store]\npath = "cg.sqlite3"\n[agi]\nport = {agi}\n'
        f'[web]\nport = {web}\n[log]\nformat = "json"\n'
    )
    return path, agi, web


def _hold(port: int, header: bytes) -> tuple[socket.socket, float]:
    """A caller: connect, send the request, then wait (Asterisk has no read timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(header)
    return s, time.monotonic()


def _seconds_to_close(s: socket.socket, since: float, limit: float = 10.0) -> float:
    """Read until the server's side is gone (EOF or reset); seconds from ``since``."""
    s.settimeout(limit)
    with s:
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - since


def _stalls_metric(web_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("callguard_loop_stalls_total "):
                return float(line.split()[1])
    raise AssertionError("callguard_loop_stalls_total not exported")


class Events:
    """The service's JSON log lines (stdout), read on a thread."""

    def __init__(self, stream: object) -> None:
        self.lines: list[dict[str, object]] = []
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in iter(self._stream.readline, b""):  # type: ignore[attr-defined]
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                continue

    def wait(self, name: str, timeout: float = 30.0, **match: object) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in list(self.lines):
                if e.get("event") == name and all(e.get(k) == v for k, v in match.items()):
                    return e
            time.sleep(0.02)
        raise AssertionError(f"no {name} {match} in {timeout} s; saw {[e.get('event') for e in self.lines]}")


def _run(config: Path, *, stalling: bool = True, **kw: object) -> Supervisor:
    module = "tests.support.stalling" if stalling else "callguard"
    env = {**os.environ, "CALLGUARD_TEST_STALL_CALLER": STALL_CALLER, "CALLGUARD_TEST_STALL_S": "30"}
    return Supervisor([sys.executable, "-m", module, "--config", str(config), "run"], env, cwd=ROOT,
                      stdout=subprocess.PIPE, **kw)  # type: ignore[arg-type]


# --- sd_notify from the real process ---------------------------------------------------------------------


def test_run_notifies_ready_pings_and_stopping(tmp_path: Path) -> None:
    config, agi, _ = _config(tmp_path)
    sup = _run(config, stalling=False, watchdog_sec=1.0)
    sup.start()
    try:
        events = Events(sup.proc.stdout)  # type: ignore[union-attr]
        ready = sup.wait_ready()
        assert events.wait("service_ready")  # READY=1 came once every part was up
        with socket.create_connection(("127.0.0.1", agi)):
            pass  # serving
        time.sleep(1.2)
        pings = [t for t in sup.pings() if t > ready.at]
        assert len(pings) >= 3, pings  # every third of WatchdogSec
        assert max(b - a for a, b in zip([ready.at, *pings], pings, strict=False)) < 0.7
        assert sup.watchdog_fired_at is None
        assert sup.stop() == 0
        assert any(n.fields.get("STOPPING") == "1" for n in sup.notifications)
    finally:
        sup.close()


# --- a blocked event loop ---------------------------------------------------------------------------------


def test_a_blocked_loop_closes_the_call_exits_70_and_is_counted(tmp_path: Path) -> None:
    config, agi, web = _config(tmp_path)
    sup = _run(config, watchdog_sec=0)  # callguard's own watchdog alone
    sup.start()
    try:
        events = Events(sup.proc.stdout)  # type: ignore[union-attr]
        assert events.wait("service_ready")["loop_stalls"] == 0
        s, t0 = _hold(agi, HEADER)  # this screen blocks the loop that takes it
        assert _seconds_to_close(s, t0) < BOUND
        stalled = events.wait("loop_stalled", timeout=5)
        assert stalled["held_connections"] == 1 and stalled["exit_code"] == EXIT_STALLED
        assert sup.wait_exit(10) == EXIT_STALLED
        sup.close()
        sup = _run(config)  # systemd's restart
        sup.start()
        events = Events(sup.proc.stdout)  # type: ignore[union-attr]
        assert events.wait("service_ready")["loop_stalls"] == 1
        assert _stalls_metric(web) == 1
        s, t0 = _hold(agi, CLEAN_HEADER)  # and calls are screened again
        assert s.recv(4096).startswith(b"SET VARIABLE CALLGUARD_VERDICT")
        s.close()
    finally:
        sup.close()


# --- a stopped process, under the (fake) systemd watchdog --------------------------------------------------


def test_a_stopped_service_is_killed_and_its_calls_closed(tmp_path: Path) -> None:
    """SIGSTOP to the service (as ``systemctl kill -s STOP``) while a caller holds a screen (the server
    waits for Asterisk's reply) and another rings: both see the socket close within 3 s."""
    config, agi, _ = _config(tmp_path)
    sup = _run(config, stalling=False, watchdog_sec=1.5, abort_sec=0.5)  # the unit's, with its timer slack
    sup.start()
    try:
        sup.wait_ready()
        held, _ = _hold(agi, CLEAN_HEADER)
        assert held.recv(4096).startswith(b"SET VARIABLE")  # not answered: the screen is in flight
        frozen = time.monotonic()
        os.killpg(sup.pid, signal.SIGSTOP)
        ringing, _ = _hold(agi, CLEAN_HEADER)  # accepted by the kernel, never by callguard
        assert _seconds_to_close(held, frozen) < BOUND
        assert _seconds_to_close(ringing, frozen) < BOUND
        assert sup.watchdog_fired_at is not None and sup.killed_at is not None
        assert sup.wait_exit(5) == -signal.SIGKILL
    finally:
        sup.close()


async def test_supervisor_is_usable_from_asyncio(tmp_path: Path) -> None:
    config, _, _ = _config(tmp_path)
    sup = _run(config, stalling=False, watchdog_sec=0)
    sup.start()
    try:
        assert "READY" in (await asyncio.to_thread(sup.wait_ready)).fields
    finally:
        assert await asyncio.to_thread(sup.stop) == 0
