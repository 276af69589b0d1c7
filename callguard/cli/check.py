"""``callguard check NUMBER [--did DID] [--json]``: the verdict a call would get now, and why."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from callguard.cli.storeopen import open_store
from callguard.config import Config
from callguard.screening.rules import parse_schedule
from callguard.screening.screener import ScreenService
from callguard.textsafe import dumps, visible


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="show the verdict for a caller number and why")
    p.add_argument("number", help="caller ID as Asterisk would send it")
    p.add_argument("--did", default="", help="the number dialled (for business hours per DID)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=handle)


async def check(cfg: Config, number: str, did: str) -> dict[str, Any]:
    store = await open_store(cfg, readonly=True)  # reads only: never creates a store
    try:
        screener = ScreenService(cfg, store, parse_schedule(cfg.hours, cfg.phone.default_region))
        return await screener.explain(number, did)
    finally:
        await store.close()


def render(result: dict[str, Any]) -> str:
    """The human form. Every field may hold CRM data (a contact name above all): shown through visible()."""
    v = visible
    lines = [f"number:     {v(repr(result['input']))} → {v(result['normalised'] or '-')} ({v(result['kind'])})"]
    if result["did"]:
        lines.append(f"did:        {v(result['did'])}")
    lines += [f"verdict:    {v(result['verdict'])}", f"reason:     {v(result['reason'])}"]
    contact = result["contact"]
    if isinstance(contact, dict):
        lines.append(f"contact:    #{v(contact['id'])} {v(contact['name'])} (owner {v(contact['owner'] or '-')}, "
                     f"{v(contact['source'])}{', flagged spam' if contact['spam'] else ''})")
    return "\n".join(lines)


def handle(args: argparse.Namespace, cfg: Config) -> int:
    result = asyncio.run(check(cfg, args.number, args.did))
    if args.json:
        print(dumps(result))
        return 0
    print(render(result))
    return 0
