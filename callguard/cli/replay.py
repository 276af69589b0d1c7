"""``callguard replay FILE [--json]``: why did this call (not) make a lead?

Feeds a raw AMI capture through the same tracker the service runs, without the store or the CRM, and
prints one line (or JSON object) per call. FILE is the bytes Asterisk sent on an AMI connection (the
``*.ami.txt`` trace format, e.g. ``tcpdump``/``ngrep`` output of port 5038 reassembled, or a recorder's
dump), or a ``*.jsonl`` recording with timestamps (``{"t", "dir", "data"}``) for real wait times. A raw
capture has no clock unless Asterisk ran with ``timestampevents=yes``; wait_s is then 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from callguard.ami.wire import BANNER_PREFIX, FrameFeeder
from callguard.calls.tracker import CallOutcome, CallTracker
from callguard.config import Config
from callguard.errors import EXIT_FAILURE, EXIT_OK, AmiProtocolError
from callguard.textsafe import dumps, visible


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("replay", help="replay an AMI capture through the call tracker, one line per call")
    p.add_argument("file", help="AMI capture (*.ami.txt bytes, or *.jsonl with timestamps); - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON object per call")
    p.set_defaults(handler=handle)


def _chunks(path: str) -> list[tuple[float, bytes]]:
    if path == "-":
        return [(0.0, sys.stdin.buffer.read())]
    data = Path(path).read_bytes()
    if path.endswith(".jsonl"):
        out = []
        for line in data.decode().splitlines():
            rec = json.loads(line)
            if rec.get("dir", "recv") == "recv":
                out.append((float(rec["t"]), rec["data"].encode("latin-1")))
        return out
    return [(0.0, data)]


def replay(cfg: Config, chunks: list[tuple[float, bytes]]) -> tuple[list[CallOutcome], int]:
    """(outcomes in the order calls ended, bad frames skipped); calls open at the end come last."""
    tracker = CallTracker(cfg)
    first = chunks[0][1] if chunks else b""
    feeder = FrameFeeder(expect_banner=first.startswith(BANNER_PREFIX.encode()))
    out: list[CallOutcome] = []
    t = 0.0
    for t, chunk in chunks:
        for frame in feeder.feed(chunk):
            out.extend(tracker.feed(frame, t))
    out.extend(tracker.drain(t, reason="no_end_in_capture"))
    return out, feeder.bad_frames


def as_json(o: CallOutcome) -> dict[str, object]:
    return {"linkedid": o.linkedid, "uniqueid": o.uniqueid, "caller": o.caller, "did": o.did,
            "verdict": o.verdict, "outcome": o.outcome.value, "reason": o.reason, "wait_s": o.wait_s,
            "lead": o.is_lead}


def as_line(o: CallOutcome) -> str:
    lead = "LEAD" if o.is_lead else "no lead"
    return (f"{o.linkedid}  caller={o.caller}  did={o.did}  {o.outcome.value}  reason={o.reason}  "
            f"wait_s={o.wait_s:g}  verdict={o.verdict or '-'}  {lead}")


def handle(args: argparse.Namespace, cfg: Config) -> int:
    try:
        outcomes, bad = replay(cfg, _chunks(args.file))
    except (OSError, ValueError, KeyError, AmiProtocolError) as e:
        print(f"callguard: cannot replay {args.file}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    for o in outcomes:
        print(dumps(as_json(o)) if args.json else visible(as_line(o)))  # caller IDs are the caller's to set
    if bad:
        print(f"callguard: {bad} unparseable AMI frame(s) skipped", file=sys.stderr)
    if not outcomes:
        print("callguard: no inbound call in this capture (check ami.inbound_contexts)", file=sys.stderr)
    return EXIT_OK
