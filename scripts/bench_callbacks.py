"""Benchmark (not a test): the call-back loop's memory and CPU with many open call-backs, and the time
from an outbound DialBegin frame to the attempt being recorded (detect + loop, in-process).

    .venv/bin/python scripts/bench_callbacks.py [--open 10000] [--frames 20000]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


async def _loopback(n_open: int, dials: int) -> tuple[list[float], float, float]:
    """The running driver with ``n_open`` open call-backs in a store on disk; a fake Asterisk on a loopback
    socket sends the recorded s18 DialBegin (relabelled per dial); timed from the write of its bytes to the
    commit that records the attempt. Returns (samples in s, tracemalloc-free RSS delta MB, CPU s of opening)."""
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
    tmp = tempfile.mkdtemp()
    store = await Store.open(f"{tmp}/bench.sqlite3")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with store.db.write() as conn:  # n_open delivered leads, in one transaction (setup, not timed)
        for i in range(n_open):
            lid = f"17961.{i}"
            payload = f'{{"linkedid":"{lid}","caller":"+7903{i:07d}","did":"5551000","ended_at":{T0 + i * 0.01}}}'
            await conn.execute("INSERT INTO outbox(linkedid, payload, state, attempts, next_at, crm_ref, created_at, "
                               "updated_at) VALUES (?, ?, 'sent', 1, 0, ?, ?, ?)", (lid, payload, str(i), T0, T0))

    clock = Clock(T0 + 1)
    d = CallbackDriver(cfg, parse_roster(cfg), Callbacks(store.db), RecordingCrm(), clock=clock,
                       rng=random.Random(1), poll_s=3600)
    d.on_event(member("Agent101", "Local/101@agents"), clock.t)
    cpu = time.process_time()
    await d.load()
    while len(d.book) < n_open:
        await d.intake(clock.t)  # 200 leads a pass, as the timer takes them
        await d.flush()  # persisted with their CRM steps pending: start() below redoes them, as a restart
    cpu = time.process_time() - cpu
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    frames = parse_stream((TRACES / "s18_callback_answered.ami.txt").read_bytes())[1]
    begin = next(f for f in frames if f.get("Event") == "DialBegin" and f.get("Channel"))
    fake = await FakeAsterisk([Script(body=b"")]).start()
    client = AmiClient(loopback_cfg(Config(), fake.port).ami, d.on_event)
    await client.start()
    await d.start()  # a restart: loads the open rows, the CRM worker redoes their 10,000 assignments
    while not fake._writers or not client.connected:  # noqa: ASYNC110 - setup only: the link comes up
        await asyncio.sleep(0.01)
    writer = next(iter(fake._writers))
    rows = Callbacks(store.db)
    samples = []
    step = max(1, n_open // dials)
    for i in range(0, n_open, step)[:dials]:
        frame = {**begin, "Exten": f"8903{i:07d}", "Uniqueid": f"b.{i}", "DestUniqueid": f"b.{i}.d"}
        data = "".join(f"{k}: {v}\r\n" for k, v in frame.items()).encode() + b"\r\n"
        d.saved.clear()
        t = time.perf_counter()
        writer.write(data)
        while (rec := await rows.get(f"17961.{i}")) is None or rec.state != "attempted":
            d.saved.clear()
            await d.saved.wait()
        samples.append(time.perf_counter() - t)
    await client.stop()
    await d.stop()
    await fake.stop()
    await store.close()

    return samples, rss, cpu


def bench_loopback(n_open: int, dials: int = 200) -> None:
    import asyncio

    samples, rss, cpu = asyncio.run(_loopback(n_open, dials))
    samples.sort()
    print(f"driver: {n_open} open call-backs taken in from the store: CPU {cpu:.2f} s, max RSS +{rss:.0f} MB")
    print(f"DialBegin over loopback AMI → attempt committed in the store ({n_open} open): "
          f"median {statistics.median(samples) * 1e3:.2f} ms, p99 {samples[int(len(samples) * 0.99)] * 1e3:.2f} ms, "
          f"max {samples[-1] * 1e3:.2f} ms ({len(samples)} dials)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--open", type=int, default=10_000)
    ap.add_argument("--managers", type=int, default=20)
    ap.add_argument("--frames", type=int, default=20_000)
    args = ap.parse_args(argv)
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
