"""Benchmark (not a test): a missed call's last hang-up → its lead acknowledged by the sink, p50/p99.

A fake Asterisk (tests/fakes/asterisk_ami.py) sends N missed calls over loopback AMI, one after another
(s04's recorded events, channel ids made unique), each ``--gap`` ms apart. In process: AmiClient →
CallFlow (tracker, one transaction call row + outbox item) → OutboxWorker → the sink: a webhook receiver
answering 200, or the amoCRM fake (tests/fakes/amocrm.py, unsorted mode; callguard's limiter at its max,
100 rps, the fake's raised). Timed from the moment the fake wrote the call's last ``Hangup`` to the
outbox's ``mark_sent`` (the sink acknowledged and the store says sent). ``--sink log`` is the leads file
(one fdatasync'd line a lead), ``bitrix24`` the Bitrix24 fake (callguard's limiter and the fake's raised).

    python scripts/bench_leads.py [--calls 1000] [--sink webhook|amocrm|bitrix24|log] [--gap 5]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web

from callguard.ami.client import AmiClient
from callguard.calls.recorder import CallFlow
from callguard.calls.tracker import CallTracker
from callguard.config import Config
from callguard.leads.outbox import OutboxWorker
from callguard.leads.sinks import build_sink
from callguard.store import Store
from tests.crm_support import amo_config, b24_config
from tests.fakes.asterisk_ami import FakeAsterisk, Script, frames, loopback_cfg, relabel

SCENARIO = "s04_caller_abandon"


def call_bytes(tag: str) -> tuple[str, bytes, bytes]:
    """(linkedid, every event but the last Hangup, the last Hangup)."""
    frs = [f for f in relabel(frames(SCENARIO), tag) if f.get("Event") not in (None, "FullyBooted")]
    enc = [("".join(f"{k}: {v}\r\n" for k, v in f.items()) + "\r\n").encode() for f in frs]
    last = max(i for i, f in enumerate(frs) if f.get("Event") == "Hangup")
    lid = next(f["Linkedid"] for f in frs if f.get("Linkedid"))
    return lid, b"".join(enc[:last] + enc[last + 1:]), enc[last]


async def receiver() -> tuple[web.AppRunner, int]:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": request.headers.get("Idempotency-Key", "")})

    app = web.Application()
    app.router.add_post("/lead", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def run(calls: int, sink: str, gap_ms: float, tmp: Path) -> list[float]:
    fake_crm: Any = None
    runner = None
    if sink == "amocrm":
        from tests.fakes.amocrm import FakeAmo

        fake_crm = FakeAmo(rps=100_000)
        await fake_crm.start()
        cfg = amo_config(tmp, f"http://127.0.0.1:{fake_crm.port}", rate_rps=100.0)
        cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, sink="crm"))
    elif sink == "bitrix24":
        from tests.fakes.bitrix24 import FakeBitrix

        fake_crm = FakeBitrix(rate=100_000.0, burst=100_000)
        await fake_crm.start()
        cfg = b24_config(tmp, f"http://127.0.0.1:{fake_crm.port}", rate_rps=100.0, rate_burst=100)
        cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, sink="crm"))
    elif sink == "log":
        base = Config()
        outbox = dataclasses.replace(base.outbox, sink="log", log_file=str(tmp / "leads.jsonl"))
        cfg = dataclasses.replace(base, store=dataclasses.replace(base.store, path=tmp / "cg.sqlite3"), outbox=outbox)
    else:
        runner, port = await receiver()
        base = Config()
        cfg = dataclasses.replace(base, store=dataclasses.replace(base.store, path=tmp / "cg.sqlite3"),
                                  outbox=dataclasses.replace(base.outbox, sink="webhook", webhook=dataclasses.replace(
                                      base.outbox.webhook, url=f"http://127.0.0.1:{port}/lead")))
    fake = await FakeAsterisk([Script()], astdb={}).start()
    cfg = loopback_cfg(cfg, fake.port)
    cfg = dataclasses.replace(cfg, missed=dataclasses.replace(cfg.missed, dedupe_window=0))
    store = await Store.open(cfg.store.path)
    worker = OutboxWorker(cfg, store, build_sink(cfg, store))
    flow = CallFlow(CallTracker(cfg), store, on_lead=worker.wake)
    client = AmiClient(cfg.ami, flow.on_event, flow.on_link_lost, flow.resync)
    hung: dict[str, float] = {}
    acked: dict[str, float] = {}
    done = asyncio.Event()
    mark_sent = store.outbox.mark_sent

    async def timed_mark_sent(linkedid: str, *a: Any, **kw: Any) -> Any:
        out = await mark_sent(linkedid, *a, **kw)
        acked[linkedid] = time.perf_counter()
        if len(acked) == calls:
            done.set()
        return out

    store.outbox.mark_sent = timed_mark_sent  # type: ignore[method-assign]
    for part in (worker, flow, client):
        await part.start()
    async with asyncio.timeout(10):
        while not fake._writers:  # noqa: ASYNC110 (set-up only)
            await asyncio.sleep(0.01)
    writer = next(iter(fake._writers))
    for i in range(calls):
        lid, body, last = call_bytes(f"-b{i}")
        writer.write(body)
        writer.write(last)
        hung[lid] = time.perf_counter()  # the last hang-up left "Asterisk"
        await writer.drain()
        await asyncio.sleep(gap_ms / 1000)
    async with asyncio.timeout(600):
        await done.wait()
    for part in (client, flow, worker):
        await part.stop()
    await store.close()
    await fake.stop()
    if runner is not None:
        await runner.cleanup()
    if fake_crm is not None:
        await fake_crm.close()
    return sorted((acked[lid] - hung[lid]) * 1000 for lid in hung)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--sink", choices=["webhook", "amocrm", "bitrix24", "log"], default="webhook")
    ap.add_argument("--gap", type=float, default=5.0, help="ms between calls")
    args = ap.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        ms = asyncio.run(run(args.calls, args.sink, args.gap, Path(tmp)))
    n = len(ms)
    print(f"sink={args.sink} calls={n} gap={args.gap}ms load={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}")
    print(f"hang-up → acknowledged: p50 {ms[n // 2]:.2f} ms  p99 {ms[min(n - 1, int(n * 0.99))]:.2f} ms  "
          f"max {ms[-1]:.2f} ms")


if __name__ == "__main__":
    main()
