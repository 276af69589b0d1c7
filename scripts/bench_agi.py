#!/usr/bin/env python3
"""FastAGI screening benchmark: callguard against a bare asyncio floor. Prints figures; not a test.

The server under test is ``callguard run``'s service (one process, as the floor), with a store of
``--numbers`` cached CRM numbers (default 1,000,000). The client here plays Asterisk, on callbacks to stay
light: it connects, sends the request recorded from Asterisk 22
(tests/fixtures/traces/s02_clean_answered.agi.txt) with a caller drawn from the cache (spam hits, clean hits
and misses), reads each ``SET VARIABLE`` line and answers ``200 result=1`` until the server closes.
Latency is from the request written to the verdict read. The client's own CPU per screen is printed too:
on a two-core host it competes with the server, and a run whose client could not offer the rate says so
("offered").

Two loads, each against callguard and against the floor (a bare asyncio server that answers a fixed
verdict without any lookup):
  closed loop: ``--concurrency`` sessions back to back, for the maximum screens/s;
  open loop:   screens started at ``--rate`` per second, at most ``--concurrency`` open at once, for the
               latency a PBX sees at that load.

    .venv/bin/python scripts/bench_agi.py                # defaults: 1M numbers, 200 sessions, 2000/s
    .venv/bin/python scripts/bench_agi.py --numbers 100000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRACE = ROOT / "tests" / "fixtures" / "traces" / "s02_clean_answered.agi.txt"


def recorded_header() -> list[str]:
    lines = []
    for line in TRACE.read_text().split("\n"):
        if line.startswith("#1 << "):
            lines.append(line[6:])
            if line[6:] == "":
                break
    return lines


def request_for(template: list[str], caller: str, n: int) -> bytes:
    out = []
    for line in template:
        if line.startswith("agi_callerid:"):
            line = f"agi_callerid: {caller}"
        elif line.startswith("agi_uniqueid:"):
            line = f"agi_uniqueid: 1795435929.{n}"
        out.append(line)
    return ("\n".join(out) + "\n").encode()


def number(i: int) -> str:
    return f"+7912{i:07d}"


def build_store(path: Path, count: int) -> None:
    """A store at the current schema with ``count`` CRM numbers, 1 in 10 flagged spam."""
    from callguard.store.db import _statements
    from callguard.store.migrations import LATEST, MIGRATIONS

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    for version in sorted(MIGRATIONS):
        for statement in _statements(MIGRATIONS[version]):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {LATEST}")
    now = time.time()
    rows = ((number(i), str(100000 + i), f"Contact {i}", "Anna", int(i % 10 == 0), "amocrm", now) for i in range(count))
    conn.executemany("INSERT INTO numbers VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


# --- servers (run in a child process) -------------------------------------------------------------------


async def serve_floor(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (await reader.readline()) not in (b"\n", b""):
                pass
            writer.write(b"SET VARIABLE CALLGUARD_VERDICT clean\n")
            await reader.readline()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def serve_callguard(port: int, db: str) -> None:
    import dataclasses

    from callguard import log
    from callguard.app import Service
    from callguard.config import load_config

    cfg = load_config(None, env={})
    cfg = dataclasses.replace(
        cfg,
        store=dataclasses.replace(cfg.store, path=Path(db)),
        agi=dataclasses.replace(cfg.agi, port=port, max_connections=5000),
        web=dataclasses.replace(cfg.web, enabled=False),
    )
    # The log goes where journald would take it; JSON formatting is part of the measured cost.
    log.configure("json", "info", stream=open(os.devnull, "w"), final=True)  # noqa: SIM115, ASYNC230
    service = Service(cfg)
    await service.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await service.stop()


def start_server(kind: str, port: int, db: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--db", str(db)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit(f"{kind} server did not start")
    return proc


# --- the client (plays Asterisk) ------------------------------------------------------------------------


SET_VERDICT = "SET VARIABLE CALLGUARD_VERDICT "


class AsteriskSide(asyncio.Protocol):
    """One FastAGI session as Asterisk runs it: the request, then ``200 result=1`` for every command
    line, until the server closes. Callbacks, not streams: the load generator shares the machine's two
    cores with the server, and a stream client cost about as much CPU per screen as the floor server."""

    def __init__(self, payload: bytes, done: asyncio.Future[tuple[float, str]]) -> None:
        self.payload = payload
        self.done = done
        self.buf = b""
        self.t0 = 0.0
        self.latency = 0.0
        self.verdict = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.t0 = time.perf_counter()
        transport.write(self.payload)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if not self.latency:
                self.latency = time.perf_counter() - self.t0
            self.transport.write(self.answer(line.decode()))  # type: ignore[attr-defined]

    def answer(self, line: str) -> bytes:
        """As Asterisk: every SET VARIABLE takes ``200 result=1``; the verdict's is noted."""
        if line.startswith(SET_VERDICT):
            self.verdict = line[len(SET_VERDICT) :]
        return b"200 result=1\n"

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self.latency:
            self.done.set_result((self.latency, self.verdict))
        else:
            self.done.set_exception(exc or ConnectionError("closed without a command"))


async def one_screen(port: int, payload: bytes) -> tuple[float, str]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[float, str]] = loop.create_future()
    await loop.create_connection(lambda: AsteriskSide(payload, done), "127.0.0.1", port)
    return await done


class Load:
    def __init__(self, port: int, count: int, numbers: int) -> None:
        self.port = port
        self.template = recorded_header()
        self.rng = random.Random(7)
        self.numbers = numbers
        self.latencies: list[float] = []
        self.verdicts: dict[str, int] = {}
        self.errors = 0
        self.n = 0

    def payload(self) -> bytes:
        self.n += 1
        pick = self.rng.random()
        if pick < 0.7:  # a cached contact (one in ten of them spam)
            caller = number(self.rng.randrange(self.numbers))
        else:  # a caller the CRM does not know
            caller = f"8 (999) {self.rng.randrange(10**7):07d}"
        return request_for(self.template, caller, self.n)

    async def run_one(self) -> None:
        try:
            latency, verdict = await one_screen(self.port, self.payload())
        except OSError:
            self.errors += 1
            return
        self.latencies.append(latency)
        self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1

    async def closed_loop(self, concurrency: int, seconds: float) -> float:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await self.run_one()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(self.latencies) / (time.perf_counter() - t0)

    async def open_loop(self, rate: float, concurrency: int, seconds: float) -> float:
        sem = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()
        total = int(rate * seconds)

        async def guarded() -> None:
            async with sem:
                await self.run_one()

        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(guarded())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
        return len(self.latencies) / (time.perf_counter() - t0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


class Run(NamedTuple):
    """One load run."""

    latencies: list[float]  # seconds
    verdicts: dict[str, int]
    errors: int
    achieved: float  # screens/s
    client_cpu: float  # seconds of the client's CPU


async def run_python(port: int, args: argparse.Namespace, mode: str, rate: float) -> Run:
    await Load(port, 0, args.numbers).closed_loop(20, 0.5)  # warm-up
    load = Load(port, 0, args.numbers)
    cpu0 = time.process_time()
    if mode == "closed":
        achieved = await load.closed_loop(args.concurrency, args.seconds)
    else:
        achieved = await load.open_loop(rate, args.concurrency, args.seconds)
    return Run(load.latencies, load.verdicts, load.errors, achieved, time.process_time() - cpu0)


def host_ticks() -> tuple[int, int]:
    """(stolen, all) CPU ticks of this host so far (/proc/stat); (0, 0) where there is no such file.
    Steal is the time the hypervisor gave this VM's CPUs to others: a run with much of it measured a
    smaller machine than the figures suggest."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return (0, 0)
    return (fields[7] if len(fields) > 7 else 0, sum(fields))


def cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (or one of its threads) so far, from /proc."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """Seconds of CPU the server process has used; 0 where /proc cannot tell."""
    try:
        return cpu_s(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


async def measure(
    kind: str, port: int, args: argparse.Namespace, mode: str, rate: float = 0, pid: int = 0,
) -> dict[str, float]:
    steal0, all0 = host_ticks()
    cpu0 = server_cpu(pid)
    run = await run_python(port, args, mode, rate)
    steal1, all1 = host_ticks()
    cpu = server_cpu(pid) - cpu0  # includes the warm-up's few screens
    steal = 100 * (steal1 - steal0) / (all1 - all0) if all1 > all0 else 0.0
    if not run.latencies:
        raise SystemExit(f"{kind}: no screen completed ({run.errors} errors)")
    lat = run.latencies
    res = {
        "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat) * 1000, "mean": statistics.fmean(lat) * 1000,
        "rate": run.achieved, "n": len(lat), "errors": run.errors, "steal": steal,
        "cpu_us": cpu / len(lat) * 1e6,
    }
    label = "closed" if mode == "closed" else f"open@{rate:.0f}/s"
    verdicts = ", ".join(f"{k}={v}" for k, v in sorted(run.verdicts.items()))
    print(
        f"  {kind:9s} {label:10s}: p50 {res['p50']:.3f} ms  p99 {res['p99']:.3f} ms  max {res['max']:.1f} ms  "
        f"{res['rate']:,.0f} screens/s  n={res['n']} errors={res['errors']}  [{verdicts}]  "
        f"CPU µs/screen: server {res['cpu_us']:.0f}, client {run.client_cpu / len(lat) * 1e6:.0f}  "
        f"host steal {steal:.0f}%",
        flush=True,
    )
    return res


async def client(args: argparse.Namespace, db: Path) -> None:
    results: dict[tuple[str, str], dict[str, float]] = {}
    for kind, port in (("floor", args.port + 1), ("callguard", args.port)):
        proc = start_server(kind, port, db)
        try:
            results[(kind, "closed")] = await measure(kind, port, args, "closed", pid=proc.pid)
            results[(kind, "open")] = await measure(kind, port, args, "open", args.rate, pid=proc.pid)
            results[(kind, "light")] = await measure(kind, port, args, "open", args.light_rate, pid=proc.pid)
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    for mode in ("closed", "open", "light"):
        cg, floor = results[("callguard", mode)], results[("floor", mode)]
        print(
            f"ratio {mode}: callguard/floor p99 = {cg['p99'] / floor['p99']:.2f}x, "
            f"screens/s = {cg['rate'] / floor['rate']:.2f}x"
        )
    light = results[("callguard", "light")]
    print(
        f"at {args.light_rate:.0f}/s offered (below saturation): callguard p99 {light['p99']:.3f} ms, "
        f"floor p99 {results[('floor', 'light')]['p99']:.3f} ms"
    )
    cg_open, cg_closed = results[("callguard", "open")], results[("callguard", "closed")]
    floor_open, floor_light = results[("floor", "open")], results[("floor", "light")]
    for mode, rate in (("open", args.rate), ("light", args.light_rate)):  # could this client offer the rate?
        for kind in ("floor", "callguard"):
            got = results[(kind, mode)]["rate"]
            if got < 0.95 * rate:
                print(f"offered: {kind} at {rate:.0f}/s achieved only {got:,.0f}/s: the client (or host) is the limit")
    print(
        "targets: "
        f"p99 at {args.light_rate:.0f}/s ≤ 1 ms: {light['p99']:.3f} ms ({'met' if light['p99'] <= 1 else 'MISSED'}); "
        f"p99 at {args.rate:.0f}/s ≤ 2 ms: {cg_open['p99']:.3f} ms ({'met' if cg_open['p99'] <= 2 else 'MISSED'}); "
        f"p99 within 4x floor at {args.rate:.0f}/s: {cg_open['p99'] / floor_open['p99']:.2f}x "
        f"({'met' if cg_open['p99'] <= 4 * floor_open['p99'] else 'MISSED'}), at {args.light_rate:.0f}/s: "
        f"{light['p99'] / floor_light['p99']:.2f}x; "
        f"CPU/screen within 3x floor at {args.rate:.0f}/s: {cg_open['cpu_us']:.0f} vs {floor_open['cpu_us']:.0f} µs "
        f"({'met' if cg_open['cpu_us'] <= 3 * floor_open['cpu_us'] else 'MISSED'}); "
        f"closed loop {cg_closed['rate']:,.0f} screens/s; "
        f"host steal in the two open runs: callguard {cg_open['steal']:.0f}%, floor {floor_open['steal']:.0f}%"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--numbers", type=int, default=1_000_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--rate", type=float, default=2000.0, help="open-loop screens per second")
    p.add_argument("--light-rate", type=float, default=500.0, help="a second open-loop rate, below saturation")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--port", type=int, default=24573)
    p.add_argument("--serve", choices=["floor", "callguard"], help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    args = p.parse_args()
    from callguard.app import run_loop  # uvloop when installed, as `callguard run` uses

    if args.serve == "floor":
        run_loop(serve_floor(args.port))
        return
    if args.serve == "callguard":
        run_loop(serve_callguard(args.port, args.db))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite3"
        t0 = time.perf_counter()
        build_store(db, args.numbers)
        print(
            f"store: {args.numbers:,} cached numbers built in {time.perf_counter() - t0:.1f} s "
            f"({db.stat().st_size / 1e6:.0f} MB); {args.concurrency} sessions, {args.seconds:.0f} s per run, "
            f"cores={os.cpu_count()}",
            flush=True,
        )
        print("client (plays Asterisk): Python, asyncio callbacks", flush=True)
        run_loop(client(args, db))


if __name__ == "__main__":
    main()
