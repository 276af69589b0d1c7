"""Keep the ``numbers`` cache in step with the CRM: full sync, incremental sync, webhook refreshes.

- Full sync pages through every contact; each page's rows and its resume point commit in one
  transaction, so a crash resumes from the last page written. Every row it writes gets
  ``updated_at = now``; at the end rows older than the full sync's start belong to contacts or phones
  the CRM no longer has and are purged. Where paging is by offset (amoCRM), a contact deleted mid-run
  shifts pages and could hide a live contact, so the purge candidates are re-read by id first.
- Incremental sync follows the CRM's change cursor every ``sync.interval``.
- Webhooks are hints: ``hint(ids)`` queues contact ids; a worker re-reads them through the API and
  replaces or removes their rows.
Each contact's phones are replaced inside one transaction, so a screen sees the old or the new contact,
never half of it; transactions are one page (≤ 250 contacts) so the writer never holds the file long,
and screens read through WAL without waiting at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from callguard import metrics, tasks
from callguard.crm import CRM, CrmContact, build_crm
from callguard.errors import CrmAuthError, CrmError

if TYPE_CHECKING:
    from callguard.config import Config
    from callguard.store import Store

log = structlog.get_logger("callguard.sync")

# The CRM's clock and ours differ; start the change cursor this much before our own start.
CLOCK_SKEW = 300.0
# Above this many purge candidates we do not re-read each one by id (too many requests at 7 rps): a
# CRM that lost that many contacts did so on purpose.
MAX_RECHECK = 5000


@dataclass
class SyncReport:
    kind: str
    contacts: int = 0  # contacts read from the CRM
    added: int = 0  # phone rows new to the cache
    removed: int = 0  # phone rows gone from contacts still in the CRM
    changed: int = 0  # phone rows whose flag, name or owner changed
    deleted: int = 0  # phone rows of contacts the CRM deleted (incremental, webhooks)
    purged: int = 0  # phone rows a full sync found the CRM no longer has
    pages: int = 0
    resumed: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.kind} sync: {self.contacts} contacts read in {self.pages} pages, {self.seconds:.1f}s; "
                f"phones +{self.added} -{self.removed} ~{self.changed}; deleted {self.deleted}; "
                f"purged {self.purged}" + (" (resumed)" if self.resumed else ""))


class SyncService:
    name = "sync"

    def __init__(self, cfg: Config, store: Store, crm: CRM, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = store
        self.crm = crm
        self.clock = clock
        self.source = crm.kind
        self.last_sync_at: float | None = None
        self.last_error: str | None = None
        self._hints: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()  # one sync at a time: a webhook refresh waits for the page in flight
        self.synced = asyncio.Event()  # set after each successful run (readiness, tests)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        state = await self.store.sync_state.get(self.source)
        self.last_sync_at = state.last_sync_at or None
        self._tasks = [tasks.spawn(self._poll_loop(), "sync-poll"), tasks.spawn(self._hint_loop(), "sync-hints")]

    async def stop(self) -> None:
        await tasks.stop(*self._tasks)
        self._tasks = []
        await self.crm.close()

    def wake(self) -> None:
        """Run the next poll now (``callguard sync`` in-process, tests)."""
        self._wake.set()

    # --- webhook hints --------------------------------------------------------------------------------

    def hint(self, contact_ids: Sequence[str]) -> int:
        """Queue contacts a webhook named; returns how many were new to the queue."""
        fresh = 0
        for cid in contact_ids:
            if cid not in self._queued:
                self._queued.add(cid)
                self._hints.put_nowait(cid)
                fresh += 1
        return fresh

    async def drain(self) -> None:
        """Wait until every queued hint has been applied (tests, shutdown)."""
        await self._hints.join()

    async def _hint_loop(self) -> None:
        while True:
            ids = [await self._hints.get()]
            while not self._hints.empty() and len(ids) < 50:
                ids.append(self._hints.get_nowait())
            try:
                for cid in ids:
                    self._queued.discard(cid)
                await self.refresh(ids)
            except CrmError as e:
                # The poll will pick the change up; the webhook already got its 200.
                log.warning("sync_hint_failed", crm=self.source, contacts=len(ids), error=str(e)[:200])
            except Exception:
                log.exception("sync_hint_failed", crm=self.source, contacts=len(ids))
            finally:
                for _ in ids:
                    self._hints.task_done()

    async def refresh(self, contact_ids: Sequence[str]) -> SyncReport:
        """Re-read contacts by id and write what the CRM says: rows replaced, or removed if gone."""
        report = SyncReport("contact")
        contacts = await self.crm.get_contacts(contact_ids)
        found = {c.contact_id for c in contacts}
        gone = [cid for cid in contact_ids if cid not in found]
        async with self._lock, self.store.db.write() as conn:
            change = await self.store.numbers.write_contacts(conn, contacts, self.source, self.clock())
            report.deleted = await self.store.numbers.delete_contacts(conn, gone, self.source)
        report.contacts, report.added, report.removed, report.changed = (
            len(contacts), change.added, change.removed, change.changed)
        log.info("sync_contacts_refreshed", crm=self.source, contacts=len(contacts), gone=len(gone),
                 phones_added=change.added, phones_removed=change.removed, changed=change.changed)
        return report

    # --- polling --------------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        # A restart right after a sync waits out the interval instead of hitting the CRM again at once.
        state = await self.store.sync_state.get(self.source)
        first_wait = 0.0 if state.full_page else state.last_sync_at + self.cfg.sync.interval - self.clock()
        await self._sleep(first_wait)
        while True:
            await self.run_once()
            await self._sleep(self.cfg.sync.interval)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def run_once(self, force_full: bool = False) -> SyncReport | None:
        """A full sync when one is unfinished, due or forced; otherwise an incremental one."""
        kind = "full"
        try:
            state = await self.store.sync_state.get(self.source)
            due = self.clock() - state.last_full_at >= self.cfg.sync.full_every
            if force_full or state.full_page or due:
                report = await self.full()
            else:
                kind = "incremental"
                report = await self.incremental()
        except CrmAuthError as e:
            self._failed(kind, e)  # the alert went out from crm.http; keep polling at the interval
            return None
        except CrmError as e:
            self._failed(kind, e)
            return None
        except Exception as e:
            log.exception("sync_failed", crm=self.source, kind=kind)
            self._failed(kind, e)
            return None
        self.last_error = None
        self.last_sync_at = self.clock()
        metrics.SYNC_RUNS.labels(kind, "ok").inc()
        metrics.SYNC_AGE.set(0)
        await self._count()
        self.synced.set()
        return report

    def _failed(self, kind: str, e: BaseException) -> None:
        self.last_error = f"{type(e).__name__}: {e}"[:300]
        metrics.SYNC_RUNS.labels(kind, "error").inc()
        log.warning("sync_failed", crm=self.source, kind=kind, error=self.last_error)

    async def _count(self) -> None:
        phones, spam = await self.store.numbers.count()
        metrics.CONTACTS_CACHED.set(phones)
        metrics.SPAM_CACHED.set(spam)

    async def _write_page(self, report: SyncReport, contacts: Sequence[CrmContact], deleted: Sequence[str],
                          **state: str | float) -> None:
        """A page's rows in transactions of ``sync.batch`` contacts; the page's deletions and its resume
        point / cursor (``state``) commit with its last rows."""
        batch = max(1, self.cfg.sync.batch)
        chunks = [contacts[i:i + batch] for i in range(0, len(contacts), batch)] or [[]]
        for n, chunk in enumerate(chunks):
            async with self._lock, self.store.db.write() as conn:
                change = await self.store.numbers.write_contacts(conn, chunk, self.source, self.clock())
                if n == len(chunks) - 1:
                    # The resume point / cursor commits with the page's last rows.
                    report.deleted += await self.store.numbers.delete_contacts(conn, deleted, self.source)
                    await self.store.sync_state.update_in(conn, self.source, **state)
            report.added += change.added
            report.removed += change.removed
            report.changed += change.changed
        report.contacts += len(contacts)
        report.pages += 1

    async def full(self) -> SyncReport:
        """Page through every contact (resumable), then purge what the CRM no longer has. One page at a
        time: the CRM's latency no longer overlaps our write (the read-ahead was removed when screening
        became one process; the bench_sync measurement at 1M contacts says whether the 60 s target still
        holds)."""
        report = SyncReport("full")
        t0 = time.monotonic()
        state = await self.store.sync_state.get(self.source)
        if state.full_page and state.full_started_at:
            started, token, report.resumed = state.full_started_at, state.full_page, True
            log.info("sync_full_resumed", crm=self.source, page=token)
        else:
            started, token = self.clock(), None
            await self.store.sync_state.update(self.source, full_started_at=started, full_page="")
        while True:
            page = await self.crm.list_page(token)
            token = page.next_token
            await self._write_page(report, page.contacts, (), full_page=token or "")
            if token is None:
                break
        await self._recheck(report, started)
        async with self._lock, self.store.db.write() as conn:
            report.purged = await self.store.numbers.purge_older(conn, self.source, started)
            now = self.clock()
            values: dict[str, str | float] = {"full_page": "", "full_started_at": 0.0, "last_full_at": now,
                                              "last_sync_at": now}
            if not state.cursor:
                # Changes made while we paged are caught by the first incremental run from here.
                values["cursor"] = self.crm.cursor_at(started - CLOCK_SKEW)
            await self.store.sync_state.update_in(conn, self.source, **values)
        report.seconds = time.monotonic() - t0
        log.info("sync_done", crm=self.source, kind="full", contacts=report.contacts, pages=report.pages,
                 phones_added=report.added, phones_removed=report.removed, changed=report.changed,
                 purged=report.purged, seconds=round(report.seconds, 1))
        return report

    async def _recheck(self, report: SyncReport, started: float) -> None:
        """Offset paging (amoCRM) can skip a live contact when another is deleted mid-run: re-read the
        purge candidates by id and rewrite the ones that still exist, so only the truly gone are purged."""
        if getattr(self.crm, "stable_paging", False):  # a CRM that does not say: re-read to be safe
            return
        candidates = await self.store.numbers.contacts_older(self.source, started, MAX_RECHECK + 1)
        if not candidates or len(candidates) > MAX_RECHECK:
            return
        alive = await self.crm.get_contacts(candidates)
        if alive:
            log.info("sync_full_recovered_skipped", crm=self.source, contacts=len(alive))
            await self._write_page(report, alive, ())
            report.pages -= 1

    async def incremental(self) -> SyncReport:
        report = SyncReport("incremental")
        started = time.monotonic()
        state = await self.store.sync_state.get(self.source)
        cursor = state.cursor or self.crm.cursor_at(self.clock() - CLOCK_SKEW)
        while True:
            changes = await self.crm.list_changed(cursor)
            cursor = changes.cursor
            await self._write_page(report, changes.contacts, changes.deleted, cursor=cursor,
                                   last_sync_at=self.clock())
            if not changes.more:
                break
        report.seconds = time.monotonic() - started
        log.info("sync_done", crm=self.source, kind="incremental", contacts=report.contacts,
                 phones_added=report.added, phones_removed=report.removed, changed=report.changed,
                 deleted=report.deleted)
        return report


def build_sync(cfg: Config, store: Store) -> SyncService:
    crm = build_crm(cfg, store)
    if crm is None:
        raise CrmError("sync needs crm.kind = 'amocrm' or 'bitrix24'")
    return SyncService(cfg, store, crm)
