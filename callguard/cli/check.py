"""``callguard check NUMBER [--did DID] [--json]``: the verdict a call would get now, and why."""

from __future__ import annotations

import argparse
import asyncio
import json

from callguard.config import Config
from callguard.screen_service import ScreenService
from callguard.screening import parse_schedule
from callguard.store import Store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="show the verdict for a caller number and why")
    p.add_argument("number", help="caller ID as Asterisk would send it")
    p.add_argument("--did", default="", help="the number dialled (for business hours per DID)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=handle)


async def check(cfg: Config, number: str, did: str) -> dict[str, object]:
    store = await Store.open(cfg.store.path, cfg.store.busy_timeout_ms)
    try:
        screener = ScreenService(cfg, store, parse_schedule(cfg.hours, cfg.phone.default_region))
        return await screener.explain(number, did)
    finally:
        await store.close()


def handle(args: argparse.Namespace, cfg: Config) -> int:
    result = asyncio.run(check(cfg, args.number, args.did))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"number:     {result['input']!r} → {result['normalised'] or '-'} ({result['kind']})")
    if result["did"]:
        print(f"did:        {result['did']}")
    print(f"verdict:    {result['verdict']}")
    print(f"reason:     {result['reason']}")
    contact = result["contact"]
    if isinstance(contact, dict):
        print(f"contact:    #{contact['id']} {contact['name']} (owner {contact['owner'] or '-'}, "
              f"{contact['source']}{', flagged spam' if contact['spam'] else ''})")
    return 0
