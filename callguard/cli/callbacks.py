"""``callguard callbacks [--open] [--since 7d] [--json]``: each missed call's call-back, its state, who and
the times; ``callguard callbacks simulate CAPTURE``: the loop over a recorded AMI capture, no CRM touched.

States: waiting · assigned · handed on N× · attempted · reached · got through · closed in CRM · escalated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from callguard.ami.wire import parse_stream
from callguard.callbacks.simulate import simulate, timed_frames
from callguard.config import Config, parse_duration
from callguard.errors import ConfigError
from callguard.store import Store
from callguard.store.callbacks import CallbackRecord, Callbacks
from callguard.textsafe import dumps, visible


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("callbacks", help="missed calls and their call-backs: state, who, how fast")
    p.add_argument("--open", action="store_true", help="only call-backs still open")
    p.add_argument("--since", default="7d", help="misses this far back: 24h, 7d … (default 7d)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=handle)
    inner = p.add_subparsers(dest="callbacks_command", metavar="simulate")
    s = inner.add_parser("simulate", help="run the loop over a recorded AMI capture, pauses compressed")
    s.add_argument("capture", type=Path, help="an AMI capture: raw bytes (.ami.txt) or timed chunks (.ami.jsonl)")
    s.add_argument("--time-scale", type=float, default=60.0, help="divide the pause by this (default 60)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", dest="sim_json", help="one JSON object per step")
    s.set_defaults(handler=handle_simulate)


async def collect(cfg: Config, since_s: float, open_only: bool, now: float | None = None) -> list[CallbackRecord]:
    now = time.time() if now is None else now
    store = await Store.open(cfg.store.path, cfg.store.busy_timeout_ms)
    try:
        return await Callbacks(store.db).listing(now - since_s, open_only)
    finally:
        await store.close()


def label(rec: CallbackRecord) -> str:
    if rec.state == "handed_on":
        return f"handed on {rec.row.get('handoffs', 0)}×"
    return rec.state.replace("_", " ")


def _ago(value: Any, base: Any) -> str:
    return "-" if value is None or base is None else f"{float(value) - float(base):.0f}s"


def render(records: list[CallbackRecord], tz: str) -> str:
    from callguard.cli.stats import table

    zone = ZoneInfo(tz)
    rows = []
    for r in records:
        j = r.to_json()
        missed = datetime.fromtimestamp(float(j["missed_at"]), zone).strftime("%Y-%m-%d %H:%M")
        rows.append([missed, j["customer"], j["did"], label(r), j["manager"] or "-", j["by"] or "-",
                     _ago(j["first_attempt_at"], j["missed_at"]), _ago(j["first_talk_at"], j["missed_at"])])
    if not rows:
        return "no call-backs in the window"
    head = ["missed", "caller", "did", "state", "assigned", "by", "to attempt", "to talk"]
    return table(head, rows, numbers=False)


def handle(args: argparse.Namespace, cfg: Config) -> int:
    since = parse_duration(args.since, "--since")
    if since <= 0:
        raise ConfigError("must be longer than zero", "--since")
    records = asyncio.run(collect(cfg, since, args.open))
    if args.json:
        for r in records:
            print(dumps(r.to_json() | {"label": label(r)}))
    else:
        print("\n".join(visible(line) for line in render(records, cfg.hours.timezone).split("\n")))
    return 0


def load_capture(path: Path) -> list[tuple[float, dict[str, str]]]:
    """``.ami.jsonl`` = timed chunks ``{"t": s, "dir": "recv", "data": "…"}`` (the recorder's form); anything
    else = raw bytes read in one go (every frame at one time: the timers then run on the compressed clock)."""
    base = time.time()
    if path.suffix == ".jsonl":
        chunks = []
        for line in path.read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                if item.get("dir", "recv") == "recv":
                    chunks.append((float(item.get("t", 0.0)), str(item.get("data", "")).encode("latin-1")))
        return timed_frames(chunks, base)
    return [(base, f) for f in parse_stream(path.read_bytes())[1]]


def handle_simulate(args: argparse.Namespace, cfg: Config) -> int:
    cb_cfg = getattr(cfg, "callback", None)
    if cb_cfg is None or not cb_cfg.managers:
        raise ConfigError("simulate needs [[callback.managers]] in the config", "callback.managers")
    if args.time_scale <= 0:
        raise ConfigError("must be positive", "--time-scale")
    steps = simulate(load_capture(args.capture), cfg, cb_cfg, time_scale=args.time_scale, seed=args.seed)
    t0 = steps[0].at if steps else 0.0
    for s in steps:
        if args.sim_json:
            print(dumps(s.to_json()))
            continue
        acts = ", ".join(f"{a.kind}{'→' + a.manager if a.manager else ''}{' ' + a.detail if a.detail else ''}"
                         for a in s.actions)
        print(visible(f"+{s.at - t0:8.1f}s {s.key} {s.cause:<16} {s.state:<13} {s.manager or '-':<8} {acts}"))
    if not steps:
        print("no missed calls and no call-backs in the capture")
    return 0
