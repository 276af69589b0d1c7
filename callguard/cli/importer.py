"""``callguard import FILE``: local allow/block lists from CSV ``phone,action,note``.

``action`` is ``spam`` (or ``block``) or ``allow``. A header row is optional. Bad rows are reported with
their line number and skipped; good rows land in one transaction; a summary is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from callguard.config import Config
from callguard.phone import normalise
from callguard.store import Store
from callguard.textsafe import visible

_ACTIONS = {"spam": "block", "block": "block", "allow": "allow", "whitelist": "allow"}


@dataclass
class ImportResult:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def parse_csv(stream: TextIO, region: str = "RU", max_extension_digits: int = 5) -> ImportResult:
    """Pure: CSV text → good rows (E.164 or extension, allow|block, note) and (line, error) pairs."""
    result = ImportResult()
    reader = csv.reader(stream)
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not c.strip() for c in record) or record[0].lstrip().startswith("#"):
                continue
            if line == 1 and record[0].strip().lower() == "phone":
                continue
            if len(record) < 2:
                result.errors.append((line, "expected phone,action[,note]"))
                continue
            raw, action = record[0], record[1].strip().lower()
            note = ",".join(record[2:]).strip()
            if action not in _ACTIONS:
                result.errors.append((line, f"unknown action {record[1].strip()[:20]!r} (use spam or allow)"))
                continue
            phone = normalise(raw, region, max_extension_digits)
            if phone.key is None:
                result.errors.append((line, f"not a phone number: {raw.strip()[:40]!r} ({phone.kind.value})"))
                continue
            result.rows.append((phone.key, _ACTIONS[action], note[:500]))
    except csv.Error as e:
        result.errors.append((reader.line_num, f"CSV error: {e}"))
    return result


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import", help="load a CSV of phone,action,note into the local allow/block lists")
    p.add_argument("file", help="CSV file, or - for standard input")
    p.set_defaults(handler=handle)


async def _store_rows(cfg: Config, rows: list[tuple[str, str, str]]) -> dict[str, int]:
    store = await Store.open(cfg.store.path, cfg.store.busy_timeout_ms)
    try:
        await store.overrides.upsert_many(rows)
        return await store.overrides.count()
    finally:
        await store.close()


def handle(args: argparse.Namespace, cfg: Config) -> int:
    try:
        if args.file == "-":
            result = parse_csv(sys.stdin, cfg.phone.default_region, cfg.phone.max_extension_digits)
        else:
            with Path(args.file).open(encoding="utf-8-sig", newline="") as f:
                result = parse_csv(f, cfg.phone.default_region, cfg.phone.max_extension_digits)
    except (OSError, UnicodeDecodeError) as e:
        print(f"callguard: cannot read {args.file}: {e}", file=sys.stderr)
        return 1
    for line, error in result.errors:
        print(visible(f"{args.file}:{line}: skipped: {error}"), file=sys.stderr)
    totals = asyncio.run(_store_rows(cfg, result.rows)) if result.rows else {}
    print(
        f"imported {len(result.rows)} rows, skipped {len(result.errors)}; "
        f"lists now hold {totals.get('block', 0)} blocked and {totals.get('allow', 0)} allowed numbers"
    )
    return 0 if result.rows or not result.errors else 1
