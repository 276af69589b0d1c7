"""Benchmark (not a test): rebuild a 1-hour gap of 10,000 calls from the AstDB call records.

Synthesizes the DBGetTree reply Asterisk sends for ``callguard/calls/<bucket>`` (exact framing of
tests/fixtures/astdb/calls.dbgettree.ami.txt, values in the shapes recorded there: answered, timeout,
abandon, join-empty, busy, no answer, spam, after hours, hang-up while screening), then times AMI framing +
parse + reconcile against a tracker that already settled half of them. Prints calls/s, ms, peak memory.

    python scripts/bench_reconcile.py [--calls 10000] [--settled 0.5]
"""

from __future__ import annotations

import argparse
import base64
import random
import time
import tracemalloc

from callguard.ami.wire import FrameFeeder
from callguard.calls.reconcile import plan
from callguard.calls.records import bucket_of, parse_tree

# (verdict, stage, QUEUESTATUS, ABANDONED, DIALSTATUS, answered, cause) as recorded live
SHAPES = [
    ("clean", "queue", "", "", "", True, "16"), ("clean", "queue", "TIMEOUT", "TRUE", "", False, "16"),
    ("clean", "queue", "", "TRUE", "", False, "19"), ("", "queue", "JOINEMPTY", "", "", False, "16"),
    ("clean", "dial", "", "", "BUSY", False, "16"), ("clean", "dial", "", "", "NOANSWER", False, "16"),
    ("clean", "dial", "", "", "ANSWER", False, "16"), ("spam", "screen", "", "", "", False, "21"),
    ("closed", "closed", "", "", "", False, "16"), ("clean", "screen", "", "", "", False, "19"),
]


def synth(n: int, start: float, rnd: random.Random) -> tuple[bytes, list[str]]:
    out = [b"Response: Success\r\nActionID: tree\r\nEventList: start\r\nMessage: Result will follow\r\n\r\n"]
    lids = []
    for i in range(n):
        t0 = start + 3600.0 * i / n
        end = t0 + rnd.uniform(2, 60)
        verdict, stage, qs, ab, ds, answered, cause = rnd.choice(SHAPES)
        lid = f"{int(t0)}.{2 * i}"
        caller = base64.b64encode(f"+7903{rnd.randrange(10**7):07d}".encode()).decode()
        val = (f"1|{int(t0)}.{2 * i + 1}|{t0:.3f}|{end:.3f}|{verdict}|{stage}|{qs}|{ab}|{ds}|"
               f"{int(t0 + 3) if answered else ''}|{cause}|NTU1MTAwMA==|{caller}")
        out.append(f"Event: DBGetTreeResponse\r\nKey: /callguard/calls/{bucket_of(end)}/{lid}\r\nVal: {val}\r\n"
                   "ActionID: tree\r\n\r\n".encode())
        lids.append(lid)
    out.append(f"Event: DBGetTreeComplete\r\nActionID: tree\r\nEventList: Complete\r\nListItems: {n}\r\n\r\n".encode())
    return b"".join(out), lids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--settled", type=float, default=0.5)
    args = ap.parse_args()
    rnd = random.Random(15)
    data, lids = synth(args.calls, 1_796_000_000.0, rnd)
    settled = set(rnd.sample(lids, int(len(lids) * args.settled)))
    t0 = time.perf_counter()  # timed without tracemalloc (it slows allocation several-fold)
    frames = FrameFeeder(expect_banner=False).feed(data)
    t1 = time.perf_counter()
    records, rejected = parse_tree(frames)
    t2 = time.perf_counter()
    result = plan(records, settled, set())
    t3 = time.perf_counter()
    del frames, records, result
    tracemalloc.start()  # then the same work again for the peak of what it allocates
    records, rejected = parse_tree(FrameFeeder(expect_banner=False).feed(data))
    result = plan(records, settled, set())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    total = t3 - t0
    print(f"calls={args.calls} bytes={len(data)} records={len(records)} rejected={len(rejected)} "
          f"to_create={len(result.to_create)} leads={len(result.leads)}")
    print(f"framing_ms={1000 * (t1 - t0):.1f} parse_ms={1000 * (t2 - t1):.1f} reconcile_ms={1000 * (t3 - t2):.1f} "
          f"total_ms={1000 * total:.1f} calls_per_s={args.calls / total:,.0f} peak_mib={peak / 2**20:.1f}")


if __name__ == "__main__":
    main()
