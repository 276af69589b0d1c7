"""Live: a hung callguard never holds a caller more than 3 s.

Asterisk 22.10.1 has no read timeout on a FastAGI socket: a callguard that accepted a call and then hung
held the caller in ringing for as long as it hung (20 s, 45 s). Here the real Asterisk and the shipped
dialplan place the call; callguard's loop is blocked mid-screen (tests/support/stalling.py), or the
whole service is frozen with SIGSTOP under a supervisor that acts on WatchdogSec as systemd does
(tests/support/supervisor.py, the unit's timings). The time measured is the caller's: from its
``AGI()`` starting to its ``QueueCallerJoin``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import IO

import pytest

from callguard.errors import EXIT_STALLED
from tests.live.lab import Ami, Lab, callguard_config, inbound_channel_of
from tests.support.supervisor import Supervisor

pytestmark = pytest.mark.live

BOUND = 3.0
STALL_CALLER = "+79165550777"


async def _time_to_queue(ami: Ami, caller: str, tag: str) -> float:
    """Seconds from the caller's AGI() to its QueueCallerJoin (AMI arrival times)."""
    start = len(ami.frames)
    await ami.originate("5551000", caller, wait_s=8, tag=tag)
    chan = (await ami.wait_for(inbound_channel_of(ami, tag), start=start))["Channel"]
    agi = await ami.wait_for(lambda f: f.get("Event") == "Newexten" and f.get("Channel") == chan
                             and f.get("Application") == "AGI", start=start)
    joined = await ami.wait_for(lambda f: f.get("Event") == "QueueCallerJoin" and f.get("Channel") == chan,
                                start=start, within=20)
    return ami.arrival_of(joined) - ami.arrival_of(agi)


def _supervised(config: Path, out: IO[bytes], *, stalling: bool) -> Supervisor:
    module = "tests.support.stalling" if stalling else "callguard"
    env = {**os.environ, "CALLGUARD_TEST_STALL_CALLER": STALL_CALLER, "CALLGUARD_TEST_STALL_S": "30",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return Supervisor([sys.executable, "-m", module, "--config", str(config), "run"], env,
                      watchdog_sec=1.5, abort_sec=0.5, stdout=out, stderr=out)


async def test_a_loop_blocked_mid_screen_lets_the_caller_reach_the_queue(tmp_path: Path, lab: Lab, ami: Ami) -> None:
    config = callguard_config(tmp_path, lab)
    with (tmp_path / "callguard.log").open("wb") as out:
        sup = _supervised(config, out, stalling=True)
        sup.start()
        try:
            await asyncio.to_thread(sup.wait_ready)
            assert await _time_to_queue(ami, "+79165550001", "before") < 1.0  # a normal screen first
            waited = await _time_to_queue(ami, STALL_CALLER, "stalled")
            print(f"live: loop blocked mid-screen: AGI() to the queue {waited:.3f} s")
            assert waited < BOUND, f"the caller waited {waited:.2f} s on a blocked callguard"
            # The sockets are shut before the line is written: wait for the exit that follows the line.
            assert await asyncio.to_thread(sup.wait_exit, 10) == EXIT_STALLED
        finally:
            sup.close()
    log = (tmp_path / "callguard.log").read_text()
    assert "loop_stalled" in log


async def test_a_frozen_service_is_killed_and_the_caller_reaches_the_queue(
    tmp_path: Path, lab: Lab, ami: Ami,
) -> None:
    config = callguard_config(tmp_path, lab)
    with (tmp_path / "callguard.log").open("wb") as out:
        sup = _supervised(config, out, stalling=False)
        sup.start()
        try:
            await asyncio.to_thread(sup.wait_ready)
            assert await _time_to_queue(ami, "+79165550002", "before") < 1.0
            os.killpg(sup.pid, signal.SIGSTOP)  # as `systemctl kill -s STOP callguard`: every process
            waited = await _time_to_queue(ami, "+79165550003", "frozen")
            print(f"live: service frozen (SIGSTOP), fake systemd WatchdogSec=1.5s: AGI() to the queue {waited:.3f} s")
            assert waited < BOUND, f"the caller waited {waited:.2f} s on a frozen callguard"
            assert sup.watchdog_fired_at is not None
        finally:
            sup.close()
