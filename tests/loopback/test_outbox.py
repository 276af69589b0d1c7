"""The outbox: one transaction per missed call, retries, dead letters, crash recovery, repeat misses."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from callguard.config import Config
from callguard.errors import CrmAuthError, CrmRejectedError, CrmUnavailableError, RateLimitedError, SinkError
from callguard.leads.model import Delivery, MissedCall
from callguard.leads.outbox import STOP_GRACE, OutboxWorker
from callguard.store import Store
from tests.fakes.asterisk_ami import fresh_logging  # noqa: F401 (fresh_logging: autouse)
from tests.fakes.leads import Clock, RecordingSink, add, lead, row


def worker(cfg: Config, store: Store, sink: RecordingSink, clock: Clock, **outbox: object) -> OutboxWorker:
    cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, **outbox))
    return OutboxWorker(cfg, store, sink, clock=clock, rng=lambda: 1.0)


async def test_call_and_item_are_one_write_and_a_second_outcome_is_a_noop(store: Store) -> None:
    clock = Clock()
    assert await add(store, "L1", clock)
    assert not await add(store, "L1", clock)
    assert not await store.calls.record(row("L1", outcome="answered"), None, clock())
    assert (await store.calls.get("L1")).outcome == "missed"  # type: ignore[union-attr]
    assert await store.outbox.counts() == {"pending": 1}
    assert await store.calls.record(row("L2", outcome="answered"), None, clock())
    assert await store.outbox.counts() == {"pending": 1}


async def test_delivers_once(cfg: Config, store: Store) -> None:
    clock, sink = Clock(), RecordingSink()
    await add(store, "L1", clock)
    w = worker(cfg, store, sink, clock)
    assert await w.run_once() == 1
    assert await w.run_once() == 0
    assert [c.linkedid for c in sink.calls] == ["L1"]
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "sent" and item.crm_ref == "lead-1" and item.attempts == 1


@pytest.mark.parametrize(
    "error",
    [SinkError("webhook answered 500"), TimeoutError(), CrmUnavailableError("502"), OSError("refused")],
)
async def test_transient_failures_back_off_then_dead_letter(cfg: Config, store: Store, error: Exception) -> None:
    clock = Clock()
    sink = RecordingSink(*[error] * 10)
    await add(store, "L1", clock)
    w = worker(cfg, store, sink, clock, max_attempts=4, backoff_base=10.0, backoff_cap=25.0)
    waits = []
    for _ in range(4):
        assert await w.run_once() == 1
        item = await store.outbox.get("L1")
        assert item is not None
        if item.state == "dead":
            break
        assert item.state == "pending" and await w.run_once() == 0  # not due yet
        waits.append(round(item.next_at - clock(), 3))
        clock.t = item.next_at
    assert waits == [10.0, 20.0, 25.0]  # exponential, capped (jitter pinned to its top)
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "dead" and item.attempts == 4
    assert "gave up after 4 attempts" in item.last_error
    assert sink.calls == []


@pytest.mark.parametrize("error", [SinkError("webhook refused the lead: 400", permanent=True),
                                   CrmRejectedError("bad field", 400)])
async def test_permanent_failure_is_a_dead_letter_at_once_then_retry_and_drop(
    cfg: Config, store: Store, error: Exception
) -> None:
    clock, sink = Clock(), RecordingSink(error)
    await add(store, "L1", clock)
    await add(store, "L2", clock)
    w = worker(cfg, store, sink, clock)
    await w.run_once()
    dead = await store.outbox.in_state("dead")
    assert [d.linkedid for d in dead] == ["L1"] and dead[0].attempts == 1
    assert [c.linkedid for c in sink.calls] == ["L2"]
    assert await store.outbox.retry("L1", clock())
    assert not await store.outbox.retry("L1", clock())  # only dead letters
    await w.run_once()
    assert [c.linkedid for c in sink.calls] == ["L2", "L1"]
    assert not await store.outbox.drop("L1")  # sent, not dead: kept


async def test_auth_failure_waits_for_fixed_credentials_never_dead(cfg: Config, store: Store) -> None:
    clock, sink = Clock(), RecordingSink(*[CrmAuthError("401", 401)] * 5)
    await add(store, "L1", clock)
    w = worker(cfg, store, sink, clock, max_attempts=2, backoff_cap=60.0)
    for _ in range(5):
        assert await w.run_once() == 1
        item = await store.outbox.get("L1")
        assert item is not None and item.state == "pending" and item.next_at - clock() <= 60.0
        clock.t = item.next_at
    await w.run_once()  # credentials fixed
    assert [c.linkedid for c in sink.calls] == ["L1"]


async def test_rate_limit_honours_retry_after(cfg: Config, store: Store) -> None:
    clock, sink = Clock(), RecordingSink(RateLimitedError("429", retry_after=120.0))
    await add(store, "L1", clock)
    await worker(cfg, store, sink, clock, backoff_base=1.0).run_once()
    item = await store.outbox.get("L1")
    assert item is not None and item.state == "pending" and item.next_at - clock() == pytest.approx(120.0)


@pytest.mark.parametrize(("rng", "waits"), [(1.0, [5.0, 10.0, 20.0, 40.0]), (0.0, [2.5, 5.0, 10.0, 20.0])])
async def test_backoff_is_capped_and_jittered(
    cfg: Config, store: Store, rng: float, waits: list[float]
) -> None:
    """The first retry waits ``backoff_base`` (callguard.backoff counts it as attempt 0), each next one
    twice as long, jittered down to half; the cap is in test_transient_failures_back_off_then_dead_letter."""
    clock = Clock()
    await add(store, "L1", clock)
    cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, backoff_base=5.0, backoff_cap=900.0))
    w = OutboxWorker(cfg, store, RecordingSink(*[OSError("refused")] * 4), clock=clock, rng=lambda: rng)
    got = []
    for _ in waits:
        assert await w.run_once() == 1
        item = await store.outbox.get("L1")
        assert item is not None and item.state == "pending"
        got.append(item.next_at - clock())
        clock.t = item.next_at
    assert got == waits


async def test_repeat_miss_goes_to_the_open_lead(cfg: Config, store: Store) -> None:
    clock, sink = Clock(), RecordingSink()
    w = worker(cfg, store, sink, clock)
    await add(store, "L1", clock)
    await w.run_once()
    clock.t += 3600
    await add(store, "L2", clock)
    await add(store, "L3", clock, caller="+79990000000")
    await add(store, "L4", clock, caller="anonymous")
    await add(store, "L5", clock, caller="anonymous")
    await w.run_once()
    by_id = {c.linkedid: c for c in sink.calls}
    assert (by_id["L2"].open_lead_ref, by_id["L2"].misses) == ("lead-1", 2)
    assert by_id["L3"].open_lead_ref == "" and by_id["L4"].open_lead_ref == "" and by_id["L5"].open_lead_ref == ""
    clock.t += cfg.missed.dedupe_window  # the window is counted from when the lead opened
    await add(store, "L6", clock)
    await w.run_once()
    assert sink.calls[-1].linkedid == "L6" and sink.calls[-1].open_lead_ref == ""


async def test_restart_with_item_left_sending_asks_the_sink_first(cfg: Config, store: Store) -> None:
    clock = Clock()
    await add(store, "L1", clock)
    await add(store, "L2", clock)
    # what a kill -9 after the sink call leaves behind: both claimed, neither marked sent
    assert await store.outbox.mark_sending("L1", lead("L1"), clock())
    assert await store.outbox.mark_sending("L2", lead("L2"), clock())
    sink = RecordingSink(known={"L1": Delivery("crm-77")})
    w = worker(cfg, store, sink, clock)
    await w.recover()
    await w.run_once()
    assert [c.linkedid for c in sink.calls] == ["L2"]  # L1 already in the sink: not sent twice
    l1 = await store.outbox.get("L1")
    assert l1 is not None and l1.state == "sent" and l1.crm_ref == "crm-77"


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from callguard.config import load_config
    from callguard.leads.model import Delivery, MissedCall
    from callguard.leads.outbox import OutboxWorker
    from callguard.store import Store
    from callguard.store.calls import CallRow

    class FileSink:
        name = "file"
        def __init__(self, path): self.path = path
        async def deliver(self, call):
            with open(self.path, "a") as f:
                f.write(call.linkedid + "\\n"); f.flush(); os.fsync(f.fileno())
            print("delivered", flush=True)
            time.sleep(60)  # killed here: after the sink took it, before 'sent' is written
            return Delivery("x")
        async def find_delivered(self, call): return None
        async def close(self): pass

    async def main(cfg_path, sink_path):
        cfg = load_config(cfg_path, env={})
        store = await Store.open(cfg.store.path)
        row = CallRow("K1", "K1.1", "+79123456789", "5551000", "clean", "missed", "abandoned", 1.0, 8.0, 7.0)
        lead = MissedCall("K1", "+79123456789", "5551000", "abandoned", 1.0, 8.0, 7.0).to_json()
        await store.calls.record(row, lead, time.time())
        print("recorded", flush=True)
        if sys.argv[3] == "deliver":
            await OutboxWorker(cfg, store, FileSink(sink_path)).run_once()
        time.sleep(60)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


class FileSink(RecordingSink):
    name = "file"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def deliver(self, call: MissedCall) -> Delivery:
        with self.path.open("a") as f:
            f.write(call.linkedid + "\n")
        return await super().deliver(call)

    async def find_delivered(self, call: MissedCall) -> Delivery | None:
        lines = self.path.read_text().split() if self.path.exists() else []
        return Delivery("found") if call.linkedid in lines else None


@pytest.mark.parametrize("stage", ["recorded", "delivered"])
async def test_kill_9_then_restart_delivers_exactly_once(cfg: Config, tmp_path: Path, stage: str) -> None:
    sink_file = tmp_path / "sink.txt"
    assert cfg.source is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(cfg.source), str(sink_file),
        "deliver" if stage == "delivered" else "stop",
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while (await proc.stdout.readline()).decode().strip() != stage:
            pass
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL
    store = await Store.open(cfg.store.path)
    try:
        sink = FileSink(sink_file)
        w = OutboxWorker(cfg, store, sink)
        await w.recover()
        await w.run_once()
        await w.run_once()
        assert sink_file.read_text().split() == ["K1"]  # exactly one delivery, whichever stage died
        item = await store.outbox.get("K1")
        assert item is not None and item.state == "sent"
    finally:
        await store.close()


async def test_worker_part_wakes_on_new_items_and_stops(cfg: Config, store: Store) -> None:
    sink = RecordingSink()
    w = OutboxWorker(cfg, store, sink)
    await w.start()
    try:
        await store.calls.record(row("W1"), lead("W1"), 0.0)
        w.wake()
        await asyncio.wait_for(sink.got.wait(), 5)
    finally:
        # stop() ends the idle loop at once (a stop signal arriving mid-pass is not lost), well inside
        # the grace that would otherwise cancel it
        async with asyncio.timeout(STOP_GRACE / 2):
            await w.stop()
    assert sink.closed and [c.linkedid for c in sink.calls] == ["W1"]
    assert json.loads(json.dumps((await store.outbox.get("W1")).payload))["linkedid"] == "W1"  # type: ignore[union-attr]
