"""The call-back figures of the report, pure: the ``callbacks`` rows of a window in, figures out.

``Stats.report`` (callguard/store/stats.py) computes them, so ``callguard stats``, ``/v1/stats`` and the
dashboard's call-back panel read one result. A window's call-backs are those whose miss is in it.

* Time to call-back = from the miss to the first attempt (a manager dialling the customer); median and
  p90 (nearest rank, as every percentile in the report) over the misses that were called back.
* Within SLA = that time ≤ ``callback.sla``; its share is over ALL the window's misses (a miss nobody
  called back is not a call-back within the SLA).
* "Never called back" = no attempt (yet): the customer getting through or the CRM closing it count apart
  (``got_through``, ``closed_in_crm``). ``open`` = not in a terminal state; ``handoffs`` = hand-ons done;
  ``escalated`` = open call-backs that reached the head of sales (``max_handoffs`` ran out).
* Grouped per manager (who called back; else the current assignee; ``-`` for nobody) and per DID (the
  number the customer dialled: the advertising source).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from callguard.store.callbacks import TERMINAL_STATES, CallbackRecord

WAITING_SHOWN = 20  # the oldest misses nobody has called back yet, listed by name


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of a sorted, non-empty sequence (p90 of 10 values is the 9th)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Group:
    """The figures of one manager, one DID, or the whole window (``key`` '')."""

    key: str
    misses: int = 0
    called_back: int = 0
    within_sla: int = 0
    reached: int = 0
    got_through: int = 0
    closed_in_crm: int = 0
    open: int = 0
    escalated: int = 0
    handoffs: int = 0
    waits: list[float] = field(default_factory=list, repr=False)

    @property
    def never_called_back(self) -> int:
        return self.misses - self.called_back

    @property
    def median_s(self) -> float | None:
        return round(statistics.median(self.waits), 1) if self.waits else None

    @property
    def p90_s(self) -> float | None:
        return round(nearest_rank(sorted(self.waits), 0.9), 1) if self.waits else None

    @property
    def within_sla_share(self) -> float | None:
        return round(self.within_sla / self.misses, 4) if self.misses else None

    def add(self, rec: CallbackRecord, sla_s: float) -> None:
        r, state = rec.row, rec.state
        self.misses += 1
        self.handoffs += int(r.get("handoffs") or 0)
        first = r.get("first_attempt_at")
        if first is not None:
            wait = max(0.0, float(first) - float(r["missed_at"]))
            self.called_back += 1
            self.waits.append(wait)
            self.within_sla += wait <= sla_s
        if state in TERMINAL_STATES:
            setattr(self, state, getattr(self, state) + 1)
        else:
            self.open += 1
            self.escalated += state == "escalated"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "misses": self.misses, "called_back": self.called_back,
                "never_called_back": self.never_called_back, "within_sla": self.within_sla,
                "within_sla_share": self.within_sla_share, "median_s": self.median_s, "p90_s": self.p90_s,
                "reached": self.reached, "got_through": self.got_through, "closed_in_crm": self.closed_in_crm,
                "open": self.open, "escalated": self.escalated, "handoffs": self.handoffs}


@dataclass(frozen=True)
class OpenMiss:
    """A missed call nobody has called back yet (its call-back still open)."""

    caller: str
    did: str
    missed_at: float
    age_s: float
    state: str = "waiting"
    manager: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"caller": self.caller, "did": self.did, "state": self.state, "manager": self.manager,
                "missed_at": datetime.fromtimestamp(self.missed_at, UTC).isoformat(), "age_s": round(self.age_s, 1)}


@dataclass(frozen=True)
class CallbackFigures:
    sla_s: float
    total: Group
    by_manager: tuple[Group, ...] = ()
    by_did: tuple[Group, ...] = ()
    waiting: tuple[OpenMiss, ...] = ()  # the oldest WAITING_SHOWN open misses nobody has called back yet
    waiting_total: int = 0  # how many of those there are in all

    def as_dict(self) -> dict[str, Any]:
        return {"sla_s": self.sla_s, "total": self.total.as_dict(),
                "by_manager": [g.as_dict() for g in self.by_manager], "by_did": [g.as_dict() for g in self.by_did],
                "waiting_total": self.waiting_total, "waiting": [m.as_dict() for m in self.waiting]}


def summarise(records: Iterable[CallbackRecord], sla_s: float, now: float) -> CallbackFigures:
    """The figures of the call-backs ``records`` (one window's), ``now`` for the age of the open ones."""
    total = Group("")
    by_manager: dict[str, Group] = {}
    by_did: dict[str, Group] = {}
    waiting: list[OpenMiss] = []
    for rec in records:
        r = rec.row
        who = str(r.get("by") or r.get("manager") or "-")
        did = rec.did or "-"
        for g in (total, by_manager.setdefault(who, Group(who)), by_did.setdefault(did, Group(did))):
            g.add(rec, sla_s)
        if r.get("first_attempt_at") is None and rec.state not in TERMINAL_STATES:
            missed_at = float(r["missed_at"])
            waiting.append(OpenMiss(str(r.get("customer", "")), rec.did, missed_at, max(0.0, now - missed_at),
                                    rec.state, str(r.get("manager") or "")))
    waiting.sort(key=lambda m: (m.missed_at, m.caller))
    return CallbackFigures(
        float(sla_s), total, _ordered(by_manager.values()), _ordered(by_did.values()),
        tuple(waiting[:WAITING_SHOWN]), len(waiting),
    )


def _ordered(groups: Iterable[Group]) -> tuple[Group, ...]:
    return tuple(sorted(groups, key=lambda g: (-g.misses, g.key)))
