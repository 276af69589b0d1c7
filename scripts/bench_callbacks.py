"""Benchmark (not a test): the call-back loop's memory and CPU with many open call-backs, and the time
from an outbound DialBegin frame to the attempt being recorded: in-process (detect + book), then through
the running driver over a loopback AMI socket to the commit in a store on disk.

    .venv/bin/python scripts/bench_callbacks.py [--open 10000] [--frames 20000]
"""

from __future__ import annotations

import argparse
import gc
import io
import random
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callguard import log as cglog
from callguard.ami.wire import Frame, parse_stream
from callguard.callbacks.book import CallbackBook
from callguard.callbacks.detect import AttemptDetector
from callguard.callbacks.loop import Attempt
from callguard.callbacks.presence import Presence
from callguard.callbacks.settings import CallbackConfig, ManagerConfig, parse_roster

TRACES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "traces"
ALL_DAY = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
T0 = 1796114370.0


def setup(n_managers: int) -> tuple[CallbackConfig, Presence]:
    managers = [ManagerConfig(name=f"m{i}", devices=[f"Local/{100 + i}@agents"], days=ALL_DAY)
                for i in range(n_managers)]
    managers[1] = ManagerConfig(name="m1", devices=["Local/101@agents"], days=ALL_DAY)  # the recorded agent
    cfg = CallbackConfig(enabled=True, managers=managers, max_handoffs=3)
    presence = Presence(parse_roster(cfg))
    member = next(f for f in parse_stream((TRACES / "s02_clean_answered.ami.txt").read_bytes())[1]
                  if f.get("Event") == "QueueMemberStatus")
    for m in managers:
        dev = m.devices[0]
        presence.feed({**member, "MemberName": m.name, "Interface": dev, "StateInterface": dev, "Status": "1"})
    return cfg, presence


def _fill(n: int, cfg: CallbackConfig, presence: Presence) -> CallbackBook:
    book = CallbackBook(cfg)
    book.bind(presence, random.Random(1))
    for i in range(n):
        book.open(f"17961.{i}", f"+7903{i:07d}", T0 + i * 0.01)
    return book


def open_many(n: int, cfg: CallbackConfig, presence: Presence) -> tuple[CallbackBook, float, int]:
    """CPU without tracemalloc (it slows allocation several times), then memory in a second pass."""
    t = time.perf_counter()
    book = _fill(n, cfg, presence)
    elapsed = time.perf_counter() - t
    del book
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    book = _fill(n, cfg, presence)
    mem = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return book, elapsed, mem


def bench_ticks(book: CallbackBook, cfg: CallbackConfig) -> None:
    # an idle tick (nothing due) and the tick when every open call-back's pause ends at once
    t = time.perf_counter()
    for k in range(10_000):
        book.tick(T0 + k * 0.001)
    idle = (time.perf_counter() - t) / 10_000
    t = time.perf_counter()
    steps = book.tick(T0 + cfg.pause + 200)
    burst = time.perf_counter() - t
    print(f"timer tick, nothing due:          {idle * 1e6:8.2f} µs")
    each = burst / max(1, len(steps)) * 1e6
    print(f"timer tick, {len(steps)} hand-ons due: {burst * 1e3:8.1f} ms ({each:.1f} µs each)")


def bench_frames(book: CallbackBook, presence: Presence, n_frames: int) -> None:
    frames = parse_stream((TRACES / "s21_missed_then_callback.ami.txt").read_bytes())[1]
    detector = AttemptDetector(presence.roster)
    stream = (frames * (n_frames // len(frames) + 1))[:n_frames]
    t = time.perf_counter()
    for i, f in enumerate(stream):
        presence.feed(f)
        for att in detector.feed(f, T0 + i):
            book.attempt(att.customer_e164, Attempt(T0 + i, att.manager, att.answered, att.final, att.status))
        book.tick(T0 + 1)
    per = (time.perf_counter() - t) / len(stream)
    print(f"AMI frame (presence+detect+tick): {per * 1e6:8.2f} µs  ({len(stream)} frames of s21, {len(book)} open)")


def bench_dial_to_record(book: CallbackBook, presence: Presence) -> None:
    frames = parse_stream((TRACES / "s18_callback_answered.ami.txt").read_bytes())[1]
    begin: Frame = next(f for f in frames if f.get("Event") == "DialBegin" and f.get("Channel"))
    customers = [f"+7903{i:07d}" for i in range(0, len(book), max(1, len(book) // 1000))]
    samples = []
    for c in customers:
        detector = AttemptDetector(presence.roster)
        frame = {**begin, "Exten": "8" + c[2:]}  # the way people dial: 8 903 … for +7 903 …
        t = time.perf_counter_ns()
        (att,) = detector.feed(frame, T0 + 1000)
        (s,) = book.attempt(att.customer_e164, Attempt(T0 + 1000, att.manager, False, False))
        samples.append(time.perf_counter_ns() - t)
        assert s.callback.state.value == "attempted"
    samples.sort()
    p99 = samples[int(len(samples) * 0.99)]
    print(f"DialBegin → attempt recorded:     median {statistics.median(samples) / 1e3:.1f} µs, "
          f"p99 {p99 / 1e3:.1f} µs, max {samples[-1] / 1e3:.1f} µs ({len(samples)} dials)")


def _rss_mb() -> float:
    """The resident set now (ru_maxrss is a high-water mark: it cannot show a later phase's growth)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _ms(samples: list[float]) -> str:
    samples = sorted(samples)
    return (f"median {statistics.median(samples) * 1e3:.2f} ms, p99 {samples[int(len(samples) * 0.99)] * 1e3:.2f} ms, "
            f"max {samples[-1] * 1e3:.2f} ms")


async def _seed_leads(store: Any, n_open: int) -> None:
    """``n_open`` delivered leads (outbox ``sent``), one a second up to T0, in one transaction (setup)."""
    async with store.db.write() as conn:
        await conn.executemany(
            "INSERT INTO outbox(linkedid, payload, state, attempts, next_at, crm_ref, created_at, updated_at) "
            "VALUES (?, ?, 'sent', 1, 0, ?, ?, ?)",
            [(f"17961.{i}", f'{{"linkedid":"17961.{i}","caller":"+7903{i:07d}","did":"5551000",'
              f'"ended_at":{T0 - n_open + i}}}', str(i), T0 - n_open + i, T0 - n_open + i + 0.5)
             for i in range(n_open)])


async def _dial(d: Any, rows: Any, writer: Any, begin: Frame, n_open: int, dials: int) -> list[float]:
    """``dials`` DialBegin frames to customers spread over the open call-backs; write → committed, in s."""
    samples = []
    for i in range(0, n_open, max(1, n_open // dials))[:dials]:
        frame = {**begin, "Exten": f"8903{i:07d}", "Uniqueid": f"b.{i}", "DestUniqueid": f"b.{i}.d"}
        data = "".join(f"{k}: {v}\r\n" for k, v in frame.items()).encode() + b"\r\n"
        t = time.perf_counter()
        writer.write(data)
        while True:
            seen = d.saves  # a commit during the read below is seen here, never waited for
            rec = await rows.get(f"17961.{i}")
            if rec is not None and rec.state == "attempted":
                break
            if d.saves == seen:
                d.saved.clear()
                await d.saved.wait()
        samples.append(time.perf_counter() - t)
    return samples


async def _loopback(n_open: int, dials: int) -> None:
    """The running driver with ``n_open`` open call-backs in a store on disk.

    1. ``pump()`` takes the delivered leads in (200 a pass, as the timer does), CRM steps done inline.
    2. A restart: a fresh driver ``start()``s and loads the open rows (its memory: tracemalloc, RSS).
    3. A fake Asterisk on a loopback socket sends the recorded s18 DialBegin (relabelled per dial); timed
       from the write of its bytes to the commit that records the attempt (read back from the store).
    4. The timer's per-tick and per-poll work at that size (CPU), and the CPU of the whole process per frame.
    """
    import asyncio
    import tempfile

    from callguard.ami.client import AmiClient
    from callguard.callbacks.driver import CallbackDriver
    from callguard.config import Config
    from callguard.store import Store
    from callguard.store.callbacks import Callbacks
    from tests.callbacks_support import Clock, RecordingCrm, member
    from tests.fakes.asterisk_ami import FakeAsterisk, Script, loopback_cfg

    cfg = CallbackConfig(enabled=True, max_handoffs=3, managers=[
        ManagerConfig(name="Ivan", crm_user_id=101, devices=["Local/101@agents"], days=ALL_DAY),
        ManagerConfig(name="Petr", crm_user_id=102, devices=["Local/102@agents"], days=ALL_DAY)])
    roster = parse_roster(cfg)
    store = await Store.open(f"{tempfile.mkdtemp()}/bench.sqlite3")
    await _seed_leads(store, n_open)
    clock = Clock(T0 + 1)

    def driver() -> CallbackDriver:
        d = CallbackDriver(cfg, roster, Callbacks(store.db), RecordingCrm(), clock=clock, rng=random.Random(1),
                           poll_s=3600)
        d.on_event(member("Agent101", "Local/101@agents"), clock.t)
        return d

    statements = [0]

    def counted(_sql: str) -> None:
        statements[0] += 1

    for conn in (store.db.reader, store.db._writer):
        await conn.set_trace_callback(counted)
    d = driver()
    await d.load()
    t, cpu, passes = time.perf_counter(), time.process_time(), 0
    while len(d.book) < n_open:
        await d.pump(clock.t)
        passes += 1
    print(f"pump: {n_open} leads taken in, {passes} passes, {time.perf_counter() - t:.2f} s "
          f"(CPU {time.process_time() - cpu:.2f} s), {d.saves} commits, {statements[0]} SQL statements")
    for conn in (store.db.reader, store.db._writer):
        await conn.set_trace_callback(None)

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    probe = driver()
    await probe.load()
    mem = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del probe
    gc.collect()
    rss0 = _rss_mb()
    d = driver()
    t = time.perf_counter()
    await d.start()  # the restart: every open row loaded, timers resumed
    print(f"restart: {len(d.book)} open loaded in {(time.perf_counter() - t) * 1e3:.0f} ms; the loop's state "
          f"tracemalloc {mem / 1e6:.2f} MB ({mem / max(1, n_open):.0f} B each), RSS +{_rss_mb() - rss0:.1f} MB "
          f"(now {_rss_mb():.0f} MB)")

    frames = parse_stream((TRACES / "s18_callback_answered.ami.txt").read_bytes())[1]
    begin = next(f for f in frames if f.get("Event") == "DialBegin" and f.get("Channel"))
    fake = await FakeAsterisk([Script(body=b"")]).start()
    client = AmiClient(loopback_cfg(Config(), fake.port).ami, d.on_event)
    await client.start()
    while not fake._writers or not client.connected:  # noqa: ASYNC110 - setup only: the link comes up
        await asyncio.sleep(0.01)
    writer = next(iter(fake._writers))
    cpu = time.process_time()
    samples = await _dial(d, Callbacks(store.db), writer, begin, n_open, dials)
    per_dial = (time.process_time() - cpu) / len(samples)
    print(f"DialBegin over loopback AMI → attempt committed ({n_open} open): {_ms(samples)} ({len(samples)} dials); "
          f"process CPU {per_dial * 1e3:.2f} ms per frame (AMI read, detect, step, commit, the bench's read-back)")
    await client.stop()
    await d.stop()
    await fake.stop()

    now = clock.t
    reps = 1000
    cpu = time.process_time()
    for _ in range(reps):
        d.book.tick(now)
    tick = (time.process_time() - cpu) / reps
    cpu = time.process_time()
    for _ in range(20):
        await d.intake(now)
    poll = (time.process_time() - cpu) / 20
    cpu = time.process_time()
    for _ in range(20):
        d._sweep_sla(now)
    sweep = (time.process_time() - cpu) / 20
    print(f"timer at {len(d.book)} open: tick (nothing due) {tick * 1e6:.1f} µs; each store poll (driver POLL_S, "
          f"1 s): intake {poll * 1e3:.2f} ms + SLA sweep {sweep * 1e3:.2f} ms CPU")
    await store.close()


def bench_loopback(n_open: int, dials: int = 200) -> None:
    import asyncio

    asyncio.run(_loopback(n_open, dials))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--open", type=int, default=10_000)
    ap.add_argument("--managers", type=int, default=20)
    ap.add_argument("--frames", type=int, default=20_000)
    args = ap.parse_args(argv)
    cglog.configure("json", "warning", io.StringIO())  # the loop's info lines are not the benchmark's output
    cfg, presence = setup(args.managers)
    cpu0 = time.process_time()
    book, elapsed, mem = open_many(args.open, cfg, presence)
    print(f"open {args.open} call-backs ({args.managers} managers): {elapsed * 1e3:.0f} ms "
          f"({elapsed / args.open * 1e6:.1f} µs each), tracemalloc {mem / 1e6:.2f} MB ({mem / args.open:.0f} B each)")
    bench_frames(book, presence, args.frames)
    bench_dial_to_record(book, presence)
    bench_ticks(book, cfg)
    bench_loopback(args.open)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"CPU total {time.process_time() - cpu0:.2f} s, max RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
