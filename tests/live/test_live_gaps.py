"""Live: gaps on a real Asterisk 22 with the shipped dialplan and ``callguard run`` (log sink) → one lead each.

- callguard's manager session kicked mid-call (``manager kick session <fd>``, the fd from ``manager show
  connected``: how it is done on 22.10.1; the test's own session is told apart by the fd it had first);
- kicked just before the call ends (3.7 s into the queue's 4 s), so it ends during the outage and its
  end's events never reach callguard (the reconnect takes ≥ 0.5 s);
- ``callguard run`` SIGKILLed as the queue gives up (QueueCallerAbandon: the hang-up follows within ms,
  callguard never sees it) and right after the caller's hang-up, then started again; the latter for every
  sink (log, webhook, the strict amoCRM and Bitrix24 fakes).
The logs are checked for which path made the lead, so a test that did not reach its gap says so.
Each time the call is a queue timeout; exactly one line for its Linkedid in the log sink's leads file
(``leads.jsonl`` beside the store: the sink's durable record, one line per lead even across a SIGKILL),
reason included.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.live.conftest import Service
from tests.live.lab import Ami, Lab, callguard_config
from tests.sinks_support import Sink, outbox_toml

pytestmark = pytest.mark.live


def _sessions(lab: Lab) -> list[str]:
    out = lab.rx("manager show connected")
    return re.findall(r"^\s*callguard\s+127\.0\.0\.1\s+\d+\s+\d+\s+(\d+)", out, re.M)


def _leads(leads_file: Path, lid: str) -> list[dict[str, object]]:
    if not leads_file.exists():
        return []
    lines = leads_file.read_text(errors="replace").splitlines()
    return [doc for doc in map(json.loads, lines) if doc.get("linkedid") == lid]


async def _until(check: Callable[[], bool], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 (another process's log file: no event to wait on)
            await asyncio.sleep(0.1)


async def _call(ami: Ami, tag: str) -> tuple[str, int]:
    """A clean call to the queue nobody answers (timeout 4 s); its Linkedid and frame index."""
    start = len(ami.frames)
    await ami.send({
        "Action": "Originate", "ActionID": tag, "Channel": "Local/5551000@from-trunk",
        "CallerID": '"T" <+15551230002>', "Application": "Wait", "Data": "2", "Timeout": "30000", "Async": "true",
        "Variable": f"LIVE_TAG={tag},__CG_AGENT=noanswer,CALLGUARD_QUEUE_TIMEOUT=4",
    })
    var = await ami.wait_for(lambda f: f.get("Variable") == "LIVE_TAG" and f.get("Value") == tag, start=start)
    return var["Linkedid"], start


async def _hangup(ami: Ami, lid: str, start: int) -> None:
    await ami.wait_for(lambda f: f.get("Event") == "Hangup" and f.get("Linkedid") == lid
                       and "from-trunk" in f.get("Channel", "") and f.get("Channel", "").endswith(";2"),
                       within=40, start=start)


async def _one_lead(leads_file: Path, lid: str) -> None:
    await _until(lambda: len(_leads(leads_file, lid)) >= 1)
    await asyncio.sleep(1.5)  # a second one would come within the outbox's poll: none may
    (lead,) = _leads(leads_file, lid)
    assert lead["reason"] == "timeout" and lead["caller"] == "+15551230002" and lead["did"] == "5551000"


async def _started(lab: Lab, svc: Service, before: list[str]) -> str:
    await _until(lambda: len(_sessions(lab)) > len(before))
    (fd,) = [fd for fd in _sessions(lab) if fd not in before]
    return fd


@pytest.mark.parametrize("when", ["mid_call", "at_the_end"])
async def test_kicked_manager_session_still_gives_one_lead(
    tmp_path: Path, lab: Lab, ami: Ami, service_factory: Callable[..., Service], when: str,
) -> None:
    mine = _sessions(lab)
    svc = service_factory(callguard_config(tmp_path, lab, ami=True))
    svc.wait_listening(lab.agi_port)
    fd = await _started(lab, svc, mine)
    lid, start = await _call(ami, f"kick-{when}")
    if when == "mid_call":
        await ami.wait_for(lambda f: f.get("Event") == "QueueCallerJoin" and f.get("Linkedid") == lid, start=start)
    else:
        await ami.wait_for(lambda f: f.get("Event") == "QueueCallerJoin" and f.get("Linkedid") == lid, start=start)
        await asyncio.sleep(3.7)  # the queue's timeout is 4 s: the call ends while callguard reconnects
    lab.rx(f"manager kick session {fd}")
    await _hangup(ami, lid, start)
    await _one_lead(tmp_path / "leads.jsonl", lid)
    text = svc.log.read_text()
    assert "ami_link_lost" in text and text.count('"ami_logged_in"') >= 2
    (lead,) = _leads(tmp_path / "leads.jsonl", lid)
    assert lead["reconciled"] is True  # its events were cut: Asterisk's record made it


@pytest.mark.parametrize("when", ["at_abandon", "after_hangup"])
async def test_sigkill_at_the_end_of_a_call_gives_one_lead(
    tmp_path: Path, lab: Lab, ami: Ami, service_factory: Callable[..., Service], when: str,
) -> None:
    mine = _sessions(lab)
    config = callguard_config(tmp_path, lab, ami=True)
    svc = service_factory(config)
    svc.wait_listening(lab.agi_port)
    await _started(lab, svc, mine)
    lid, start = await _call(ami, f"sigkill-{when}")
    if when == "at_abandon":
        await ami.wait_for(lambda f: f.get("Event") == "QueueCallerAbandon" and f.get("Linkedid") == lid,
                           within=20, start=start)
    else:
        await _hangup(ami, lid, start)
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait(5)
    await _hangup(ami, lid, start)
    again = service_factory(config)
    again.wait_listening(lab.agi_port)
    await _one_lead(tmp_path / "leads.jsonl", lid)
    if when == "at_abandon":
        assert _leads(tmp_path / "leads.jsonl", lid)[0]["reconciled"] is True


@pytest.mark.parametrize("sink", ["webhook", "amocrm", "bitrix24"])
async def test_sigkill_after_the_hangup_gives_one_lead_that_says_why_in_every_sink(
    tmp_path: Path, lab: Lab, ami: Ami, service_factory: Callable[..., Service], sink: str,
) -> None:
    far = Sink(sink, tmp_path)
    base = await far.start()
    try:
        mine = _sessions(lab)
        config = callguard_config(tmp_path, lab, ami=True, extra=outbox_toml(sink, base, tmp_path / "leads.jsonl"))
        svc = service_factory(config)
        svc.wait_listening(lab.agi_port)
        await _started(lab, svc, mine)
        lid, start = await _call(ami, f"sink-{sink}")
        await _hangup(ami, lid, start)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait(5)
        again = service_factory(config)
        again.wait_listening(lab.agi_port)
        await _until(lambda: far.delivered()[lid] >= 1)
        await asyncio.sleep(1.5)  # a second one would come within the outbox's poll: none may
        assert far.delivered()[lid] == 1 and far.errors() == []
        words = far.words_of(lid)
        assert "(timeout)" in words and "+15551230002" in words, words
    finally:
        await far.stop()
