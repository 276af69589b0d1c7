"""``callguard outbox list | retry ID | drop ID``: the missed calls the lead sink has not taken.

``list`` shows dead letters by default (``--state pending|sending|sent|all``); ``retry`` puts a dead
letter back in the queue with a fresh attempt budget (the running service picks it up within its poll
interval); ``drop`` deletes a dead letter for good. ID is the call's Linkedid.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime

from callguard.config import Config
from callguard.errors import EXIT_FAILURE, EXIT_OK
from callguard.store import Store
from callguard.store.outbox import OutboxItem
from callguard.textsafe import dumps, visible


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("outbox", help="list, retry or drop undelivered missed-call leads")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="show outbox items (dead letters by default)")
    ls.add_argument("--state", default="dead", choices=["dead", "pending", "sending", "sent", "all"])
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true", help="one JSON object per item")
    for verb, text in (("retry", "send a dead letter again"), ("drop", "delete a dead letter")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("linkedid", metavar="ID", help="the call's Linkedid (see `outbox list`)")
    p.set_defaults(handler=handle)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _line(i: OutboxItem) -> str:
    p = i.payload
    return (f"{i.linkedid}  {i.state}  attempts={i.attempts}  caller={p.get('caller', '')}  "
            f"did={p.get('did', '')}  reason={p.get('reason', '')}  created={_when(i.created_at)}Z  "
            f"ref={i.crm_ref or '-'}  error={i.last_error or '-'}")


async def _run(cfg: Config, args: argparse.Namespace) -> int:
    store = await Store.open(cfg.store.path, cfg.store.busy_timeout_ms)
    try:
        if args.verb == "list":
            items = await store.outbox.listing(None if args.state == "all" else args.state, args.limit)
            for i in items:
                print(dumps(_as_dict(i)) if args.json else visible(_line(i)))  # payloads hold CRM names
            if not items and not args.json:
                print(f"no {args.state} items" if args.state != "all" else "outbox is empty")
            return EXIT_OK
        done = await (store.outbox.retry(args.linkedid, time.time()) if args.verb == "retry"
                      else store.outbox.drop(args.linkedid))
    finally:
        await store.close()
    if not done:
        print(f"callguard: no dead letter with Linkedid {args.linkedid!r}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.verb}: {args.linkedid}" + (" (queued for delivery)" if args.verb == "retry" else " (deleted)"))
    return EXIT_OK


def _as_dict(i: OutboxItem) -> dict[str, object]:
    return {"linkedid": i.linkedid, "state": i.state, "attempts": i.attempts, "next_at": i.next_at,
            "last_error": i.last_error, "ref": i.crm_ref, "created_at": i.created_at, "payload": i.payload}


def handle(args: argparse.Namespace, cfg: Config) -> int:
    return asyncio.run(_run(cfg, args))
