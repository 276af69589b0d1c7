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
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"CPU total {time.process_time() - cpu0:.2f} s, max RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
