"""Carrying out the loop's actions: the CRM port each adapter implements, and the one place that turns an
``Action`` into CRM calls, log lines and metrics.

CRM actions (``assign``, ``create_task``, ``escalate``, ``check``) run on the driver's CRM worker, never on
the AMI path; they end in ``CrmDone`` (``CrmChanged`` for a ``check``) or ``CrmFailed`` with the step's
epoch, which the loop turns into "the pause starts now", "hand on or close" or "the same step again after
``callback.crm_retry``" (never a second hand-on). An assignment reads the lead first: its status then is
the baseline the read before a hand-on is compared with. Every task carries a marker (the call-back's key
and the step's epoch); a step done again (a retry, a restart) looks for it before creating the task, so a
lost reply never makes two. The rest (``notify``, ``wait``, ``record``) are local: a log line and a metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from callguard import metrics
from callguard.callbacks.events import Action, LeadSeen
from callguard.callbacks.loop import HEAD
from callguard.callbacks.settings import Roster

log = structlog.get_logger("callguard.callbacks")

CRM_KINDS = frozenset({"assign", "create_task", "escalate", "check"})
TASK_TEXT = "Перезвонить клиенту {customer} (пропущенный звонок) {marker}"


def task_marker(key: str, epoch: int) -> str:
    """What a task's text carries so a redo can find it (the CRMs have no idempotency key, crm-apis.md §3)."""
    return f"[callguard:{key}:{epoch}]"


class CallbackCrm(Protocol):
    """What the loop asks of a CRM; an adapter raises a ``CrmError`` subclass on failure."""

    name: str

    async def set_responsible(self, lead_ref: str, user_id: int) -> None: ...

    async def create_task(self, lead_ref: str, user_id: int, due: float, text: str) -> str: ...

    async def find_task(self, lead_ref: str, marker: str) -> str | None:
        """The id of the lead's task whose text holds ``marker`` (None: there is none)."""
        ...

    async def read_lead(self, lead_ref: str) -> LeadSeen:
        """The lead's status and responsible now (``found`` False when the CRM no longer has it)."""
        ...


class NoCrm:
    """No CRM (``crm.kind = none``, or a log/webhook sink): the loop runs, its CRM steps are no-ops."""

    name = "none"

    async def set_responsible(self, lead_ref: str, user_id: int) -> None:
        return None

    async def create_task(self, lead_ref: str, user_id: int, due: float, text: str) -> str:
        return ""

    async def find_task(self, lead_ref: str, marker: str) -> str | None:
        return None

    async def read_lead(self, lead_ref: str) -> LeadSeen:
        return LeadSeen()


@dataclass(frozen=True, slots=True)
class Subject:
    """What an action is about (for the CRM calls and the log line)."""

    key: str
    customer: str
    did: str
    lead_ref: str


def crm_actions(actions: Sequence[Action]) -> tuple[Action, ...]:
    return tuple(a for a in actions if a.kind in CRM_KINDS)


Notify = Callable[["Subject", Action], None]  # callbacks/notify.Notices: a notice to POST (never blocks)


class Executor:
    def __init__(self, crm: CallbackCrm, roster: Roster, pause: float, notices: Notify | None = None) -> None:
        self.crm = crm
        self.roster = roster
        self.pause = pause
        self.notices = notices

    def user_of(self, manager: str) -> int:
        if manager == HEAD:
            return self.roster.head.crm_user_id
        m = self.roster.get(manager)
        return m.crm_user_id if m is not None else 0

    async def run_crm(self, s: Subject, actions: Sequence[Action], now: float,
                      redo: bool = False) -> tuple[LeadSeen | None, int]:
        """The CRM calls of one step, in order; raises on the first failure (the step is redone whole:
        reading and setting the responsible are idempotent, a task is looked for by its marker first when
        the step is a redo). Returns the lead as read (None: not read) and the responsible set (0: none)."""
        if not s.lead_ref:
            return None, 0  # the sink made no CRM lead: nothing to assign in a CRM
        seen: LeadSeen | None = None
        user_set = 0
        for a in actions:
            if a.kind == "check":
                seen = await self.crm.read_lead(s.lead_ref)
                log.info("callback_crm_read", key=s.key, linkedid=s.key, caller=s.customer, did=s.did,
                         lead=s.lead_ref, status=seen.status, responsible=seen.responsible, found=seen.found,
                         epoch=a.epoch, why=a.detail, crm=self.crm.name)
                continue
            user = self.user_of(a.manager)
            if not user:
                log.warning("callback_no_crm_user", key=s.key, manager=a.manager, action=a.kind)
                continue
            if a.kind in ("assign", "escalate"):
                seen = await self.crm.read_lead(s.lead_ref)  # the status the later check compares with
                await self.crm.set_responsible(s.lead_ref, user)
                user_set = user
            if a.kind == "create_task" or a.kind == "escalate":
                await self._task(s, a, user, now, redo or a.detail == "retry")
            if a.kind == "assign" and a.detail.startswith("handed_on"):
                metrics.CALLBACK_HANDONS.inc()
            log.info("callback_crm_done", key=s.key, linkedid=s.key, caller=s.customer, did=s.did,
                     manager=a.manager, action=a.kind, lead=s.lead_ref, epoch=a.epoch, crm=self.crm.name)
        return seen, user_set

    async def _task(self, s: Subject, a: Action, user: int, now: float, redo: bool) -> None:
        marker = task_marker(s.key, a.epoch)
        if redo:
            found = await self.crm.find_task(s.lead_ref, marker)
            if found is not None:  # the earlier try made it and its reply was lost
                log.info("callback_task_found", key=s.key, linkedid=s.key, caller=s.customer, did=s.did,
                         lead=s.lead_ref, task=found, epoch=a.epoch, crm=self.crm.name)
                return
        due = a.due if a.due is not None else now + self.pause
        await self.crm.create_task(s.lead_ref, user, due, TASK_TEXT.format(customer=s.customer, marker=marker))

    def local(self, s: Subject, actions: Sequence[Action]) -> None:
        """Notifications, waits and timings: log lines (the CRM task itself notifies the manager)."""
        for a in actions:
            facts = {"key": s.key, "linkedid": s.key, "caller": s.customer, "did": s.did, "manager": a.manager}
            if a.kind == "notify":
                log.info("callback_notify", **facts, detail=a.detail, epoch=a.epoch)
                if self.notices is not None:
                    self.notices(s, a)
            elif a.kind == "wait":
                log.info("callback_waiting", **facts, why=a.detail, until=a.due)
            elif a.kind == "record":
                log.info("callback_timing", **facts, timing=a.detail, seconds=a.seconds)
            elif a.kind == "escalate":
                metrics.CALLBACK_ESCALATIONS.inc()
                log.warning("callback_escalated", **facts, detail=a.detail)
