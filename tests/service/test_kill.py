"""SIGKILL ``callguard run`` at random points between a missed call's last hang-up and its delivery, many
times, for the log and webhook sinks → every lead reaches the sink, and none twice under its key.

Each round a fresh missed call (s04's recorded events, channel ids made unique) reaches callguard over a
fake Asterisk, which also holds the call's AstDB record (the recorded s04 entry, keyed by the round's
Linkedid, its times moved to now: a record is written at the hang-up). callguard is killed 0–40 ms (often 0–4 ms) after
the fake sent the last hang-up: before the tracker's write, between the write and the delivery, mid-
delivery. The next start's reconcile (and the outbox's recovery) must make up for it.

Exactly once: the webhook receiver keys on ``Idempotency-Key`` (the Linkedid), as sinks.py documents; a
kill between the receiver's 2xx and the outbox's commit resends the same key, which the count by key
absorbs. The log sink cannot be searched, so the same holds for it by Linkedid.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from callguard.calls.records import bucket_of
from tests.fakes.asterisk_ami import (
    FakeAsterisk,
    Script,
    frames,
    fresh_logging,  # noqa: F401 (autouse)
    recorded_astdb,
    relabel,
)
from tests.loopback.test_resync import LIDS

KILLS = int(os.environ.get("CALLGUARD_TEST_KILLS", "12"))
SCENARIO = "s04_caller_abandon"
RECORD = next(v for k, v in recorded_astdb().items() if k.endswith("/" + LIDS[SCENARIO]))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _round(tag: str) -> tuple[str, bytes, dict[str, str]]:
    frs = relabel(frames(SCENARIO), tag)
    body = b"".join(("".join(f"{k}: {v}\r\n" for k, v in f.items()) + "\r\n").encode()
                    for f in frs if f.get("Event") not in (None, "FullyBooted"))
    lid = next(f["Linkedid"] for f in frs if f.get("Linkedid"))
    fields = RECORD.split("|")
    shift = time.time() - float(fields[3])
    for i in (2, 3):
        fields[i] = f"{float(fields[i]) + shift:.3f}"
    return lid, body, {f"/callguard/calls/{bucket_of(float(fields[3]))}/{lid}": "|".join(fields)}


def _config(tmp: Path, ami_port: int, sink: str, hook: str) -> Path:
    path = tmp / "callguard.toml"
    path.write_text(
        f'[store]\npath = "{tmp / "cg.sqlite3"}"\n[agi]\nport = {_free_port()}\n[web]\nenabled = false\n'
        f'[ami]\nenabled = true\nport = {ami_port}\nsecret = "secret"\nreconnect_min = "100ms"\n'
        f'[log]\nformat = "json"\n[outbox]\nsink = "{sink}"\npoll_interval = "50ms"\nbackoff_base = "100ms"\n'
        f'[outbox.webhook]\nurl = "{hook}"\n'
    )
    return path


async def _start(config: Path, out: Path) -> asyncio.subprocess.Process:
    with out.open("ab") as f:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callguard", "--config", str(config), "run", stdout=f, stderr=f,
        )


async def _until(check: object, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # polling another process's effects: no event crosses the boundary


@pytest.mark.parametrize("sink", ["log", "webhook"])
async def test_sigkill_between_hangup_and_delivery_loses_and_doubles_nothing(tmp_path: Path, sink: str) -> None:
    keys: Counter[str] = Counter()

    async def hook(request: web.Request) -> web.Response:
        keys[request.headers["Idempotency-Key"]] += 1
        return web.json_response({"id": len(keys)})

    app = web.Application()
    app.router.add_post("/lead", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake = await FakeAsterisk([Script()], astdb={}).start()
    config = _config(tmp_path, fake.port, sink, f"http://127.0.0.1:{hook_port}/lead")
    out = tmp_path / "callguard.log"
    rng = random.Random(os.environ.get("CALLGUARD_TEST_SEED", "15"))
    expected: list[str] = []
    try:
        for i in range(KILLS):
            lid, body, record = _round(f"-k{i}")
            expected.append(lid)
            fake.astdb.update(record)  # the hang-up handler ran: the record is there before the Hangup event
            fake.scripts = [Script(body)]
            fake.sent.clear()
            proc = await _start(config, out)
            async with asyncio.timeout(20):
                await fake.sent.wait()
            # the random kill point: the lead is out a few ms after the last hang-up is sent
            await asyncio.sleep(rng.choice([0.0, rng.uniform(0.0, 0.004), rng.uniform(0.0, 0.04)]))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        fake.scripts = [Script(b"")]
        proc = await _start(config, out)
        try:
            await _until(lambda: set(_delivered(out, sink, keys)) >= set(expected), within=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    finally:
        await fake.stop()
        await runner.cleanup()
    got = _delivered(out, sink, keys)
    assert sorted(got) == sorted(expected), (sink, got)  # each lead, by its key, exactly once
    assert all(n >= 1 for n in got.values())


def _delivered(out: Path, sink: str, keys: Counter[str]) -> dict[str, int]:
    if sink == "webhook":
        return dict(keys)
    seen: Counter[str] = Counter()
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"missed_call"' in line:
            event = json.loads(line)
            if event.get("event") == "missed_call":
                seen[event["linkedid"]] += 1
    return dict(seen)
