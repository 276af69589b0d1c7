"""``callguard sync [--full]``: one CRM sync now, and what it changed in the numbers cache."""

from __future__ import annotations

import argparse

from callguard.app import run_loop
from callguard.config import Config
from callguard.crm import build_crm
from callguard.errors import EXIT_CONFIG, EXIT_FAILURE
from callguard.store import Store
from callguard.sync import SyncReport, SyncService


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sync", help="sync the numbers cache from the CRM once and print what changed")
    p.add_argument("--full", action="store_true", help="full resync (also purges what the CRM no longer has)")
    p.set_defaults(handler=handle)


async def sync_once(cfg: Config, full: bool) -> tuple[SyncReport | None, str | None, tuple[int, int]]:
    store = await Store.open(cfg.store.path, cfg.store.busy_timeout_ms)
    try:
        crm = build_crm(cfg, store)
        if crm is None:
            return None, "crm.kind is 'none': nothing to sync (local lists only)", (0, 0)
        svc = SyncService(cfg, store, crm)
        try:
            report = await svc.run_once(force_full=full)
        finally:
            await crm.close()
        return report, svc.last_error, await store.numbers.count()
    finally:
        await store.close()


def handle(args: argparse.Namespace, cfg: Config) -> int:
    report, error, (phones, spam) = run_loop(sync_once(cfg, args.full))
    if report is None:
        print(f"sync failed: {error}" if cfg.crm.kind != "none" else error)
        return EXIT_FAILURE if cfg.crm.kind != "none" else EXIT_CONFIG  # the config has no CRM to sync
    print(report.summary())
    print(f"cache: {phones} phone numbers, {spam} flagged spam")
    return 0
