"""Part ``callbacks``: the pure loop (book, presence, detector) driven by the AMI feed, a timer, the store
and a CRM. It must never block the AMI or AGI path.

* AMI frames reach ``on_event`` synchronously (in wire order, from the AMI client's fan-out); they update
  presence and the detector and step the book in memory; the steps cross to the writer task in a queue.
* On every (re)connect (``on_connected``, or a new login seen on the link): presence is reset and rebuilt
  from a ``QueueStatus`` list (recorded in s00/s22), then followed by the member events.
* The writer persists each step's row (``callbacks`` table) BEFORE its actions are carried out; CRM
  actions go to one CRM worker and come back as ``CrmDone``/``CrmFailed`` with the step's epoch. A
  restart loads the open rows: timers resume where they were, unfinished CRM steps are redone.
* A timer task ticks the book (``tick(now, limit=…)``) and takes in new input from the store: leads the
  outbox delivered (a call-back each; a repeat miss goes to the open one, or starts a new one after a
  terminal one) and answered calls (the customer "got through"; AMI ``AgentConnect`` says so at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import structlog

from callguard import metrics, tasks
from callguard.ami.wire import Frame
from callguard.callbacks.actions import CallbackCrm, Executor, Notify, Subject, crm_actions
from callguard.callbacks.book import CallbackBook
from callguard.callbacks.detect import AttemptDetector, CallbackAttempt
from callguard.callbacks.driver_io import CrmWorker, Job, StoreIntake, _Meta
from callguard.callbacks.loop import (
    Action,
    Attempt,
    Callback,
    CrmChanged,
    GotThrough,
    LeadSeen,
    Step,
)
from callguard.callbacks.presence import Presence
from callguard.callbacks.settings import CallbackConfig, Roster
from callguard.errors import CallguardError
from callguard.phone import Kind, normalise
from callguard.store.callbacks import CallbackRecord, Callbacks

log = structlog.get_logger("callguard.callbacks")

TICK_LIMIT = 200  # call-backs stepped per timer pass; the rest stay due for the next (the loop stays free)
POLL_S = 1.0  # how often the store is asked for delivered leads and answered calls
LEAD_HORIZON_S = 86_400.0  # at start, leads delivered this long ago still get a call-back
STOP_BOUND = 10.0


class AmiLink(Protocol):
    logins: int

    async def send_action(self, action: dict[str, str]) -> Any: ...


Owner = Callable[[str], Awaitable[str | None]]  # E.164 → the contact's responsible (manager name)


class CallbackDriver(CrmWorker, StoreIntake):
    name = "callbacks"

    def __init__(
        self, cb_cfg: CallbackConfig, roster: Roster, rows: Callbacks, crm: CallbackCrm, *,
        region: str = "RU", max_extension_digits: int = 5, owner_of: Owner | None = None,
        link: AmiLink | None = None, clock: Callable[[], float] = time.time, rng: random.Random | None = None,
        poll_s: float = POLL_S, notices: Notify | None = None,
    ) -> None:
        self.cfg, self.roster, self.rows, self.crm = cb_cfg, roster, rows, crm
        self.region, self.max_ext = region, max_extension_digits
        self.owner_of, self.link, self.clock, self.poll_s = owner_of, link, clock, poll_s
        self.presence = Presence(roster)
        self.detector = AttemptDetector(roster, region, max_extension_digits)
        self.book = CallbackBook(cb_cfg)
        self.book.bind(self.presence, rng or random.Random())
        self.executor = Executor(crm, roster, float(cb_cfg.pause), notices)
        self._meta: dict[str, _Meta] = {}
        self._dirty: dict[str, Callback] = {}  # key → its newest state, not yet in the store
        self._after_save: list[tuple[Callback, tuple[Action, ...]]] = []
        self._taken: list[tuple[str, str]] = []
        self._in_flight: set[str] = set()  # leads taken in, their rows not yet committed
        self._pending: dict[str, dict[int, tuple[Action, ...]]] = {}  # key → epoch → CRM actions not done
        self._crm_jobs: deque[Job] = deque()
        self._hinted: set[str] = set()  # keys whose webhook read is queued
        self._assigned_saved: dict[str, float] = {}  # book.last_assigned as the store has it
        self._breached: set[str] = set()
        self._logins = -1
        self._lead_cursor = 0.0
        self._call_cursor = 0.0
        self._write_ready, self._crm_ready, self._wake = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.saved = asyncio.Event()  # set after each commit (tests, the benchmark)
        self.saves = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._writer_task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- inputs (synchronous, on the loop) ----------------------------------------------------------

    def on_event(self, frame: Frame, now: float) -> None:
        owner = self.presence.feed(frame)
        if owner is not None and self.book and owner in self.presence.free(now):
            self._push(self.book.freed(now))
        for att in self.detector.feed(frame, now):
            self._attempt(att, now)
        if frame.get("Event") == "AgentConnect":
            self._agent_connect(frame, now)

    def on_connected(self) -> None:
        """A fresh AMI session: what presence knew may be stale; ask for the whole member list."""
        self.presence.reset()
        if self.link is not None and not self._stopping:
            self._tasks.append(tasks.spawn(self._queue_status(), name="callbacks-queuestatus"))

    def crm_changed(self, lead_ref: str, at: float, *, status_changed: bool = False,
                    responsible_user: int | None = None, seen: LeadSeen | None = None) -> int:
        """A change of a lead in the CRM (a webhook's hint, re-read: ``seen``): a status other than the one
        recorded at the assignment, or a responsible other than the one callguard set, closes its
        call-back (``loop.crm_verdict``)."""
        name = self.roster.by_crm_user(responsible_user) if responsible_user is not None else None
        who = self._name_of(seen.responsible) if seen is not None else ""
        keys = [k for k, m in self._meta.items() if m.lead_ref == lead_ref and self.book.get(k) is not None]
        for key in keys:
            cb = self.book.get(key)
            if cb is not None:
                self._push([self.book.apply(cb, CrmChanged(at, status_changed, name, seen, who=who))])
        return len(keys)

    def _attempt(self, att: CallbackAttempt, now: float) -> None:
        steps = self.book.attempt(att.customer_e164, Attempt(now, att.manager, att.answered, att.final, att.status))
        if steps:
            log.info("callback_attempt", caller=att.customer_e164, manager=att.manager, status=att.status or "dialling",
                     answered=att.answered, keys=[s.callback.key for s in steps])
        self._push(steps)

    def _agent_connect(self, frame: Frame, now: float) -> None:
        # app_queue AgentConnect (s02): CallerIDNum = the caller; Interface/DestChannel = who answered
        phone = normalise(frame.get("CallerIDNum", ""), self.region, self.max_ext)
        if phone.kind is Kind.NUMBER and phone.e164:
            self._got_through(phone.e164, now)

    def _got_through(self, customer: str, at: float) -> None:
        cbs = [cb for cb in self.book.for_customer(customer) if at > cb.missed_at]
        self._push([self.book.apply(cb, GotThrough(at)) for cb in cbs])

    def _push(self, steps: Iterable[Step], meta: _Meta | None = None) -> None:
        for s in steps:
            cb = s.callback
            if meta is not None:
                self._meta.setdefault(cb.key, meta)
            self._dirty[cb.key] = cb
            self._after_save.append((cb, s.actions))
            crm = crm_actions(s.actions)
            if crm:
                self._pending.setdefault(cb.key, {})[crm[0].epoch] = crm
            if not cb.is_open:
                self._pending.pop(cb.key, None)
            self._write_ready.set()

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.load()
        self._writer_task = tasks.spawn(self._writer(), name="callbacks-writer")
        self._tasks += [tasks.spawn(self._crm_worker(), name="callbacks-crm"),
                        tasks.spawn(self._timer(), name="callbacks-timer")]

    async def load(self) -> None:
        """The open rows from the store (a restart): timers resume, unfinished CRM steps are queued."""
        now = self.clock()
        records = await self.rows.open_rows()
        self.book.load(r.row for r in records)
        for r in records:
            self._meta[r.key] = _Meta(r.did, r.lead_ref, r.opened_at)
            if now - float(r.row["missed_at"]) > self.cfg.sla:
                self._breached.add(r.key)
            jobs = _actions_of(r.pending)
            if jobs:
                self._pending[r.key] = jobs
                self._crm_jobs.extend((r.key, epoch, acts, True) for epoch, acts in jobs.items())  # redo: look first
        # Who was assigned when, as before the restart: "least recently assigned" picks the same.
        self._assigned_saved = await self.rows.last_assigned()
        self.book.last_assigned.update(self._assigned_saved)
        self._lead_cursor = self._call_cursor = now - LEAD_HORIZON_S
        metrics.CALLBACKS_OPEN.set_function(lambda: len(self.book))
        log.info("callbacks_loaded", open=len(records), crm_redo=len(self._crm_jobs), crm=self.crm.name)
        self._crm_ready.set()

    async def stop(self) -> None:
        """Intake has stopped (AMI stops first): persist what is queued within a bound, then end."""
        self._stopping = True
        writer, self._writer_task = self._writer_task, None
        for t in self._tasks:
            await tasks.stop(t)
        self._write_ready.set()
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), STOP_BOUND)
            except TimeoutError:
                await tasks.stop(writer)
                log.error("callbacks_persist_timeout", unsaved=len(self._dirty))
        self._tasks = []
        close = getattr(self.crm, "close", None)
        if close is not None:
            await close()

    def idle(self) -> bool:
        return not self._dirty and not self._taken and not self._crm_jobs and not self._write_ready.is_set()

    # --- the writer: store first, then the actions -------------------------------------------------

    async def _writer(self) -> None:
        while True:
            await self._write_ready.wait()
            self._write_ready.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("callback_save_failed", unsaved=len(self._dirty))
                if self._stopping:
                    return
                await asyncio.sleep(1.0)  # a busy disk: kept, tried again
                self._write_ready.set()
            if self._stopping and not self._dirty:
                return

    async def flush(self) -> None:
        dirty, after, taken = self._dirty, self._after_save, self._taken
        if not dirty and not taken:
            return
        self._dirty, self._after_save, self._taken = {}, [], []
        now = self.clock()
        assigned = {m: t for m, t in self.book.last_assigned.items() if self._assigned_saved.get(m) != t}
        try:
            await self.rows.save((self._record(cb) for cb in dirty.values()), now, taken, assigned)
        except BaseException:
            self._dirty = {**dirty, **self._dirty}
            self._after_save = after + self._after_save
            self._taken = taken + self._taken
            raise
        self.saves += 1
        self._assigned_saved.update(assigned)
        self._in_flight.difference_update(linkedid for linkedid, _ in taken)
        for cb in dirty.values():
            metrics.CALLBACK_STEPS.labels(state=cb.state.value).inc()
        for cb, actions in after:
            self._carry_out(cb, actions, now)
        self.saved.set()

    def _record(self, cb: Callback) -> CallbackRecord:
        m = self._meta.get(cb.key) or _Meta()
        pending = [a.to_json() | {"epoch": e} for e, acts in self._pending.get(cb.key, {}).items() for a in acts]
        return CallbackRecord(cb.to_row(), m.did, m.lead_ref, pending, m.opened_at)

    def _carry_out(self, cb: Callback, actions: tuple[Action, ...], now: float) -> None:
        s = self._subject(cb.key, cb.customer)
        self.executor.local(s, actions)
        for a in actions:
            if a.kind == "record" and a.detail == "miss_to_first_attempt" and cb.key not in self._breached:
                if (a.seconds or 0.0) > self.cfg.sla:
                    metrics.CALLBACK_SLA_BREACHES.inc()
                self._breached.add(cb.key)
        crm = crm_actions(actions)
        if crm:
            self._crm_jobs.append((cb.key, crm[0].epoch, crm, False))
            self._crm_ready.set()
        if not cb.is_open:
            log.info("callback_closed", key=cb.key, linkedid=cb.key, caller=cb.customer, did=s.did,
                     manager=cb.by, state=cb.state.value, reason=cb.reason)

    def _subject(self, key: str, customer: str) -> Subject:
        m = self._meta.get(key) or _Meta()
        return Subject(key, customer, m.did, m.lead_ref)

    # --- the timer: due call-backs, the store's new input, the AMI link ----------------------------

    async def _timer(self) -> None:
        next_poll = 0.0
        while True:
            now = self.clock()
            steps = self.book.tick(now, limit=TICK_LIMIT)
            self._push(steps)
            if self.link is not None and self.link.logins != self._logins:
                self._logins = self.link.logins
                self.on_connected()
            if now >= next_poll:
                await self.intake(now)
                self._sweep_sla(now)
                next_poll = now + self.poll_s
            due = self.book.next_due()
            delay = 0.0 if len(steps) >= TICK_LIMIT else max(0.0, min(next_poll, due or next_poll) - self.clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def wake(self) -> None:
        self._wake.set()

    def _sweep_sla(self, now: float) -> None:
        for cb in self.book.values():
            if cb.first_attempt_at is None and cb.key not in self._breached and now - cb.missed_at > self.cfg.sla:
                self._breached.add(cb.key)
                metrics.CALLBACK_SLA_BREACHES.inc()

    async def _queue_status(self) -> None:
        assert self.link is not None
        try:
            reply = await asyncio.wait_for(self.link.send_action({"Action": "QueueStatus"}), 10.0)
        except (TimeoutError, CallguardError, OSError) as e:
            log.warning("callbacks_queuestatus_failed", error=str(e) or type(e).__name__)
            return
        now = self.clock()
        for msg in reply if isinstance(reply, list) else [reply]:
            self.on_event({str(k): str(v) for k, v in dict(msg).items()}, now)
        log.info("callbacks_presence", free=self.presence.free(now), on_duty=self.presence.on_duty(now))


def _actions_of(pending: list[dict[str, Any]]) -> dict[int, tuple[Action, ...]]:
    out: dict[int, list[Action]] = {}
    for a in pending:
        known = {k: a[k] for k in Action.__dataclass_fields__ if k in a}
        act = Action(**known)
        out.setdefault(act.epoch, []).append(act)
    return {e: tuple(v) for e, v in out.items()}
