"""The glue between the AMI link, the pure tracker and the store: outcomes are logged, counted and
persisted (a missed call with its outbox item in one transaction), in the order the tracker gave them.

Events reach ``on_event`` synchronously from the AMI protocol, so the tracker sees them in wire order;
only the (few) outcomes cross to the writer task through a queue. ``stop()`` persists what is queued.

After every (re)connect ``resync`` (AmiClient.on_connected) re-attaches the calls in progress
(CoreShowChannels) and rebuilds from Asterisk's records (resync.py) the calls that ended since the mark
(``sync_state`` row ``asterisk-records``: every call that ended before it is in the store). A ``lost``
outcome (events missing) is never dropped: it waits in ``_recheck`` until its record says what happened
(DBGet), or, with no record, is written as lost; a lost row is looked up again after every resync and
every ``LATE_RECHECK`` s for a day (its record may come late, or sit an hour off), and a record found
then replaces it (``Calls.record``) with its lead. Every write is keyed by Linkedid (INSERT OR IGNORE), so
the tracker and a reconcile racing for one call give one row and at most one lead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable

import structlog

from callguard import metrics, tasks
from callguard.ami.wire import Frame
from callguard.calls import resync
from callguard.calls.reconcile import Action, Rules, plan
from callguard.calls.records import CallRecord, Rejected
from callguard.calls.tracker import CallOutcome, CallTracker, Outcome
from callguard.errors import AmiError
from callguard.store import Store
from callguard.store.calls import CallRow
from callguard.store.screens import ScreenRecord
from callguard.throttle import LogThrottle

log = structlog.get_logger("callguard.calls.tracker")

SWEEP_MAX = 30.0
MARK = "asterisk-records"  # sync_state row; last_sync_at = every call that ended before it is recorded
MARGIN = 120.0  # seconds re-read before the mark (a hang-up handler still writing, clocks apart)
FIRST_WINDOW = 3600.0  # no mark yet (first start): rebuild the last hour
LATE_RECHECK = 600.0  # seconds between looks at the lost rows of the last LOST_LOOKBACK s
LOST_LOOKBACK = 86400.0
LOST_SPREAD = 3600.0  # a stored lost call's record is looked for in its hour's bucket and both neighbours
STOP_BOUND = 10.0  # seconds to persist queued outcomes on SIGTERM (systemd's stop bound is larger)


async def write_outcome(store: Store, o: CallOutcome, rebuilt: bool, now: float) -> bool:
    """The call row and, for a missed call, its lead (``reconciled`` when rebuilt from Asterisk's record)
    in one transaction keyed by Linkedid; False when the call was recorded already."""
    row = CallRow(o.linkedid, o.uniqueid, o.caller, o.did, o.verdict, o.outcome.value, o.reason,
                  o.started_at, o.ended_at, o.wait_s)
    lead = dataclasses.replace(o.to_missed(), reconciled=rebuilt).to_json() if o.is_lead else None
    return await store.calls.record(row, lead, now)


class CallFlow:
    """Part ``calls``."""

    name = "calls"

    def __init__(
        self, tracker: CallTracker, store: Store | None, on_lead: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracker = tracker
        self.store = store
        self.on_lead = on_lead
        self.clock = clock
        self.mono = mono  # what stale expiry runs on (DESIGN.md: never on event timestamps)
        self._clamps = 0
        self._clamp_log = LogThrottle(60.0, mono)
        self.outcomes: dict[str, int] = {}
        # Outcomes waiting for the store; an item leaves only after its transaction committed, so a
        # cancelled write (SIGTERM) is redone by stop(): INSERT OR IGNORE makes the redo harmless.
        self._pending: deque[tuple[CallOutcome, bool]] = deque()  # (outcome, rebuilt from a record)
        self._recheck: dict[str, CallOutcome] = {}  # lost outcomes waiting for their record
        self._recheck_ready = asyncio.Event()
        self._request: resync.Request | None = None  # the AMI session's request(), while linked
        self._rules = Rules(float(tracker.min_ring), tracker.region, tracker.ext_digits)
        self._ready = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
        self._recheck_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.persisted = 0
        self.recorded = asyncio.Event()  # set after each outcome is in the store (tests, health)

    # --- inputs (synchronous, called on the loop) ---------------------------------------------------

    def on_event(self, frame: Frame, now: float) -> None:
        for outcome in self.tracker.feed(frame, now, self.mono()):
            self.accept(outcome)
        if self.tracker.clamps != self._clamps:
            self._clamped()

    def _clamped(self) -> None:
        self._clamps = self.tracker.clamps
        kind, event, stamp = self.tracker.last_clamp
        metrics.AMI_TIMESTAMPS_CLAMPED.labels(kind=kind).inc()
        counts = self._clamp_log.note(kind)
        if counts is not None:  # at most a line a minute, with the counts since the last one
            log.warning("ami_timestamp_ignored", **counts, last_event=event, last_timestamp=stamp,
                        ahead_s=self.tracker.ts_ahead, behind_s=self.tracker.ts_behind)

    def on_screen(self, record: ScreenRecord) -> None:
        self.tracker.screen(record)

    def on_link_lost(self) -> None:
        self._request = None
        open_calls = len(self.tracker)
        self.tracker.link_lost()
        if open_calls:
            log.warning("calls_events_lost", open_calls=open_calls)

    def accept(self, o: CallOutcome) -> None:
        self.outcomes[o.outcome.value] = self.outcomes.get(o.outcome.value, 0) + 1
        metrics.CALLS.labels(outcome=o.outcome.value, reason=o.reason).inc()
        facts = {"linkedid": o.linkedid, "uniqueid": o.uniqueid, "caller": o.caller, "did": o.did,
                 "reason": o.reason, "verdict": o.verdict, "wait_s": o.wait_s}
        if o.outcome is Outcome.LOST:
            metrics.CALLS_EXPIRED.inc()
            # never a lead from its events: they are incomplete; Asterisk's record of it decides
            log.warning("call_lost", **facts, then="recheck_record" if self.store is not None else "dropped")
            if self.store is not None:
                self._recheck[o.linkedid] = o
                self._recheck_ready.set()
            return
        log.info(f"call_{o.outcome.value}", **facts)
        self._queue(o)

    def _queue(self, o: CallOutcome, rebuilt: bool = False) -> None:
        if self.store is not None:
            self._pending.append((o, rebuilt))
            self._ready.set()

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        # The part owns its gauge: read from the tracker at scrape time, so no one else sets it.
        metrics.CALLS_ACTIVE.set_function(lambda: len(self.tracker))
        self._writer_task = tasks.spawn(self._writer(), name="calls-writer")
        self._sweeper_task = tasks.spawn(self._sweeper(), name="calls-sweeper")
        if self.store is not None:
            self._recheck_task = tasks.spawn(self._rechecker(), name="calls-recheck")

    async def stop(self) -> None:
        """Intake has stopped (the AMI part stops first): persist what is queued, then end. The writer is
        asked to finish, not cancelled: a write cancelled mid-transaction would leave the connection open."""
        self._stopping = True
        await tasks.stop(self._sweeper_task, self._recheck_task)
        self._sweeper_task = self._recheck_task = None
        self._ready.set()
        writer, self._writer_task = self._writer_task, None
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), STOP_BOUND)
            except TimeoutError:
                await tasks.stop(writer)
                log.error("calls_persist_timeout", pending=len(self._pending))
        if len(self.tracker) or self._recheck:  # their records are read at the next start
            log.info("calls_open_at_shutdown", open_calls=len(self.tracker), lost_unchecked=len(self._recheck))

    async def flush(self) -> None:
        while self._pending:
            await self._persist(self._pending[0])
            self._pending.popleft()

    async def _writer(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self.flush()
            except Exception:
                # kept for the next try: a missed call must not be lost to a busy disk
                log.exception("call_record_failed", pending=len(self._pending))
                if self._stopping:
                    return
                await asyncio.sleep(1.0)
                self._ready.set()
            if self._stopping:
                return

    async def _persist(self, item: tuple[CallOutcome, bool]) -> None:
        assert self.store is not None
        o, rebuilt = item
        fresh = await write_outcome(self.store, o, rebuilt, self.clock())
        self.persisted += 1
        self.recorded.set()
        if not fresh:
            log.info("call_already_recorded", linkedid=o.linkedid, outcome=o.outcome.value)
        elif o.is_lead and self.on_lead is not None:
            self.on_lead()

    async def _sweeper(self) -> None:
        interval = min(SWEEP_MAX, max(0.05, self.tracker.stale_after / 4))
        last_look = self.mono()
        while True:
            await asyncio.sleep(interval)
            for outcome in self.tracker.expire(self.mono(), self.clock()):
                self.accept(outcome)
            await self._advance_mark()
            if self._request is not None and self.mono() - last_look >= LATE_RECHECK:
                last_look = self.mono()
                await self.recheck_stored_lost(self._request)

    # --- after a gap: re-attach, reconcile, re-check ------------------------------------------------

    async def resync(self, client: object) -> None:
        """``AmiClient.on_connected``: re-attach the calls in progress, then rebuild those that ended since
        the mark. A failure (rights, a timeout) is logged; the next (re)connect or start tries again."""
        request: resync.Request = client.request  # type: ignore[attr-defined]
        started = self.clock()
        try:
            self.tracker.snapshot_begin()
            channels = await resync.read_channels(request)
            for outcome in self.tracker.reattach(channels, started, self.mono()):
                self.accept(outcome)
            log.info("calls_reattached", channels=len(channels), open_calls=len(self.tracker))
            if self.store is None:
                return
            since = await self._mark_value(started) - MARGIN
            records, rejected = await resync.read_records(request, since, started + MARGIN)
            await self.reconcile(records, rejected, since)
        except (AmiError, TimeoutError) as e:  # rights, a link that closed, a reply that never came
            log.error("calls_resync_failed", error=str(e) or type(e).__name__)
            return
        self._request = request
        self._recheck_ready.set()
        await self._advance_mark(started)
        await self.recheck_stored_lost(request)

    async def recheck_stored_lost(self, request: resync.Request) -> int:
        """Look again for the records of the calls stored as lost in the last day; the number explained."""
        if self.store is None:
            return 0
        found: list[CallRecord] = []
        try:
            for row in await self.store.calls.lost_since(self.clock() - LOST_LOOKBACK):
                rec = await resync.read_record(request, row.linkedid, row.ended_at, spread=LOST_SPREAD)
                if isinstance(rec, CallRecord):
                    found.append(rec)
        except (AmiError, TimeoutError) as e:
            log.warning("call_lost_recheck_failed", error=str(e) or type(e).__name__)
        if not found:
            return 0
        made = await self.reconcile(found, [], 0.0)
        log.info("calls_lost_explained", records=len(found), created=made)
        return made

    async def reconcile(self, records: list[CallRecord], rejected: list[Rejected], since: float) -> int:
        """Write every call the records hold and the store lacks (missed ones with their lead, marked
        reconciled); the number written."""
        assert self.store is not None
        for bad in rejected:
            metrics.CALL_RECORDS_REJECTED.inc()
            log.warning("call_record_rejected", key=bad.key, why=bad.why)
        # the writer has them: never a second row (a queued lost one is no better than a stored lost one)
        queued = {o.linkedid for o, _ in self._pending if o.outcome is not Outcome.LOST}
        lost = {o.linkedid for o, _ in self._pending if o.outcome is Outcome.LOST}
        have = await self.store.calls.recorded(sorted({r.linkedid for r in records}))
        result = plan(records, queued | have.settled, self.tracker.open_ids(), rules=self._rules, since=since,
                      lost=(lost | have.lost) - queued)
        made = 0
        for decision in result.decisions:
            o = decision.outcome
            self._recheck.pop(o.linkedid, None)  # its record has spoken (or callguard had it already)
            if decision.action is not Action.CREATE:
                continue
            made += 1
            metrics.CALLS_RECONCILED.labels(outcome=o.outcome.value).inc()
            log.info("call_reconciled", linkedid=o.linkedid, uniqueid=o.uniqueid, caller=o.caller, did=o.did,
                     outcome=o.outcome.value, reason=o.reason, wait_s=o.wait_s)
            await self._persist((o, True))
        log.info("calls_reconciled", records=len(records), created=made, rejected=len(rejected))
        return made

    async def _rechecker(self) -> None:
        while True:
            await self._recheck_ready.wait()
            self._recheck_ready.clear()
            await self.recheck_pending()

    async def recheck_pending(self) -> None:
        """Each lost outcome waiting: its record decides (a reconcile), or, with none, it is written lost."""
        if self._request is None:
            return  # link down: the next resync reads the records (and wakes the rechecker again)
        for lid, lost in list(self._recheck.items()):
            try:
                rec = await resync.read_record(self._request, lid, lost.ended_at)
            except (AmiError, TimeoutError) as e:
                log.warning("call_recheck_failed", linkedid=lid, error=str(e))
                return  # the next resync retries
            if self._recheck.pop(lid, None) is None:
                continue  # a reconcile settled it meanwhile
            if isinstance(rec, CallRecord):
                await self.reconcile([rec], [], 0.0)
            else:
                if isinstance(rec, Rejected):
                    log.warning("call_record_rejected", key=rec.key, why=rec.why)
                log.warning("call_lost_no_record", linkedid=lid, caller=lost.caller, did=lost.did,
                            reason=lost.reason)
                await self._persist((lost, False))

    async def _mark_value(self, now: float) -> float:
        assert self.store is not None
        mark = (await self.store.sync_state.get(MARK)).last_sync_at
        return mark if mark > 0 else now - FIRST_WINDOW

    async def _advance_mark(self, upto: float | None = None) -> None:
        """Every call that ended before the new mark is in the store: nothing queued or re-checked ended
        earlier, and the link is up (a call ending during an outage is read at the next resync)."""
        if self.store is None or self._request is None:
            return
        mark = self.clock() if upto is None else upto
        for o in [*self._recheck.values(), *(o for o, _ in self._pending)]:
            mark = min(mark, o.ended_at)
        try:
            await self.store.sync_state.update(MARK, last_sync_at=mark)
        except Exception:
            log.exception("calls_mark_failed")
