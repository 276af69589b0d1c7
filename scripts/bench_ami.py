"""Benchmark: AMI events/s through callguard's AMI client (framing) and call tracker, and memory.

A generator process plays Asterisk: banner, the recorded Login response, then an endless stream built
from the 14 recorded scenarios (tests/fixtures/traces), each call copied with fresh Uniqueid/Linkedid
values and ``--concurrent`` calls interleaved event by event, over a real loopback socket. This process
runs the real ``AmiClient`` (panoramisk Manager + amiwire framing) feeding a real ``CallTracker`` and
prints, at each checkpoint, the events/s since the start and the peak/current RSS.

    .venv/bin/python scripts/bench_ami.py                       # checkpoints at 1M and 5M events
    .venv/bin/python scripts/bench_ami.py --checkpoints 200000,1000000 --concurrent 5000

Targets: >= 30,000 events/s on the 2-core CI box; RSS flat (within 10 %) from 1M to 5M.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import resource
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callguard.ami.client import AmiClient  # noqa: E402
from callguard.ami.wire import EOM  # noqa: E402
from callguard.app import run_loop  # noqa: E402
from callguard.calls.tracker import CallTracker, Outcome  # noqa: E402
from callguard.config import load_config  # noqa: E402

TRACES = ROOT / "tests" / "fixtures" / "traces"
SCENARIOS = sorted(p.name[: -len(".ami.txt")] for p in TRACES.glob("s[01]*.ami.txt") if "s00" not in p.name)
_ID = re.compile(rb"((?:Uniqueid|Linkedid|DestUniqueid|DestLinkedid): )([0-9]+\.[0-9]+)\r\n")
SKIP = (b"Event: FullyBooted", b"Event: SuccessfulAuth")


def _template(name: str) -> list[list[bytes]]:
    """One call as a list of events; each event a list of parts where odd items are ids to relabel."""
    data = (TRACES / f"{name}.ami.txt").read_bytes()
    body = data[data.index(EOM, data.index(b"\r\n")) + len(EOM):]
    events = []
    for frame in body.split(EOM):
        if not frame.startswith(b"Event: ") or frame.startswith(SKIP):
            continue
        parts: list[bytes] = []
        last = 0
        for m in _ID.finditer(frame + b"\r\n"):
            parts += [frame[last:m.start(2)], m.group(2)]
            last = m.end(2)
        parts.append(frame[last:] + EOM)
        events.append(parts)
    return events


def _call(template: list[list[bytes]], n: int) -> list[bytes]:
    tag = b"%d" % n
    return [b"".join(p if i % 2 == 0 else p + tag for i, p in enumerate(parts)) for parts in template]


def generator(port_q: multiprocessing.Queue, total: int, concurrent: int) -> None:  # type: ignore[type-arg]
    templates = [_template(n) for n in SCENARIOS]
    srv = socket.create_server(("127.0.0.1", 0))
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    data = (TRACES / "s02_clean_answered.ami.txt").read_bytes()
    banner_end = data.index(b"\r\n") + 2
    conn.sendall(data[:banner_end])
    buf = b""
    while EOM not in buf:
        buf += conn.recv(4096)
    action_id = re.search(rb"ActionID: (\S+)", buf).group(1)  # type: ignore[union-attr]
    conn.sendall(b"Response: Success\r\nActionID: " + action_id + b"\r\nMessage: Authentication accepted\r\n\r\n")
    sent = 0
    made = 0
    active: list[list[bytes]] = []
    cursors: list[int] = []
    while sent < total:
        while len(active) < concurrent:
            active.append(_call(templates[made % len(templates)], made))
            cursors.append(0)
            made += 1
        block = []
        for i in range(len(active)):  # one event from every live call: thousands of calls in flight
            block.append(active[i][cursors[i]])
            cursors[i] += 1
        done = [i for i in range(len(active)) if cursors[i] >= len(active[i])]
        for i in reversed(done):
            del active[i], cursors[i]
        try:
            conn.sendall(b"".join(block))
        except OSError:
            break  # the consumer reached its last checkpoint and hung up
        sent += len(block)
    conn.close()


def rss_mb() -> tuple[float, float]:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    current = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
    return peak, current


async def consume(port: int, checkpoints: list[int]) -> None:
    cfg = load_config(None, env={})
    cfg = cfg.__class__(**{**cfg.__dict__, "ami": cfg.ami.__class__(**{**cfg.ami.__dict__, "port": port,
                                                                        "ping_interval": 3600.0})})
    tracker = CallTracker(cfg)
    counts: dict[str, int] = {}
    seen = 0
    started = 0.0
    todo = list(checkpoints)
    finished = asyncio.Event()
    last = [0, 0.0]  # events and seconds at the previous checkpoint

    def on_event(frame: dict[str, str], now: float) -> None:
        nonlocal seen, started
        if not seen:
            started = time.perf_counter()
        seen += 1
        for o in tracker.feed(frame, now):
            counts[o.outcome.value] = counts.get(o.outcome.value, 0) + 1
        if todo and seen == todo[0]:
            elapsed = time.perf_counter() - started
            peak, current = rss_mb()
            interval = (seen - last[0]) / max(elapsed - last[1], 1e-9)
            last[:] = [seen, elapsed]
            print(f"{seen:>10,} events  {seen / elapsed:>9,.0f} events/s (since last {interval:>7,.0f})  "
                  f"peak RSS {peak:7.1f} MB  "
                  f"RSS now {current:7.1f} MB  open calls {len(tracker):>6,}  "
                  f"calls ended {sum(counts.values()):>8,} (missed {counts.get(Outcome.MISSED.value, 0):,})",
                  flush=True)
            todo.pop(0)
            if not todo:
                finished.set()

    client = AmiClient(cfg.ami, on_event)
    await client.start()
    try:
        await finished.wait()
    finally:
        await client.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", default="1000000,5000000", help="event counts to report at")
    ap.add_argument("--concurrent", type=int, default=2000, help="calls in flight at once")
    args = ap.parse_args()
    checkpoints = sorted(int(x) for x in args.checkpoints.split(","))
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    print(f"callguard bench_ami: {len(SCENARIOS)} recorded scenarios, {args.concurrent} concurrent calls, "
          f"Python {sys.version.split()[0]}", flush=True)
    q: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    gen = multiprocessing.Process(target=generator, args=(q, checkpoints[-1] + args.concurrent * 200,
                                                          args.concurrent), daemon=True)
    gen.start()
    port = q.get(timeout=30)
    try:
        run_loop(consume(port, checkpoints))
    finally:
        gen.terminate()
        gen.join(5)


if __name__ == "__main__":
    main()
