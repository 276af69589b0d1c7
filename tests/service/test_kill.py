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
import json
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
from aiohttp import web

from callguard.calls.records import bucket_of
from tests.fakes.amocrm import FakeAmo
from tests.fakes.asterisk_ami import (
    FakeAsterisk,
    Script,
    frames,
    fresh_logging,  # noqa: F401 (autouse)
    recorded_astdb,
    relabel,
)
from tests.fakes.bitrix24 import FakeBitrix
from tests.loopback.test_resync import LIDS

KILLS = int(os.environ.get("CALLGUARD_TEST_KILLS", "12"))
SCENARIO = "s04_caller_abandon"
RECORD = next(v for k, v in recorded_astdb().items() if k.endswith("/" + LIDS[SCENARIO]))
CALLER = "+15551230003"  # the recorded caller (s04)
CRM_DELAY = 0.05  # the CRM fakes answer a create this long after making it
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


def _crm_toml(sink: str, base: str) -> str:
    common = '[crm]\nretry_base = "10ms"\ntimeout = "2s"\nmax_retries = 6\n'
    if sink == "amocrm":
        return (common + f'kind = "amocrm"\n[crm.amocrm]\nbase_url = "{base}"\ntoken = "amo-token"\n'
                'spam_field = "Спам"\nrate_rps = 50.0\nwebhook_secret = "hook-secret"\naccount_id = 28805383\n')
    return (common + f'kind = "bitrix24"\n[crm.bitrix24]\nwebhook_url = "{base}/rest/1/b24-secret/"\n'
            'spam_field = "UF_CRM_SPAM"\nrate_rps = 100.0\nrate_burst = 20\napplication_token = "app-token"\n'
            'register_call = true\n')


def _config(tmp: Path, ami_port: int, sink: str, base: str) -> Path:
    path = tmp / "callguard.toml"
    kind = sink if sink in ("log", "webhook") else "crm"
    path.write_text(
        f'[store]\npath = "{tmp / "cg.sqlite3"}"\n[agi]\nport = {_free_port()}\n[web]\nenabled = false\n'
        f'[ami]\nenabled = true\nport = {ami_port}\nsecret = "secret"\nreconnect_min = "100ms"\n'
        f'[log]\nformat = "json"\n[outbox]\nsink = "{kind}"\npoll_interval = "50ms"\nbackoff_base = "100ms"\n'
        f'log_file = "{tmp / "leads.jsonl"}"\n[outbox.webhook]\nurl = "{base}/lead"\n'
        + (_crm_toml(sink, base) if kind == "crm" else "")
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


class Sink:
    """The far end of one sink kind, and its count of deliveries per Linkedid (by the sink's own key)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.leads_file = tmp / "leads.jsonl"
        self.keys: Counter[str] = Counter()  # webhook: POSTs per Idempotency-Key
        self.amo = FakeAmo(rps=50) if kind == "amocrm" else None
        self.b24 = FakeBitrix(rate=20.0, burst=50) if kind == "bitrix24" else None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        if self.amo is not None:
            self.amo.slow_reply("POST /api/v4/leads", CRM_DELAY)  # unsorted/sip and notes
            return await self.amo.start()
        if self.b24 is not None:
            self.b24.slow_reply("crm.lead.add", CRM_DELAY)
            self.b24.slow_reply("crm.timeline.comment.add", CRM_DELAY)
            return await self.b24.start()
        app = web.Application()
        app.router.add_post("/lead", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def _hook(self, request: web.Request) -> web.Response:
        self.keys[request.headers["Idempotency-Key"]] += 1
        await asyncio.sleep(0.02)  # the receiver has it; the sender learns a little later
        return web.json_response({"id": f"hook-{request.headers['Idempotency-Key']}"})

    async def stop(self) -> None:
        for fake in (self.amo, self.b24):
            if fake is not None:
                await fake.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def delivered(self) -> Counter[str]:
        """Linkedid → how many leads/notes/lines/distinct keys the sink holds for it."""
        seen: Counter[str] = Counter()
        if self.kind == "log" and self.leads_file.exists():
            for line in self.leads_file.read_text(errors="replace").splitlines():
                seen[json.loads(line)["linkedid"]] += 1  # every line must be valid JSON: no torn lines
        elif self.kind == "webhook":
            seen.update(self.keys.keys())  # distinct keys; raw repeats are in self.keys
        elif self.amo is not None:
            seen.update(u["metadata"].get("uniq") for u in self.amo.unsorted)
            seen.update(lid for lead in self.amo.leads.values() for t in lead["tags"]
                        if (lid := t.removeprefix("callguard:")) != t)
            seen.update(n["params"].get("uniq") for n in self.amo.notes)
        elif self.b24 is not None:
            seen.update(lead.get("ORIGIN_ID") for lead in self.b24.leads.values())
            seen.update(c["COMMENT"].rsplit("[callguard:", 1)[1].rstrip("]") for c in self.b24.comments
                        if "[callguard:" in c["COMMENT"])
        seen.pop(None, None)  # type: ignore[call-overload]
        return seen

    def leads_and_notes(self) -> tuple[int, int]:
        if self.amo is not None:
            return len(self.amo.unsorted), len(self.amo.notes)
        if self.b24 is not None:
            return len(self.b24.leads), len(self.b24.comments)
        return 0, 0

    def errors(self) -> list[str]:
        return [*(self.amo.errors if self.amo else []), *(self.b24.errors if self.b24 else [])]


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


@pytest.mark.parametrize("sink", ["log", "webhook", "amocrm", "bitrix24"])
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
