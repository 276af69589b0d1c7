"""``callguard reconcile --since 2h [--dry-run] [--json]``: Asterisk's call records against the store.

Connects to AMI as the service does (``AmiClient``, the same user and rights: ``write = reporting``), reads
the shipped hangup handler's AstDB records of the calls that ended in the window (``DBGetTree`` per hour
bucket) and the channels up now (``CoreShowChannels``: those calls are not over), compares them call by
call with the store, and prints for each what callguard has and what it would create. Without
``--dry-run`` it creates them, exactly as the service's own reconcile does after a gap (one transaction per
call keyed by Linkedid, the lead marked reconciled), so running it beside the service is harmless.
Everything printed comes from outside (caller IDs, DIDs) and is escaped (textsafe).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from callguard.ami.client import AmiClient
from callguard.calls import resync
from callguard.calls.reconcile import Action, Plan, Rules, plan
from callguard.calls.recorder import write_outcome
from callguard.calls.records import CallRecord, Rejected
from callguard.cli.storeopen import open_store
from callguard.config import Config, parse_duration
from callguard.errors import EXIT_FAILURE, EXIT_OK, AmiError
from callguard.store import Store
from callguard.textsafe import dumps, visible

MARGIN = 120.0
READ_TIMEOUT = 60.0  # a week of buckets on a busy PBX


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("reconcile", help="compare Asterisk's call records with callguard's; create what is missing")
    p.add_argument("--since", default="2h", help="how far back (e.g. 30m, 2h, 3d; at most about a week)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be created")
    p.add_argument("--json", action="store_true", help="one JSON object per call")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, cfg: Config) -> int:
    since = time.time() - parse_duration(args.since, "--since")
    return asyncio.run(run(cfg, since, dry_run=args.dry_run, as_json=args.json))


Fetched = tuple[list[CallRecord], list[Rejected], set[str]]


async def fetch(cfg: Config, since: float, now: float) -> Fetched:
    """(records, rejected, Linkedids of calls up now) over one AMI session."""
    got: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()

    async def on_connected(client: AmiClient) -> None:
        try:
            channels = await resync.read_channels(client.request)
            records, rejected = await resync.read_records(client.request, since, now + MARGIN)
        except (AmiError, TimeoutError) as e:
            if not got.done():
                got.set_exception(AmiError(str(e) or type(e).__name__))
            return
        if not got.done():
            got.set_result((records, rejected, {c.get("Linkedid", "") for c in channels}))

    client = AmiClient(cfg.ami, lambda frame, at: None, on_connected=on_connected)
    await client.start()
    try:
        async with asyncio.timeout(float(cfg.ami.connect_timeout) + READ_TIMEOUT):
            return await got
    except TimeoutError:
        error = client.last_error or "timeout"
        raise AmiError(f"no answer from AMI at {cfg.ami.host}:{cfg.ami.port}: {error}") from None
    finally:
        await client.stop()


async def run(cfg: Config, since: float, *, dry_run: bool, as_json: bool) -> int:
    if not cfg.ami.secret:
        print("callguard: ami.secret is empty (CALLGUARD_AMI_SECRET)")
        return EXIT_FAILURE
    now = time.time()
    records, rejected, up = await fetch(cfg, since, now)
    store = await open_store(cfg, readonly=dry_run)
    try:
        have = await store.calls.recorded(sorted({r.linkedid for r in records}))
        rules = Rules(float(cfg.missed.min_ring_seconds), cfg.phone.default_region, cfg.phone.max_extension_digits)
        result = plan(records, have.settled, up, rules=rules, since=since, rejected=rejected, lost=have.lost)
        created = 0 if dry_run else await create(store, result)
    finally:
        await store.close()
    report(result, dry_run, as_json, created)
    return EXIT_OK


async def create(store: Store, result: Plan) -> int:
    made = 0
    for d in result.decisions:
        if d.action is Action.CREATE:
            made += await write_outcome(store, d.outcome, True, time.time())
    return made


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def report(result: Plan, dry_run: bool, as_json: bool, created: int) -> None:
    for d in result.decisions:
        o = d.outcome
        doing = ("would create" if dry_run else "created") if d.action is Action.CREATE else d.action.value
        lead = "lead" if d.is_lead else "no lead"
        if as_json:
            print(dumps({"linkedid": o.linkedid, "ended_at": o.ended_at, "caller": o.caller, "did": o.did,
                         "outcome": o.outcome.value, "reason": o.reason, "wait_s": o.wait_s,
                         "action": d.action.value, "lead": d.is_lead, "why": d.why}))
        else:
            print(f"{_when(o.ended_at)}  {visible(o.linkedid):<22} {visible(o.caller):<16} {visible(o.did):<12} "
                  f"{o.outcome.value:<8} {o.reason:<20} {doing} ({lead}: {d.why})")
    for bad in result.rejected:
        print(dumps({"rejected": bad.key, "why": bad.why}) if as_json else
              f"rejected  {visible(bad.key)}: {bad.why}")
    leads = sum(d.is_lead for d in result.decisions)
    if not as_json:
        verb = "would create" if dry_run else "created"
        print(f"{len(result.decisions)} calls in Asterisk's records; {verb} "
              f"{len(result.to_create) if dry_run else created} ({leads} leads); {len(result.rejected)} rejected")
