"""Two parts of the call-back driver (callbacks/driver.py), apart so each module stays small: the CRM
worker that carries out the loop's CRM steps one at a time, and the intake of delivered leads and answered
calls from the store. Mixins of ``CallbackDriver``: they use its state and nothing else.

A ``check`` step (the read before a hand-on) answers the loop with ``CrmChanged`` carrying the read; a
webhook's hint about a lead (``lead_hint``) queues the same read, not persisted (it is only a hint: the
read before the next hand-on sees the same change), whose answer goes to ``crm_changed``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from callguard import metrics
from callguard.callbacks.loop import (
    HEAD,
    Action,
    Callback,
    CrmChanged,
    CrmDone,
    CrmFailed,
    LeadOpened,
)
from callguard.errors import CallguardError
from callguard.store.callbacks import DeliveredLead

log = structlog.get_logger("callguard.callbacks")

Job = tuple[str, int, tuple[Action, ...], bool]  # key, epoch, the step's CRM actions, a redo (look first)
HINT = -1  # the epoch of a webhook hint's read: belongs to no step of the loop
SLACK_S = 5.0  # the intake cursor looks back this far: rows committed with a slightly older stamp
# Caught up (a pass took fewer than a batch), the lead cursor moves to at least this long before now, so a
# poll after a restart reads minutes of leads, not the start's whole LEAD_HORIZON_S day again and again
# (leads already taken in are excluded by the query but still walked). A lead is stamped sent
# milliseconds before its commit, far inside this.
CURSOR_LAG_S = 600.0
INTAKE_BATCH = 200


@dataclass(slots=True)
class _Meta:
    did: str = ""
    lead_ref: str = ""
    opened_at: float = 0.0


class CrmWorker:
    """Carries out the loop's CRM steps in order, answering it with ``CrmDone``/``CrmFailed`` (same epoch)."""

    async def _crm_worker(self) -> None:
        while True:
            await self._crm_ready.wait()
            self._crm_ready.clear()
            while self._crm_jobs:
                await self._crm_job(*self._crm_jobs.popleft())

    def lead_hint(self, lead_refs: Sequence[str]) -> int:
        """A CRM webhook named these leads: read each that has an open call-back (on the CRM worker,
        after the steps already queued), then ``crm_changed``. Returns how many reads were queued."""
        wanted = set(lead_refs)
        queued = 0
        for key, m in self._meta.items():
            if m.lead_ref in wanted and self.book.get(key) is not None and key not in self._hinted:
                self._hinted.add(key)
                self._crm_jobs.append((key, HINT, (Action("check", detail="webhook"),), False))
                queued += 1
        if queued:
            self._crm_ready.set()
        return queued

    async def _crm_job(self, key: str, epoch: int, actions: tuple[Action, ...], redo: bool = False) -> None:
        if epoch == HINT:
            self._hinted.discard(key)
        cb = self.book.get(key)
        if cb is None or (cb.epoch != epoch and epoch != HINT):
            self._pending.get(key, {}).pop(epoch, None)
            return  # closed or moved on since: the step is stale
        s = self._subject(key, cb.customer)
        try:
            seen, user = await self.executor.run_crm(s, actions, self.clock(), redo)
        except CallguardError as e:  # CrmError and kin: the loop retries the same step later
            metrics.CALLBACK_CRM_FAILURES.inc()
            log.warning("callback_crm_failed", key=key, linkedid=key, caller=cb.customer, did=s.did,
                        manager=cb.manager, epoch=epoch, error=str(e))
            if epoch == HINT:
                return  # only a hint: the read before the next hand-on looks again
            event: CrmDone | CrmFailed | CrmChanged = CrmFailed(self.clock(), epoch)
        else:
            if epoch == HINT:
                if seen is not None:
                    self.crm_changed(s.lead_ref, self.clock(), seen=seen)
                return
            if actions[0].kind == "check":
                who = self._name_of(seen.responsible) if seen is not None else ""
                event = CrmChanged(self.clock(), seen=seen, epoch=epoch, who=who)
            else:
                event = CrmDone(self.clock(), epoch, seen, user)
        self._pending.get(key, {}).pop(epoch, None)
        cb = self.book.get(key)
        if cb is not None:
            self._push([self.book.apply(cb, event)])

    def _name_of(self, user: int) -> str:
        """The roster's name for a CRM user (the head's, or ``crm_user:N`` for someone else)."""
        if not user:
            return ""
        if user == self.roster.head.crm_user_id:
            return self.roster.head.name or HEAD
        return self.roster.by_crm_user(user) or f"crm_user:{user}"


class StoreIntake:
    """Takes in what the store gained since the last look: delivered leads (new or repeat misses) and
    answered calls (a customer who got through)."""

    async def pump(self, now: float) -> None:
        """One pass of everything the tasks do, in order, to quiescence (tests and the simulator's clock)."""
        self._push(self.book.tick(now))
        await self.intake(now)
        self._sweep_sla(now)
        while self._dirty or self._taken or self._crm_jobs:
            await self.flush()
            while self._crm_jobs:
                await self._crm_job(*self._crm_jobs.popleft())

    async def intake(self, now: float) -> None:
        leads = await self.rows.delivered_leads(self._lead_cursor - SLACK_S, INTAKE_BATCH)
        for lead in leads:
            if lead.linkedid in self._in_flight:
                continue  # taken by the last pass; the writer has not committed it yet
            self._in_flight.add(lead.linkedid)
            await self._take_lead(lead, now)
            self._lead_cursor = max(self._lead_cursor, lead.updated_at)
        if len(leads) < INTAKE_BATCH:
            self._lead_cursor = max(self._lead_cursor, now - CURSOR_LAG_S)
        for _linkedid, caller, answered_at, ended_at in await self.rows.answered_since(self._call_cursor - SLACK_S):
            if caller.startswith("+"):
                self._got_through(caller, answered_at)
            self._call_cursor = max(self._call_cursor, ended_at)

    async def _take_lead(self, lead: DeliveredLead, now: float) -> None:
        caller = str(lead.payload.get("caller", ""))
        if not caller.startswith("+"):
            self._taken.append((lead.linkedid, ""))  # anonymous or invalid: nobody to call back
            self._write_ready.set()
            return
        open_cbs = self.book.for_customer(caller)
        if open_cbs:
            cb = open_cbs[0]
            self._push([self.book.open(cb.key, caller, now, repeat=True)])
            self._taken.append((lead.linkedid, cb.key))
            return
        owner = await self.owner_of(caller) if self.owner_of is not None else None
        missed_at = float(lead.payload.get("ended_at") or now)
        cb = Callback(lead.linkedid, caller, missed_at, responsible=owner or "")
        meta = _Meta(str(lead.payload.get("did", "")), lead.crm_ref, now)
        self._push([self.book.apply(cb, LeadOpened(now))], meta)
        self._taken.append((lead.linkedid, lead.linkedid))
        log.info("callback_opened", key=cb.key, linkedid=cb.key, caller=caller, did=meta.did, lead=lead.crm_ref,
                 responsible=owner or "", misses=lead.payload.get("misses", 1))

