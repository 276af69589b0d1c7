"""Call-back figures for ``callguard stats``, pure: the call-back rows of a window in, figures out.

Time to call-back = from the miss to the first attempt (a manager dialling the customer). Within SLA =
that time ≤ ``callback.sla``. Grouped per manager (who called back) and per DID (the source). "Never
called back" = no attempt (yet): the customer getting through or the CRM closing it count apart.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from callguard.store.callbacks import CallbackRecord


@dataclass
class Figures:
    key: str
    misses: int = 0
    called_back: int = 0
    within_sla: int = 0
    reached: int = 0
    got_through: int = 0
    closed_in_crm: int = 0
    open: int = 0
    handoffs: int = 0
    waits: list[float] = field(default_factory=list, repr=False)

    @property
    def never_called_back(self) -> int:
        return self.misses - self.called_back

    def as_dict(self) -> dict[str, Any]:
        waits = sorted(self.waits)
        p90 = waits[min(len(waits) - 1, int(0.9 * len(waits)))] if waits else None
        return {"key": self.key, "misses": self.misses, "called_back": self.called_back,
                "never_called_back": self.never_called_back, "reached": self.reached,
                "got_through": self.got_through, "closed_in_crm": self.closed_in_crm, "open": self.open,
                "handoffs": self.handoffs,
                "median_s": round(statistics.median(waits), 1) if waits else None,
                "p90_s": round(p90, 1) if p90 is not None else None,
                "within_sla_share": round(self.within_sla / self.misses, 4) if self.misses else None}


def _add(f: Figures, r: dict[str, Any], state: str, sla: float) -> None:
    f.misses += 1
    f.handoffs += int(r.get("handoffs", 0))
    if r.get("first_attempt_at") is not None:
        wait = float(r["first_attempt_at"]) - float(r["missed_at"])
        f.called_back += 1
        f.waits.append(wait)
        f.within_sla += wait <= sla
    if state in ("reached", "got_through", "closed_in_crm"):
        setattr(f, state, getattr(f, state) + 1)
    else:
        f.open += 1


def figures(records: Iterable[CallbackRecord], sla: float) -> dict[str, Any]:
    total = Figures("")
    by_manager: dict[str, Figures] = {}
    by_did: dict[str, Figures] = {}
    for rec in records:
        r, state = rec.row, rec.state
        _add(total, r, state, sla)
        who = str(r.get("by") or r.get("manager") or "-")
        _add(by_manager.setdefault(who, Figures(who)), r, state, sla)
        _add(by_did.setdefault(rec.did or "-", Figures(rec.did or "-")), r, state, sla)
    return {"sla_s": sla, "total": total.as_dict(),
            "by_manager": [f.as_dict() for f in sorted(by_manager.values(), key=lambda f: -f.misses)],
            "by_did": [f.as_dict() for f in sorted(by_did.values(), key=lambda f: -f.misses)]}
