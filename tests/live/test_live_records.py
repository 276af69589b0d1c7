"""Live: the shipped dialplan's call record (AstDB, read back with DBGetTree) for every way a call ends.

One call per scenario through the real Asterisk 22 and the shipped ``callguard-*`` contexts, screened by a
tiny FastAGI here (verdict by caller number); then ``DBGetTree callguard/calls`` and the pure parser and
reconciler must say what the tracker says for the recorded trace of the same scenario.

``CALLGUARD_RECORD_ASTDB=<dir>`` also writes the exact DBGetTree reply bytes and the scenario → Linkedid map
there (how tests/fixtures/astdb/ was made).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import pytest

from callguard.ami.wire import Frame
from callguard.calls.reconcile import plan
from callguard.calls.records import parse_tree
from tests.live.conftest import _binary
from tests.live.lab import Ami, Lab, free_port

pytestmark = pytest.mark.live

# scenario → (DID, caller, originate variables, caller timeout ms, caller stays after answer s)
CALLS: dict[str, tuple[str, str, dict[str, str], int, int]] = {
    "s01_spam_blocked": ("5551000", "+15550000666", {}, 30000, 2),
    "s02_clean_answered": ("5551000", "+15551230001", {}, 30000, 2),
    "s03_queue_timeout": ("5551000", "+15551230002", {"__CG_AGENT": "noanswer", "CALLGUARD_QUEUE_TIMEOUT": "4"},
                          30000, 2),
    "s04_caller_abandon": ("5551000", "+15551230003", {"__CG_AGENT": "noanswer"}, 4000, 2),
    "s06_agi_down_failopen": ("5551000", "+15551230005", {}, 30000, 2),
    "s10_short_hangup_before_queue": ("5551000", "+15551239999", {}, 2000, 2),
    "s13_ringgroup_noanswer": ("5552000", "+15551230022", {
        "__CG_AGENT": "noanswer", "CALLGUARD_DIAL": "Local/101@agents&Local/102@agents",
        "CALLGUARD_DIAL_TIMEOUT": "4"}, 30000, 2),
    "s14_direct_busy": ("5553000", "+15551230023", {
        "__CG_AGENT": "busy", "CALLGUARD_DIAL": "Local/103@agents"},
        30000, 2),
    "x_dial_answered": ("5552000", "+15551230024", {
        "CALLGUARD_DIAL": "Local/101@agents"}, 30000, 2),
    "x_after_hours": ("5551000", "+15551230025", {}, 30000, 2),
    "x_hostile_caller_id": ("5551000", 'a)b}c|d${EXTEN}$[1+1],e', {}, 30000, 2),
}
VERDICTS = {"+15550000666": "spam", "+15551230025": "closed", "+15551230005": ""}
SLOW = {"+15551239999"}
EXPECTED = {
    "s01_spam_blocked": ("spam", "screened"), "s02_clean_answered": ("answered", "queue"),
    "s03_queue_timeout": ("missed", "timeout"), "s04_caller_abandon": ("missed", "abandoned"),
    "s05_queue_no_members": ("missed", "no_agents"), "s06_agi_down_failopen": ("answered", "queue"),
    "s10_short_hangup_before_queue": ("missed", "hangup_before_queue"),
    "s13_ringgroup_noanswer": ("missed", "no_answer"),
    "s14_direct_busy": ("missed", "busy"), "x_dial_answered": ("answered", "dial"),
    "x_after_hours": ("missed", "after_hours"), "x_hostile_caller_id": ("answered", "queue"),
}


async def _agi(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    env: dict[str, str] = {}
    with contextlib.suppress(Exception):
        while (line := (await reader.readline()).decode(errors="replace").rstrip("\n")):
            key, _, value = line.partition(": ")
            env[key] = value
        caller = env.get("agi_callerid", "")
        if caller in SLOW:
            await asyncio.sleep(5)
        verdict = VERDICTS.get(caller, "clean")
        if verdict:
            writer.write(f"SET VARIABLE CALLGUARD_VERDICT {verdict}\n".encode())
            await writer.drain()
            await reader.readline()
    writer.close()


async def _call(ami: Ami, name: str) -> str:
    did, caller, variables, timeout, stay = CALLS[name]
    tag = f"rec-{name}"
    start = len(ami.frames)
    await ami.send({
        "Action": "Originate", "ActionID": tag, "Channel": f"Local/{did}@from-trunk", "CallerID": f'"T" <{caller}>',
        "Application": "Wait", "Data": str(stay), "Timeout": str(timeout), "Async": "true",
        "Variable": ",".join([f"LIVE_TAG={tag}", *(f"{k}={v}" for k, v in variables.items())]),
    })
    var = await ami.wait_for(lambda f: f.get("Variable") == "LIVE_TAG" and f.get("Value") == tag, start=start)
    lid = var["Linkedid"]
    await ami.wait_for(lambda f: f.get("Event") == "Hangup" and f.get("Linkedid") == lid
                       and f.get("Channel", "").endswith(";2") and "from-trunk" in f.get("Channel", ""),
                       within=40, start=start)
    return lid


async def _no_members(ami: Ami) -> str:
    await ami.send({"Action": "QueuePause", "Queue": "sales", "Interface": "Local/101@agents", "Paused": "true"})
    await asyncio.sleep(0.5)
    CALLS["s05_queue_no_members"] = ("5551000", "+15551230004", {}, 30000, 2)
    try:
        return await _call(ami, "s05_queue_no_members")
    finally:
        await ami.send({"Action": "QueuePause", "Queue": "sales", "Interface": "Local/101@agents", "Paused": "false"})


async def _db_tree(ami: Ami) -> tuple[list[Frame], bytes]:
    start = len(ami.frames)
    await ami.send({"Action": "DBGetTree", "Family": "callguard/calls", "ActionID": "tree"})
    await ami.wait_for(lambda f: f.get("Event") == "DBGetTreeComplete", start=start)
    got = [f for f in ami.frames[start:] if f.get("ActionID") == "tree"]
    raw = b"".join("".join(f"{k}: {v}\r\n" for k, v in f.items()).encode() + b"\r\n" for f in got)
    return got, raw


def _save(out: Path, raw: bytes, lids: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "calls.dbgettree.ami.txt").write_bytes(raw)
    (out / "scenarios.json").write_text(json.dumps(lids, indent=1, sort_keys=True) + "\n")


async def test_every_ending_leaves_one_record_that_says_what_the_tracker_says(tmp_path: Path) -> None:
    binary = _binary()  # skips without an Asterisk, before anything is opened
    server = await asyncio.start_server(_agi, "127.0.0.1", 0)
    agi_port = server.sockets[0].getsockname()[1]
    lab = Lab(binary, tmp_path / "asterisk", agi_port=agi_port, ami_port=free_port())
    ami = Ami()
    try:
        lab.start()
        await ami.connect(lab.ami_port)
        names = [n for n in CALLS if n != "s06_agi_down_failopen"]
        lids = dict(zip(names, await asyncio.gather(*(_call(ami, n) for n in names)), strict=True))
        server.close()
        await server.wait_closed()
        lids["s06_agi_down_failopen"] = await _call(ami, "s06_agi_down_failopen")  # connection refused
        lids["s05_queue_no_members"] = await _no_members(ami)
        await asyncio.sleep(0.5)
        frames, raw = await _db_tree(ami)
    finally:
        await ami.close()
        lab.stop()
        server.close()
        await server.wait_closed()
    if out := os.environ.get("CALLGUARD_RECORD_ASTDB"):
        _save(Path(out), raw, lids)
    records, rejected = parse_tree(frames)
    assert rejected == []
    by_lid = {r.linkedid: r for r in records}
    assert len(by_lid) == len(records) == len(lids)  # one record per call, none for the members' legs
    result = plan(records, settled=set(), open_=set())
    got = {d.outcome.linkedid: (d.outcome.outcome.value, d.outcome.reason) for d in result.decisions}
    assert {name: got[lid] for name, lid in lids.items()} == EXPECTED
    hostile = by_lid[lids["x_hostile_caller_id"]]
    assert "|d${EXTEN}$[1+1]" in hostile.caller_raw  # stored as data: not expanded, not split
