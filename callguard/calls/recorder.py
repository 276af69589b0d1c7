"""The glue between the AMI link, the pure tracker and the store: outcomes are logged, counted and
persisted (a missed call with its outbox item in one transaction), in the order the tracker gave them.

Events reach ``on_event`` synchronously from the AMI protocol, so the tracker sees them in wire order;
only the (few) outcomes cross to the writer task through a queue. ``stop()`` persists what is queued.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import structlog

from callguard import metrics, tasks
from callguard.ami.wire import Frame
from callguard.calls.tracker import CallOutcome, CallTracker, Outcome
from callguard.store import Store
from callguard.store.calls import CallRow
from callguard.store.screens import ScreenRecord
from callguard.throttle import LogThrottle

log = structlog.get_logger("callguard.calls.tracker")

SWEEP_MAX = 30.0
STOP_BOUND = 10.0  # seconds to persist queued outcomes on SIGTERM (systemd's stop bound is larger)


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
        self._pending: deque[CallOutcome] = deque()
        self._ready = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
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
            log.warning("call_lost", **facts)  # never a lead: its events are incomplete
        else:
            log.info(f"call_{o.outcome.value}", **facts)
        if self.store is not None:
            self._pending.append(o)
            self._ready.set()

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        # The part owns its gauge: read from the tracker at scrape time, so no one else sets it.
        metrics.CALLS_ACTIVE.set_function(lambda: len(self.tracker))
        self._writer_task = tasks.spawn(self._writer(), name="calls-writer")
        self._sweeper_task = tasks.spawn(self._sweeper(), name="calls-sweeper")

    async def stop(self) -> None:
        """Intake has stopped (the AMI part stops first): persist what is queued, then end. The writer is
        asked to finish, not cancelled: a write cancelled mid-transaction would leave the connection open."""
        self._stopping = True
        await tasks.stop(self._sweeper_task)
        self._sweeper_task = None
        self._ready.set()
        writer, self._writer_task = self._writer_task, None
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), STOP_BOUND)
            except TimeoutError:
                await tasks.stop(writer)
                log.error("calls_persist_timeout", pending=len(self._pending))
        if len(self.tracker):
            log.info("calls_open_at_shutdown", open_calls=len(self.tracker))

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

    async def _persist(self, o: CallOutcome) -> None:
        assert self.store is not None
        row = CallRow(o.linkedid, o.uniqueid, o.caller, o.did, o.verdict, o.outcome.value, o.reason,
                      o.started_at, o.ended_at, o.wait_s)
        lead = o.to_missed().to_json() if o.is_lead else None
        fresh = await self.store.calls.record(row, lead, self.clock())
        self.persisted += 1
        self.recorded.set()
        if not fresh:
            log.info("call_already_recorded", linkedid=o.linkedid, outcome=o.outcome.value)
        elif lead is not None and self.on_lead is not None:
            self.on_lead()

    async def _sweeper(self) -> None:
        interval = min(SWEEP_MAX, max(0.05, self.tracker.stale_after / 4))
        while True:
            await asyncio.sleep(interval)
            for outcome in self.tracker.expire(self.mono(), self.clock()):
                self.accept(outcome)
