"""`callguard run` as a real process: serves screens, exits 0 on SIGTERM, 78 on a bad config."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

from callguard.errors import EXIT_CONFIG
from tests.fakes.asterisk_agi import load, session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callguard", "--config", str(config), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def _wait_for_event(proc: asyncio.subprocess.Process, name: str) -> list[dict[str, object]]:
    assert proc.stdout is not None
    seen = []
    async with asyncio.timeout(20):
        while True:
            line = await proc.stdout.readline()
            assert line, f"process ended before {name}"
            event = json.loads(line)
            seen.append(event)
            if event["event"] == name:
                return seen


async def test_run_screens_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\npath = "cg.sqlite3"\n[agi]\nport = {port}\n[web]\nenabled = false\n[log]\nformat = "json"\n'
    )
    proc = await _start(config)
    try:
        started = await _wait_for_event(proc, "service_ready")
        listening = [e for e in started if e["event"] == "agi_listening"]
        assert len(listening) == 1 and "pids" not in listening[0]  # one process screens: no workers
        assert await session(port, load("s02_clean_answered").header) == ["SET VARIABLE CALLGUARD_VERDICT clean"]
        screened = await _wait_for_event(proc, "call_screened")
        assert screened[-1]["caller"] == "+15551230001" and screened[-1]["did"] == "5551000"
        proc.send_signal(signal.SIGTERM)
        events = await _wait_for_event(proc, "service_stopped")
        assert {"service_stopping", "part_stopped"} <= {str(e["event"]) for e in events}
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (tmp_path / "cg.sqlite3").exists()


async def test_bad_config_exits_78_without_starting(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[agi]\nport = 'four'\n")
    proc = await _start(config)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == EXIT_CONFIG
    assert b"agi.port" in err and out == b""
