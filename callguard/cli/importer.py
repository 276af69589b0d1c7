"""``callguard import FILE [--allow-internal]``: local allow/block lists from CSV ``phone,action,note``.

``action`` is ``spam`` (or ``block``) or ``allow``. A header row is optional; ``;`` or ``,`` (or tab)
separated, UTF-8 with or without BOM, UTF-16, or Windows-1251 (a Russian Excel's "CSV"), all detected
(callguard.listfile). Bad rows are reported with their line number and skipped; good rows land in one
transaction; the summary gives the totals the store holds afterwards, read back from it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from callguard.cli.storeopen import open_store
from callguard.config import Config
from callguard.listfile import ImportResult, ListFileError, parse, parse_bytes
from callguard.textsafe import visible

__all__ = ["ImportResult", "parse_csv", "register"]


def parse_csv(stream: TextIO, region: str = "RU", max_extension_digits: int = 5,
              allow_internal: bool = False) -> ImportResult:
    """Pure: CSV text → good rows (E.164 or extension, allow|block, note) and (line, error) pairs."""
    return parse(stream.read(), region, max_extension_digits, allow_internal)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import", help="load a CSV of phone,action,note into the local allow/block lists")
    p.add_argument("file", help="CSV file (; or , separated, UTF-8 or Windows-1251), or - for standard input")
    p.add_argument("--allow-internal", action="store_true",
                   help="accept internal extensions (phone.max_extension_digits digits or fewer)")
    p.set_defaults(handler=handle)


async def _store_rows(cfg: Config, rows: list[tuple[str, str, str]]) -> dict[str, int] | None:
    """Write the rows; the totals as the store holds them after. With nothing to write an existing store
    is only counted and a missing one is not created (None)."""
    if not rows and not _exists(cfg):
        return None
    store = await open_store(cfg, readonly=not rows)
    try:
        if rows:
            await store.overrides.upsert_many(rows)
        return await store.overrides.count()
    finally:
        await store.close()


def _exists(cfg: Config) -> bool:
    return str(cfg.store.path) == ":memory:" or Path(cfg.store.path).exists()


def _read(args: argparse.Namespace, cfg: Config) -> ImportResult:
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    return parse_bytes(data, cfg.phone.default_region, cfg.phone.max_extension_digits, args.allow_internal)


def summary(result: ImportResult, totals: dict[str, int] | None, where: str) -> str:
    head = f"imported {len(result.rows)} rows, skipped {result.skipped}"
    if totals is None:
        return f"{head}; no store at {where} yet (nothing was written)"
    return (f"{head}; lists now hold {totals.get('block', 0)} blocked and {totals.get('allow', 0)} "
            f"allowed numbers")


def handle(args: argparse.Namespace, cfg: Config) -> int:
    try:
        result = _read(args, cfg)
    except (OSError, ListFileError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(visible(f"callguard: cannot read {args.file}: {reason}"), file=sys.stderr)
        return 1
    if result.encoding != "utf-8" or result.delimiter != ",":
        sep = {";": "semicolon", ",": "comma", "\t": "tab"}[result.delimiter]
        print(f"callguard: read {args.file} as {result.encoding}, {sep}-separated", file=sys.stderr)
    for line, error in result.errors:
        print(visible(f"{args.file}:{line}: skipped: {error}"), file=sys.stderr)
    if result.more_errors:
        print(f"{args.file}: {result.more_errors} more rows skipped", file=sys.stderr)
    if any("internal extension" in e for _, e in result.errors):
        print("callguard: internal extensions were skipped; pass --allow-internal to list them", file=sys.stderr)
    totals = asyncio.run(_store_rows(cfg, result.rows))
    print(summary(result, totals, str(cfg.store.path)))
    if not result.rows and not result.errors:
        print(visible(f"callguard: no rows found in {args.file} (expected phone,action[,note])"), file=sys.stderr)
    return 0 if result.rows else 1
