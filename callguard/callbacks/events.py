"""What goes into the call-back loop (callbacks/loop.py ``step``) and what comes out of it: plain frozen values.

``LeadSeen`` is what a CRM read of the lead says (its status, its responsible, or that it is gone); the
loop compares it with what it recorded when the lead was assigned (``crm_verdict``), never the adapter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from callguard.crm.base import LeadSeen  # what a CRM read of the lead says (the adapters fill it)

# --- inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeadOpened:
    at: float
    repeat: bool = False  # a repeat miss re-opened the lead


@dataclass(frozen=True, slots=True)
class TimerDue:
    at: float


@dataclass(frozen=True, slots=True)
class Freed:
    at: float  # a manager became free (presence)


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    manager: str
    answered: bool
    final: bool = True  # False: the dial has begun, its outcome is not known yet
    status: str = ""


@dataclass(frozen=True, slots=True)
class GotThrough:
    at: float  # the customer called in and a manager answered


@dataclass(frozen=True, slots=True)
class CrmChanged:
    """The lead changed in the CRM. Either said outright (``status_changed``, ``responsible`` by name) or
    as a read (``seen``) the loop compares with what it recorded at the assignment. ``epoch`` ≠ 0: the
    answer to the read the loop asked for before a hand-on (``check``); 0: a webhook's hint."""

    at: float
    status_changed: bool = False
    responsible: str | None = None  # manager name the CRM now shows as responsible (None: unknown)
    seen: LeadSeen | None = None
    epoch: int = 0
    who: str = ""  # the name behind ``seen.responsible`` (roster or head), for the record


@dataclass(frozen=True, slots=True)
class CrmFailed:
    at: float
    epoch: int


@dataclass(frozen=True, slots=True)
class CrmDone:
    """The CRM step of ``epoch`` is done; ``seen`` is the lead as read just before it (its status then)
    and ``user`` the responsible callguard set (0: none set)."""

    at: float
    epoch: int
    seen: LeadSeen | None = None
    user: int = 0


Event = LeadOpened | TimerDue | Freed | Attempt | GotThrough | CrmChanged | CrmFailed | CrmDone


# --- outputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    # assign | create_task | check | notify | escalate | wait | record
    kind: str
    manager: str = ""  # assign/create_task/notify: the manager; notify/escalate: "@head" for the head
    due: float | None = None
    epoch: int = 0  # echo it in CrmFailed/CrmDone/CrmChanged
    detail: str = ""
    seconds: float | None = None  # record: the timing

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", None, 0) or k == "kind"}
