"""The call-back loop for one missed call: a pure state machine.

``step(callback, event, ctx) -> Step``: the new ``Callback`` (a frozen value; ``to_row`` / ``from_row``
give the store's row, so every transition can be persisted and a restart resumes where it was) and the
actions the driver must carry out (CRM responsible + task, notifications, escalation, timings). Times
are epoch seconds passed in; the machine never reads a clock, and who is free comes from ``ctx.pick``.

    waiting ──pick──▶ assigned ──pause, untouched──▶ handed_on(N) ──…max_handoffs──▶ escalated
       │                 │                               │                              │
       └──────── attempt (not answered) ▶ attempted ◀────┴──────────────────────────────┘
    any open state ── answered attempt ▶ reached · customer answered ▶ got_through · CRM change ▶ closed_in_crm

Before a hand-on (or the escalation) the lead is read in the CRM: the pause's end emits a ``check`` and
marks it pending (``crm_pending = "check"``); its answer (``CrmChanged`` with the same epoch) closes the
call-back when the lead's status differs from the one recorded at the assignment, or its responsible from
the one callguard set (a person took it by hand), and hands on otherwise (``crm_verdict``). A webhook's
hint (``CrmChanged``, epoch 0) is judged the same way, at once.

Idempotence: a hand-on happens only on the answer to the check of the current epoch, which clears the
check, so a repeated or late timer or answer never hands on twice. A failed CRM call (``CrmFailed``)
retries the *same* step (same ``epoch``: the assignment, or the read) after ``crm_retry``; it never
counts as, nor triggers, a hand-on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from callguard.callbacks.events import (
    Action,
    Attempt,
    CrmChanged,
    CrmDone,
    CrmFailed,
    Event,
    Freed,
    GotThrough,
    LeadOpened,
    LeadSeen,
    TimerDue,
)
from callguard.callbacks.pick import Choice
from callguard.callbacks.settings import CallbackConfig

__all__ = ["HEAD", "TERMINAL", "TIMED", "Action", "Attempt", "Callback", "Context", "CrmChanged", "CrmDone",
           "CrmFailed", "Event", "Freed", "GotThrough", "LeadOpened", "LeadSeen", "State", "Step", "TimerDue",
           "crm_verdict", "step"]



class State(StrEnum):
    WAITING = "waiting"
    ASSIGNED = "assigned"
    HANDED_ON = "handed_on"
    ATTEMPTED = "attempted"
    REACHED = "reached"
    GOT_THROUGH = "got_through"
    CLOSED_IN_CRM = "closed_in_crm"
    ESCALATED = "escalated"


TERMINAL = frozenset({State.REACHED, State.GOT_THROUGH, State.CLOSED_IN_CRM})
TIMED = frozenset({State.WAITING, State.ASSIGNED, State.HANDED_ON})
HANDOFF_WAITING = "handoff_waiting"  # the pause ran out while nobody else was free
CHECK = "check"  # crm_pending: the lead is being read before a hand-on


HEAD = "@head"


@dataclass(frozen=True, slots=True)
class Callback:
    key: str  # the lead's key (the missed call's Linkedid)
    customer: str  # E.164
    missed_at: float
    state: State = State.WAITING
    manager: str = ""  # current assignee
    assignees: tuple[str, ...] = ()  # everyone assigned, in order
    handoffs: int = 0
    due: float | None = None
    epoch: int = 0  # one per CRM step (assignment, escalation)
    crm_pending: str = ""  # "" | assign | escalate | check: that step has not reached the CRM yet
    misses: int = 1
    responsible: str = ""  # the contact's own responsible (manager name), first choice
    attempts: int = 0
    by: str = ""  # who called back / reached the customer
    first_attempt_at: float | None = None
    first_talk_at: float | None = None
    closed_at: float | None = None
    reason: str = ""  # why it is in this state
    crm_status: str = ""  # the lead's status in the CRM when it was last assigned ("" unknown)
    crm_user: int = 0  # the CRM responsible callguard set then (0: none)
    crm_epoch: int = 0  # the epoch whose CRM step ``crm_user`` belongs to (confirmed by CrmDone)

    @property
    def is_open(self) -> bool:
        return self.state not in TERMINAL

    def to_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["state"] = self.state.value
        row["assignees"] = list(self.assignees)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Callback:
        known = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        known["state"] = State(known.get("state", State.WAITING))
        known["assignees"] = tuple(known.get("assignees", ()))
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Step:
    callback: Callback
    actions: tuple[Action, ...] = ()

    @property
    def due(self) -> float | None:
        return self.callback.due


Picker = Callable[[Callback, float], Choice]


def _at_once(at: float) -> float:
    return at


@dataclass(frozen=True, slots=True)
class Context:
    cfg: CallbackConfig
    pick: Picker  # who is free right now, by the rule in pick.py (the driver binds presence and rng)
    head_from: Callable[[float], float] = _at_once  # when the head is next within hours (Roster.head_from)


# --- the machine ------------------------------------------------------------------------------------


def step(cb: Callback, event: Event, ctx: Context) -> Step:
    """Apply one input. Terminal states stay terminal; unknown or stale inputs change nothing."""
    if cb.state in TERMINAL:
        return Step(cb)
    match event:
        case LeadOpened():
            return _opened(cb, event, ctx)
        case TimerDue():
            return _timer(cb, event.at, ctx)
        case Freed():
            return _freed(cb, event.at, ctx)
        case Attempt():
            return _attempt(cb, event)
        case GotThrough():
            return _talked(cb, event.at, State.GOT_THROUGH, "customer_got_through", cb.by)
        case CrmChanged():
            return _crm_changed(cb, event, ctx)
        # Only an assignment the loop still waits on is retried: once a manager has called back
        # (attempted), a failed CRM write of the superseded assignment re-arms nothing.
        case CrmFailed() if event.epoch == cb.epoch and cb.epoch and (cb.state in TIMED or cb.state is State.ESCALATED):
            if cb.crm_pending == CHECK:  # the read failed: read again later, never hand on unread
                due = event.at + ctx.cfg.crm_retry
                return Step(dataclasses.replace(cb, due=due), (Action("wait", due=due, epoch=cb.epoch,
                                                                      detail="crm_read_retry"),))
            kind = "escalate" if cb.state is State.ESCALATED else "assign"
            due = event.at + ctx.cfg.crm_retry
            nxt = dataclasses.replace(cb, crm_pending=kind, due=due)
            return Step(nxt, (Action("wait", due=due, epoch=cb.epoch, detail="crm_retry"),))
        case CrmDone() if event.epoch == cb.epoch and cb.epoch:
            return Step(_crm_done(cb, event, ctx))
    return Step(cb)


def _crm_done(cb: Callback, ev: CrmDone, ctx: Context) -> Callback:
    """The CRM has the assignment: the manager's pause starts now (it may have been down a while). What
    the CRM showed then is the baseline a later read is compared with."""
    at = ev.at
    status = ev.seen.status if ev.seen is not None and ev.seen.status else cb.crm_status
    cb = dataclasses.replace(cb, crm_status=status, crm_user=ev.user, crm_epoch=ev.epoch)
    if cb.crm_pending == CHECK:
        return cb  # a late answer while the lead is being read: the read decides
    if cb.state not in TIMED or not cb.manager:
        return dataclasses.replace(cb, crm_pending="", due=None if cb.state not in TIMED else cb.due)
    due = cb.due if cb.reason == HANDOFF_WAITING else max(cb.due or at, at + ctx.cfg.pause)
    return dataclasses.replace(cb, crm_pending="", due=due)


def _opened(cb: Callback, ev: LeadOpened, ctx: Context) -> Step:
    if not ev.repeat:
        if cb.epoch == 0 and cb.state is State.WAITING and cb.due is None:
            return _assign(cb, ev.at, ctx, handoff=False)
        return Step(cb)  # the same lead again (a redelivery): already under way
    cb = dataclasses.replace(cb, misses=cb.misses + 1)
    if cb.state in (State.ATTEMPTED, State.ESCALATED):
        # The customer is still waiting for us: a fresh cycle.
        return _assign(dataclasses.replace(cb, handoffs=0, state=State.WAITING), ev.at, ctx, handoff=False)
    if cb.manager:
        return Step(cb, (Action("notify", cb.manager, epoch=cb.epoch, detail="repeat_miss"),))
    return Step(cb)


def _freed(cb: Callback, at: float, ctx: Context) -> Step:
    if cb.state is State.WAITING:
        return _assign(cb, at, ctx, handoff=False)
    if cb.state in TIMED and cb.reason == HANDOFF_WAITING and not cb.crm_pending:
        # a hand-on that waited for someone: read the lead again first (it may have been dealt with in the
        # CRM meanwhile), then hand on to whoever is free by then
        return _check(cb, at, ctx, "freed")
    return Step(cb)


def _timer(cb: Callback, at: float, ctx: Context) -> Step:
    if cb.due is None or at < cb.due:
        return Step(cb)
    if cb.crm_pending == CHECK:
        return _check(cb, at, ctx, "retry")
    if cb.crm_pending:
        return _retry(cb, at, ctx)
    if cb.state is State.WAITING:
        return _assign(cb, at, ctx, handoff=False)
    if cb.state not in TIMED:
        return Step(dataclasses.replace(cb, due=None))
    return _check(cb, at, ctx, "pause_over")


def _check(cb: Callback, at: float, ctx: Context, why: str) -> Step:
    """The pause is over: read the lead before handing on (a person may have dealt with it in the CRM).
    Its answer is ``CrmChanged`` with this epoch; none by ``crm_retry`` (a CRM outage) → read again."""
    due = at + ctx.cfg.crm_retry
    nxt = dataclasses.replace(cb, crm_pending=CHECK, due=due)
    return Step(nxt, (Action("check", cb.manager, due, cb.epoch, why),))


def _hand_on(cb: Callback, at: float, ctx: Context) -> Step:
    """The lead is untouched: the next manager, or the head after ``max_handoffs``."""
    cb = dataclasses.replace(cb, crm_pending="")
    if cb.handoffs >= ctx.cfg.max_handoffs:
        when = ctx.head_from(at)
        if when > at:  # nobody gets a task outside their hours: the morning's read, then the escalation
            nxt = dataclasses.replace(cb, due=when, reason="head_off_hours")
            return Step(nxt, (Action("wait", HEAD, when, cb.epoch, "off_hours"),))
        epoch = cb.epoch + 1
        nxt = dataclasses.replace(cb, state=State.ESCALATED, due=None, epoch=epoch, reason="max_handoffs")
        return Step(nxt, (Action("escalate", HEAD, epoch=epoch, detail=f"after {cb.handoffs} hand-ons"),
                          Action("notify", HEAD, epoch=epoch, detail="escalated")))
    return _assign(cb, at, ctx, handoff=True)


def _retry(cb: Callback, at: float, ctx: Context) -> Step:
    """The CRM step that failed, again: the same manager, task and epoch (never a new hand-on)."""
    if cb.crm_pending == "escalate":
        nxt = dataclasses.replace(cb, due=at + ctx.cfg.crm_retry)
        return Step(nxt, (Action("escalate", HEAD, epoch=cb.epoch, detail="retry"),))
    due = at + ctx.cfg.pause
    nxt = dataclasses.replace(cb, due=due)
    return Step(nxt, (Action("assign", cb.manager, due, cb.epoch, "retry"),
                      Action("create_task", cb.manager, due, cb.epoch, "retry")))


def _assign(cb: Callback, at: float, ctx: Context, *, handoff: bool) -> Step:
    choice = ctx.pick(cb, at)
    if choice.manager is None:
        due = choice.until if choice.wait == "off_hours" else at + ctx.cfg.pause
        reason = HANDOFF_WAITING if cb.manager else choice.wait
        nxt = dataclasses.replace(cb, due=due, reason=reason)
        return Step(nxt, (Action("wait", cb.manager, due, cb.epoch, choice.wait),))
    manager, epoch, due = choice.manager, cb.epoch + 1, at + ctx.cfg.pause
    handoffs = cb.handoffs + 1 if handoff else cb.handoffs
    nxt = dataclasses.replace(
        cb, state=State.HANDED_ON if handoffs else State.ASSIGNED, manager=manager,
        assignees=(*cb.assignees, manager), handoffs=handoffs, due=due, epoch=epoch, crm_pending="",
        reason=choice.why,
    )
    what = "handed_on" if handoff else "assigned"
    actions = [Action("assign", manager, due, epoch, what), Action("create_task", manager, due, epoch, what),
               Action("notify", manager, due, epoch, what)]
    if ctx.cfg.head.notify:
        actions.append(Action("notify", HEAD, due, epoch, f"{what}:{manager}"))
    return Step(nxt, tuple(actions))


def _timing(cb: Callback, name: str, at: float) -> Action:
    return Action("record", cb.by, detail=name, seconds=round(max(0.0, at - cb.missed_at), 3))


def _attempt(cb: Callback, ev: Attempt) -> Step:
    actions: list[Action] = []
    first = cb.first_attempt_at is None
    cb = dataclasses.replace(
        cb, by=ev.manager, first_attempt_at=ev.at if first else cb.first_attempt_at,
        attempts=cb.attempts + (1 if ev.final else 0),
    )
    if first:
        actions.append(_timing(cb, "miss_to_first_attempt", ev.at))
    if ev.answered:
        talked = _talked(cb, ev.at, State.REACHED, "reached", ev.manager)
        return Step(talked.callback, (*actions, *talked.actions))
    reason = f"attempt:{ev.status}" if ev.status else "attempt"
    return Step(dataclasses.replace(cb, state=State.ATTEMPTED, due=None, reason=reason), tuple(actions))


def _talked(cb: Callback, at: float, state: State, reason: str, by: str) -> Step:
    cb = dataclasses.replace(cb, state=state, due=None, closed_at=at, reason=reason, by=by)
    if cb.first_talk_at is not None:
        return Step(cb)
    cb = dataclasses.replace(cb, first_talk_at=at)
    return Step(cb, (_timing(cb, "miss_to_first_talk", at),))


def crm_verdict(cb: Callback, ev: CrmChanged) -> str:
    """Why the CRM change closes the call-back ("" = it does not), pure: what the CRM says now against
    what callguard recorded at the assignment (``crm_status``, and ``crm_user`` once that assignment is
    confirmed: before, the CRM may still show the previous responsible)."""
    seen = ev.seen
    if ev.status_changed or (seen is not None and seen.found and seen.status and cb.crm_status
                             and seen.status != cb.crm_status):
        return "crm_status"
    if seen is not None and not seen.found:
        return "crm_lead_gone"  # deleted in the CRM: nobody is to call about it any more
    if ev.responsible and ev.responsible not in cb.assignees:
        return "crm_responsible"  # a person gave it to someone: theirs now
    confirmed = cb.crm_user and cb.crm_epoch == cb.epoch and cb.crm_pending in ("", CHECK)
    if seen is not None and seen.responsible and confirmed and seen.responsible != cb.crm_user:
        return "crm_responsible"  # the head or a manager took it by hand in the CRM
    return ""  # the echo of our own assignment, or nothing that matters


def _crm_changed(cb: Callback, ev: CrmChanged, ctx: Context) -> Step:
    reason = crm_verdict(cb, ev)
    checking = ev.epoch != 0 and ev.epoch == cb.epoch and cb.crm_pending == CHECK
    if not reason:
        return _hand_on(cb, ev.at, ctx) if checking else Step(cb)
    by = ev.who or ev.responsible or cb.by
    nxt = dataclasses.replace(cb, state=State.CLOSED_IN_CRM, due=None, closed_at=ev.at, reason=reason, by=by,
                              crm_pending="")
    return Step(nxt)
