"""The full sync: page through every contact, resumable, then purge what the CRM no longer has.

Kept apart from ``sync`` for size; ``SyncService.full`` calls ``run_full``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

from callguard.sync import CLOCK_SKEW, SyncReport

if TYPE_CHECKING:
    from callguard.sync import SyncService

log = structlog.get_logger("callguard.sync")

# Above this many purge candidates we do not re-read each one by id (too many requests at 7 rps): a
# CRM that lost that many contacts did so on purpose.
MAX_RECHECK = 5000


async def run_full(svc: SyncService) -> SyncReport:
    report = SyncReport("full")
    t0 = time.monotonic()
    state = await svc.store.sync_state.get(svc.source)
    if state.full_page and state.full_started_at:
        started, token, report.resumed = state.full_started_at, state.full_page, True
        log.info("sync_full_resumed", crm=svc.source, page=token)
    else:
        started, token = svc.clock(), None
        await svc.store.sync_state.update(svc.source, full_started_at=started, full_page="")
    # One page in flight while the previous one is written: the CRM's latency overlaps our work.
    pending = asyncio.create_task(svc.crm.list_page(token))
    try:
        while True:
            page = await pending
            token = page.next_token
            if token is not None:
                pending = asyncio.create_task(svc.crm.list_page(token))
            await svc._write_page(report, page.contacts, (), full_page=token or "")
            if token is None:
                break
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
    await _recheck(svc, report, started)
    async with svc._lock, svc.store.db.write() as conn:
        report.purged = await svc.store.numbers.purge_older(conn, svc.source, started)
        now = svc.clock()
        values: dict[str, str | float] = {"full_page": "", "full_started_at": 0.0, "last_full_at": now,
                                          "last_sync_at": now}
        if not state.cursor:
            # Changes made while we paged are caught by the first incremental run from here.
            values["cursor"] = svc.crm.cursor_at(started - CLOCK_SKEW)
        await svc.store.sync_state.update_in(conn, svc.source, **values)
    report.seconds = time.monotonic() - t0
    log.info("sync_done", crm=svc.source, kind="full", contacts=report.contacts, pages=report.pages,
             phones_added=report.added, phones_removed=report.removed, changed=report.changed,
             purged=report.purged, seconds=round(report.seconds, 1))
    return report


async def _recheck(svc: SyncService, report: SyncReport, started: float) -> None:
    """Offset paging (amoCRM) can skip a live contact when another is deleted mid-run: re-read the
    purge candidates by id and rewrite the ones that still exist, so only the truly gone are purged."""
    if getattr(svc.crm, "stable_paging", False):
        return
    candidates = await svc.store.numbers.contacts_older(svc.source, started, MAX_RECHECK + 1)
    if not candidates or len(candidates) > MAX_RECHECK:
        return
    alive = await svc.crm.get_contacts(candidates)
    if alive:
        log.info("sync_full_recovered_skipped", crm=svc.source, contacts=len(alive))
        await svc._write_page(report, alive, ())
        report.pages -= 1
