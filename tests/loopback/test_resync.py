"""The AMI link cut at every event boundary of every recorded missed-call scenario, callguard reconnecting,
Asterisk's record (AstDB, recorded live) supplying the rest → exactly the expected lead, reason included.

Over real loopback sockets: ``FakeAsterisk`` plays the trace up to the cut and drops the link; on the next
connection it answers ``CoreShowChannels`` (the call ended meanwhile: no channels) and ``DBGetTree`` with
the recorded entry of the same call shape. The recorded entries come from a separate run of the shipped
dialplan (tests/fixtures/astdb), so the entry's key is re-labelled with the trace's Linkedid: the one
field a reconcile dedupes on, which must be the call's own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from callguard.ami.client import AmiClient
from callguard.ami.wire import EOM
from callguard.calls.recorder import MARK, CallFlow
from callguard.calls.records import bucket_of
from callguard.calls.tracker import CallTracker
from callguard.config import Config
from callguard.store import Store
from tests.fakes.asterisk_ami import (
    ASTDB,
    EXPECTED,
    FakeAsterisk,
    Script,
    events_after_login,
    frames,
    fresh_logging,  # noqa: F401 (autouse)
    loopback_cfg,
    recorded_astdb,
    recorded_channels,
)

LIDS = json.loads((ASTDB / "scenarios.json").read_text())
SHAPE = {name: name for name in ("s02_clean_answered", "s03_queue_timeout", "s04_caller_abandon",
                                  "s05_queue_no_members", "s10_short_hangup_before_queue", "s13_ringgroup_noanswer",
                                  "s14_direct_busy")}
SHAPE["s16_queue_timeout_userevent"] = "s03_queue_timeout"
SHAPE["s21_missed_then_callback"] = "s04_caller_abandon"  # its inbound call: ABANDON after 6 s in the queue
# s21 (a missed call, then its call-back under another Linkedid) is not in the fakes' EXPECTED
CUT_EXPECTED = EXPECTED | {"s21_missed_then_callback": ("missed", "abandoned")}
ENTRIES = {LIDS[name]: (key, val) for key, val in recorded_astdb().items() for name in LIDS if key.endswith(LIDS[name])}


def trace_linkedid(cfg: Config, name: str) -> str:
    tracker = CallTracker(cfg)
    (o,) = [o for f in frames(name) for o in tracker.feed(f, 1000.0)]
    return o.linkedid


def record_for(name: str, lid: str) -> tuple[dict[str, str], float]:
    """The recorded entry of ``name``'s call shape, keyed by ``lid``; and a clock just after it ended."""
    key, val = ENTRIES[LIDS[SHAPE[name]]]
    bucket = key.split("/")[3]
    ended = float(val.split("|")[3])
    return {f"/callguard/calls/{bucket}/{lid}": val}, ended + 30.0


def cuts(body: bytes) -> list[int]:
    out, at = [0], 0
    while (at := body.find(EOM, at)) != -1:
        at += len(EOM)
        out.append(at)
    return out


async def run_cut(cfg: Config, body: bytes, cut: int, astdb: dict[str, str], now: float, lid: str,
                  channels: list[dict[str, str]] | None = None) -> tuple[list[dict[str, object]], Store]:
    fake = await FakeAsterisk([Script(body[:cut], drop=True, astdb=False), Script(b"")], astdb=astdb,
                              channels=channels or []).start()
    store = await Store.open(":memory:")
    flow = CallFlow(CallTracker(cfg), store, clock=lambda: now)
    client = AmiClient(loopback_cfg(cfg, fake.port).ami, flow.on_event, flow.on_link_lost, flow.resync)
    await flow.start()
    await client.start()
    try:
        async with asyncio.timeout(10):
            while await store.calls.get(lid) is None:
                flow.recorded.clear()
                await flow.recorded.wait()
    finally:
        await client.stop()
        await flow.stop()
        await fake.stop()
    leads = [item.payload for item in await store.outbox.in_state("pending")]
    return leads, store


@pytest.mark.parametrize("name", sorted(SHAPE))
async def test_cut_at_every_event_boundary_gives_exactly_the_expected_lead(cfg: Config, name: str) -> None:
    lid = trace_linkedid(cfg, name)
    astdb, now = record_for(name, lid)
    body = events_after_login(name)
    outcome, reason = CUT_EXPECTED[name]
    points = cuts(body)
    reconciled = 0
    for batch in range(0, len(points), 24):
        results = await asyncio.gather(*(run_cut(cfg, body, c, astdb, now, lid) for c in points[batch:batch + 24]))
        rows = []
        for _, store in results:
            rows.append(await store.calls.get(lid))
            await store.close()
        for cut, (leads, _), row in zip(points[batch:batch + 24], results, rows, strict=True):
            assert row is not None and (row.outcome, row.reason) == (outcome, reason), (cut, row)
            if outcome != "missed":
                assert leads == [], cut  # a call a person answered is never a lead, cut or not
                continue
            assert len(leads) == 1, (cut, leads)
            assert (leads[0]["linkedid"], leads[0]["reason"]) == (lid, reason), cut
            reconciled += bool(leads[0]["reconciled"])
    if outcome == "missed":
        assert 0 < reconciled < len(points)  # both paths ran: the record's (early cuts), the events' (late)


async def test_call_still_up_after_the_gap_is_reattached_then_its_record_makes_the_lead(cfg: Config) -> None:
    """Link cut mid-queue; on reconnect CoreShowChannels (recorded shape) shows the call still up: the
    tracker re-attaches its channels (the gauge is right), sees its end, and the record gives the reason."""
    name = "s03_queue_timeout"
    lid = trace_linkedid(cfg, name)
    astdb, now = record_for(name, lid)
    body = events_after_login(name)
    join = body.index(b"Event: QueueCallerJoin")
    hangups = [f for f in frames(name) if f.get("Event") == "Hangup" and f.get("Linkedid") == lid]
    tail = b"".join(("".join(f"{k}: {v}\r\n" for k, v in f.items()) + "\r\n").encode() for f in hangups)
    chans = [dict(ch, Linkedid=lid, Uniqueid=h["Uniqueid"])
             for ch, h in zip(recorded_channels(), hangups, strict=False)]
    fake = await FakeAsterisk([Script(body[:join], drop=True, astdb=False), Script(b"")], astdb={},
                              channels=chans).start()
    store = await Store.open(":memory:")
    flow = CallFlow(CallTracker(cfg), store, clock=lambda: now)
    reattached = asyncio.Event()

    async def resync(client: object) -> None:
        await flow.resync(client)
        if fake.connections == 2:
            reattached.set()

    client = AmiClient(loopback_cfg(cfg, fake.port).ami, flow.on_event, flow.on_link_lost, resync)
    await flow.start()
    await client.start()
    try:
        async with asyncio.timeout(10):
            await reattached.wait()
            assert len(flow.tracker) == 1 and flow.tracker.open_ids() == {lid}
            # the call ends now: its record is written (in this hour's bucket), then its channels hang up
            fake.astdb.update({f"/callguard/calls/{bucket_of(time.time())}/{lid}": v for v in astdb.values()})
            writer = next(iter(fake._writers))
            writer.write(tail)
            while await store.calls.get(lid) is None:
                flow.recorded.clear()
                await flow.recorded.wait()
    finally:
        await client.stop()
        await flow.stop()
        await fake.stop()
    try:
        assert len(flow.tracker) == 0
        row = await store.calls.get(lid)
        assert row is not None and (row.outcome, row.reason) == ("missed", "timeout"), row
        (item,) = await store.outbox.in_state("pending")
        assert (item.payload["reason"], item.payload["reconciled"]) == ("timeout", True)
        assert (await store.sync_state.get(MARK)).last_sync_at > 0
    finally:
        await store.close()


async def test_without_reporting_rights_the_resync_says_so_and_lost_calls_wait(cfg: Config) -> None:
    body = events_after_login("s03_queue_timeout")
    join = body.index(b"Event: QueueCallerJoin")
    fake = await FakeAsterisk([Script(body[:join], drop=True, astdb=False), Script(b"")], denied=True).start()
    store = await Store.open(":memory:")
    flow = CallFlow(CallTracker(dataclasses.replace(cfg, calls=dataclasses.replace(cfg.calls, stale_after=60))),
                    store)
    failed = asyncio.Event()

    async def resync(client: object) -> None:
        await flow.resync(client)
        if fake.connections == 2:
            failed.set()

    client = AmiClient(loopback_cfg(cfg, fake.port).ami, flow.on_event, flow.on_link_lost, resync)
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        await flow.start()
        await client.start()
        try:
            async with asyncio.timeout(10):
                await failed.wait()
        finally:
            await client.stop()
            await flow.stop()
            await fake.stop()
    errors = [e for e in logs if e["event"] == "calls_resync_failed"]
    assert errors and "write = reporting" in errors[-1]["error"]
    assert await store.outbox.counts() == {}  # nothing invented, and the mark did not move
    try:
        assert (await store.sync_state.get(MARK)).last_sync_at == 0
    finally:
        await store.close()
