"""``callguard list`` · ``remove NUMBER`` · ``export FILE``: the local allow/block lists from a shell.

``import`` (callguard.cli.importer) fills them; these read them back, take a number off, and write them
out in the CSV that ``import`` reads. ``list`` and ``export`` only read, so they never create a store;
``remove`` refuses a missing store too (there is nothing to remove from).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from callguard.cli.stats import table
from callguard.cli.storeopen import open_store
from callguard.config import Config
from callguard.listfile import to_csv
from callguard.phone import normalise
from callguard.store.overrides import Override
from callguard.textsafe import dumps, visible

LIST_LIMIT = 1000


def _action(args: argparse.Namespace) -> str | None:
    return "block" if args.spam else "allow" if args.allow else None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("list", help="show the local allow/block lists (search, filter)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--spam", action="store_true", help="only the blocked numbers")
    which.add_argument("--allow", action="store_true", help="only the allowed numbers")
    p.add_argument("--search", default="", metavar="S", help="numbers or notes containing S")
    p.add_argument("--limit", type=int, default=LIST_LIMIT, help=f"at most this many rows (default {LIST_LIMIT})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=handle_list)

    p = sub.add_parser("remove", help="take a number off the local allow/block lists")
    p.add_argument("number", help="the number as listed, in any usual format")
    p.set_defaults(handler=handle_remove)

    p = sub.add_parser("export", help="write the local allow/block lists as CSV (what import reads)")
    p.add_argument("file", help="CSV file to write, or - for standard output")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--spam", action="store_true", help="only the blocked numbers")
    which.add_argument("--allow", action="store_true", help="only the allowed numbers")
    p.set_defaults(handler=handle_export)


async def _search(cfg: Config, text: str, action: str | None, limit: int) -> tuple[list[Override], int]:
    store = await open_store(cfg, readonly=True)
    try:
        return await store.overrides.search(text, action, limit=max(1, limit))
    finally:
        await store.close()


def handle_list(args: argparse.Namespace, cfg: Config) -> int:
    rows, matching = asyncio.run(_search(cfg, args.search, _action(args), args.limit))
    if args.json:
        print(dumps({"matching": matching, "rows": [
            {"phone": r.phone, "action": r.action, "note": r.note, "created_at": r.created_at} for r in rows]}))
        return 0
    tz = ZoneInfo(cfg.hours.timezone)
    if rows:
        lines = table(["number", "list", "added", "note"], [
            [r.phone, "blocked" if r.action == "block" else "allowed",
             datetime.fromtimestamp(r.created_at, tz).strftime("%Y-%m-%d %H:%M"), r.note or "-"] for r in rows
        ], numbers=False)
        print("\n".join(visible(line) for line in lines.split("\n")))
    shown = f"{len(rows)} of {matching}" if matching > len(rows) else f"{matching}"
    print(f"{shown} numbers" + (visible(f" matching {args.search!r}") if args.search else ""))
    return 0


def lookup_key(cfg: Config, number: str) -> str:
    """The store key for a number typed in any usual format; as typed when it is no number at all."""
    return normalise(number, cfg.phone.default_region, cfg.phone.max_extension_digits).key or number.strip()


async def _remove(cfg: Config, key: str) -> tuple[bool, dict[str, int]]:
    store = await open_store(cfg, readonly=True)
    try:
        removed = await store.overrides.delete(key)
        return removed, await store.overrides.count()
    finally:
        await store.close()


def handle_remove(args: argparse.Namespace, cfg: Config) -> int:
    key = lookup_key(cfg, args.number)
    removed, totals = asyncio.run(_remove(cfg, key))
    state = f"lists now hold {totals.get('block', 0)} blocked and {totals.get('allow', 0)} allowed numbers"
    if not removed:
        print(visible(f"callguard: {key} is not in the lists; {state}"), file=sys.stderr)
        return 1
    print(visible(f"removed {key}; {state}"))
    return 0


async def _export(cfg: Config, action: str | None, out: Path | None) -> int:
    store = await open_store(cfg, readonly=True)
    n = 0
    try:
        rows = [(r.phone, r.action, r.note) async for r in store.overrides.iterate(action)]
    finally:
        await store.close()
    text = "".join(to_csv(rows))
    n = len(rows)
    if out is None:
        sys.stdout.write(text)
    else:
        # With a BOM, so Excel opens the UTF-8 as UTF-8; written beside and renamed: never half a file.
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8-sig", newline="")
        tmp.replace(out)
    return n


def handle_export(args: argparse.Namespace, cfg: Config) -> int:
    out = None if args.file == "-" else Path(args.file)
    try:
        n = asyncio.run(_export(cfg, _action(args), out))
    except OSError as e:
        print(visible(f"callguard: cannot write {args.file}: {e.strerror or e}"), file=sys.stderr)
        return 1
    print(visible(f"exported {n} numbers to {args.file if out else 'standard output'}"), file=sys.stderr)
    return 0
