"""Carrying out the loop's actions: the CRM port each adapter implements, and the one place that turns an
``Action`` into CRM calls, log lines and metrics.

CRM actions (``assign``, ``create_task``, ``escalate``) run on the driver's CRM worker, never on the AMI
path; they end in ``CrmDone`` or ``CrmFailed`` with the step's epoch, which the loop turns into "the pause
starts now" or "the same step again after ``callback.crm_retry``" (never a second hand-on). The rest
(``notify``, ``wait``, ``record``) are local: a structured log line and a metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from callguard import metrics
from callguard.callbacks.loop import HEAD, Action
from callguard.callbacks.settings import Roster

log = structlog.get_logger("callguard.callbacks")

CRM_KINDS = frozenset({"assign", "create_task", "escalate"})
TASK_TEXT = "Перезвонить клиенту {customer} (пропущенный звонок)"


class CallbackCrm(Protocol):
    """What the loop asks of a CRM; an adapter raises a ``CrmError`` subclass on failure."""

    name: str

    async def set_responsible(self, lead_ref: str, user_id: int) -> None: ...

    async def create_task(self, lead_ref: str, user_id: int, due: float, text: str) -> str: ...


class NoCrm:
    """No CRM (``crm.kind = none``, or a log/webhook sink): the loop runs, its CRM steps are no-ops."""

    name = "none"

    async def set_responsible(self, lead_ref: str, user_id: int) -> None:
        return None

    async def create_task(self, lead_ref: str, user_id: int, due: float, text: str) -> str:
        return ""


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

    async def run_crm(self, s: Subject, actions: Sequence[Action], now: float) -> None:
        """The CRM calls of one step, in order; raises on the first failure (the step is redone whole:
        setting the responsible is idempotent, a task is the one call a lost reply can repeat)."""
        if not s.lead_ref:
            return  # the sink made no CRM lead: nothing to assign in a CRM
        for a in actions:
            user = self.user_of(a.manager)
            if not user:
                log.warning("callback_no_crm_user", key=s.key, manager=a.manager, action=a.kind)
                continue
            if a.kind in ("assign", "escalate"):
                await self.crm.set_responsible(s.lead_ref, user)
            if a.kind == "create_task" or a.kind == "escalate":
                due = a.due if a.due is not None else now + self.pause
                await self.crm.create_task(s.lead_ref, user, due, TASK_TEXT.format(customer=s.customer))
            if a.kind == "assign" and a.detail.startswith("handed_on"):
                metrics.CALLBACK_HANDONS.inc()
            log.info("callback_crm_done", key=s.key, linkedid=s.key, caller=s.customer, did=s.did,
                     manager=a.manager, action=a.kind, lead=s.lead_ref, epoch=a.epoch, crm=self.crm.name)

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
