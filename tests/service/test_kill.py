"""SIGKILL ``callguard run`` at random points between a missed call's last hang-up and its delivery, many
times, for every sink (log, webhook, amoCRM, Bitrix24) → every lead reaches its sink exactly once.

Each round a fresh missed call (s04's recorded events, channel ids made unique, the caller's number
replaced so rounds 2k and 2k+1 share one caller: a new lead, then a repeat miss onto it) reaches callguard
over a fake Asterisk, which also holds the call's AstDB record (the recorded s04 entry, keyed by the
round's Linkedid, its times moved to now and its caller field re-encoded: a record is written at the
hang-up). callguard is killed at once, 0–4 ms, 0–40 ms (0–150 ms for the CRMs, whose create replies
the fake holds back 50 ms) after the fake sent the last hang-up, or the moment the sink has the lead
(polled every ms; the webhook receiver answers 20 ms after it counted the POST). After each kill the store and the sink
say which window it landed in: before the tracker's record, recorded but not claimed, claimed
(``sending``) but not in the sink, in the sink but not committed (the case exactly-once is about), or
after. The next start's reconcile and the outbox's recovery must make up for it.

Exactly once, by the sink's own key: the log sink's leads file (one line per Linkedid, found again after
a crash); the webhook receiver's ``Idempotency-Key`` (a kill between its 2xx and the commit resends the
same key: counted as raw repeats, absorbed by the key); the CRM fakes' markers (amoCRM Unsorted
``metadata.uniq`` and note ``params.uniq``; Bitrix24 ``ORIGIN_ID`` and the ``[callguard:<linkedid>]``
comment marker) — a CRM has no idempotency key, so a second create there would be a real duplicate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

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
from tests.sinks_support import SINKS, Sink, outbox_toml

KILLS = int(os.environ.get("CALLGUARD_TEST_KILLS", "12"))
SCENARIO = "s04_caller_abandon"
RECORD = next(v for k, v in recorded_astdb().items() if k.endswith("/" + LIDS[SCENARIO]))
CALLER = "+15551230003"  # the recorded caller (s04)
WINDOWS = ("before_record", "recorded", "claimed", "in_sink_uncommitted", "after")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _round(tag: str, caller: str) -> tuple[str, bytes, dict[str, str]]:
    frs = [{k: v.replace(CALLER, caller) for k, v in f.items()} for f in relabel(frames(SCENARIO), tag)]
    body = b"".join(("".join(f"{k}: {v}\r\n" for k, v in f.items()) + "\r\n").encode()
                    for f in frs if f.get("Event") not in (None, "FullyBooted"))
    lid = next(f["Linkedid"] for f in frs if f.get("Linkedid"))
    fields = RECORD.split("|")
    assert base64.b64decode(fields[12]).decode() == CALLER
    fields[12] = base64.b64encode(caller.encode()).decode()
    shift = time.time() - float(fields[3])
    for i in (2, 3):
        fields[i] = f"{float(fields[i]) + shift:.3f}"
    return lid, body, {f"/callguard/calls/{bucket_of(float(fields[3]))}/{lid}": "|".join(fields)}


def _config(tmp: Path, ami_port: int, sink: str, base: str) -> Path:
    path = tmp / "callguard.toml"
    path.write_text(
        f'[store]\npath = "{tmp / "cg.sqlite3"}"\n[agi]\nport = {_free_port()}\n[web]\nenabled = false\n'
        f'[ami]\nenabled = true\nport = {ami_port}\nsecret = "secret"\nreconnect_min = "100ms"\n'
        f'[log]\nformat = "json"\n' + outbox_toml(sink, base, tmp / "leads.jsonl")
    )
    return path


async def _start(config: Path, out: Path) -> asyncio.subprocess.Process:
    with out.open("ab") as f:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callguard", "--config", str(config), "run", stdout=f, stderr=f,
        )


async def _until(check: Callable[[], bool], within: float = 20.0, step: float = 0.02) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(step)  # polling another process's effects: no event crosses the boundary


async def _kill_point(rng: random.Random, spread: float, arrived: Callable[[], bool]) -> str:
    """Wait for a random kill point after the last hang-up; which kind it was."""
    kind = rng.choice(["at_once", "0-4ms", "spread", "on_arrival"])
    if kind == "on_arrival":  # the moment the sink has the lead: the kill lands before the commit
        with contextlib.suppress(TimeoutError):
            await _until(arrived, within=5, step=0.001)
    else:
        await asyncio.sleep({"at_once": 0.0, "0-4ms": rng.uniform(0.0, 0.004)}.get(kind, rng.uniform(0.0, spread)))
    return kind


def _outbox_states(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=5)
    try:
        return dict(conn.execute("SELECT linkedid, state FROM outbox").fetchall())
    except sqlite3.OperationalError:  # killed before the schema was made
        return {}
    finally:
        conn.close()


def _window(state: str | None, in_sink: bool) -> str:
    if state == "sent":
        return "after"
    if in_sink:
        return "in_sink_uncommitted"
    return {None: "before_record", "sending": "claimed"}.get(state, "recorded")


@pytest.mark.parametrize("sink", SINKS)
async def test_sigkill_between_hangup_and_delivery_loses_and_doubles_nothing(tmp_path: Path, sink: str) -> None:
    far = Sink(sink, tmp_path)
    base = await far.start()
    fake = await FakeAsterisk([Script()], astdb={}).start()
    config = _config(tmp_path, fake.port, sink, base)
    out, db = tmp_path / "callguard.log", tmp_path / "cg.sqlite3"
    rng = random.Random(os.environ.get("CALLGUARD_TEST_SEED", "15") + sink)
    spread = 0.15 if sink in ("amocrm", "bitrix24") else 0.04  # a CRM delivery takes longer
    expected: list[str] = []
    windows: Counter[str] = Counter()
    points: Counter[str] = Counter()
    try:
        for i in range(KILLS):
            lid, body, record = _round(f"-k{i}", f"+1555124{i // 2:04d}")
            expected.append(lid)
            fake.astdb.update(record)  # the hang-up handler ran: the record is there before the Hangup event
            fake.scripts = [Script(body)]
            fake.sent.clear()
            proc = await _start(config, out)
            async with asyncio.timeout(20):
                await fake.sent.wait()
            # the random kill point: the lead is out a few ms (a CRM's: tens of ms) after the last hang-up
            points[await _kill_point(rng, spread, lambda lid=lid: far.delivered()[lid] > 0)] += 1
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            windows[_window(_outbox_states(db).get(lid), far.delivered()[lid] > 0)] += 1
        fake.scripts = [Script(b"")]
        proc = await _start(config, out)
        try:
            def settled() -> bool:  # everything in the sink AND committed: nothing left that could resend
                states = _outbox_states(db)
                return set(far.delivered()) >= set(expected) and all(states.get(x) == "sent" for x in expected)

            await _until(settled, within=40)
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    finally:
        await fake.stop()
        await far.stop()
    got = far.delivered()
    repeats = sum(far.keys.values()) - len(far.keys)
    leads, notes = far.leads_and_notes()
    print(f"\nkill[{sink}] rounds={KILLS} points={dict(points)} windows={dict((w, windows[w]) for w in WINDOWS)} "
          f"raw_repeat_posts={repeats} crm_leads={leads} crm_notes={notes}")
    assert sorted(got) == sorted(expected), (sink, got)  # none lost, none extra
    assert [lid for lid, n in got.items() if n != 1] == [], (sink, got)  # none twice
    assert far.errors() == []
    assert sum(windows.values()) == KILLS
