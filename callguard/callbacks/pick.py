"""The picking rule, pure: who gets a missed call to call back ("Assign" / "Hand on").

1. Only a *free* manager is ever picked (``presence.free``: logged in, not paused, not in a call, in hours).
2. Never the previous assignee again when another manager is free.
3. The contact's own responsible first, when free (and allowed by 2).
4. Else the least recently assigned of the rest, at random among equals (never assigned = oldest);
   the random source is injected so tests and the simulator are reproducible.
5. Nobody free but someone on duty → wait for the first who becomes free.
   Nobody on duty → wait for the first opening of anyone's hours (the morning); ``until`` says when.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class Choice:
    manager: str | None  # who; None = wait
    wait: Literal["", "nobody_free", "off_hours"] = ""
    until: float | None = None  # off_hours: when the first manager comes on duty (None: nobody ever)
    why: str = ""  # responsible | least_recent | only_one_free


def choose(
    free: Collection[str],
    *,
    on_duty: Collection[str] = (),
    previous: str | None = None,
    responsible: str | None = None,
    last_assigned: Mapping[str, float] | None = None,
    next_on_duty: float | None = None,
    rng: random.Random,
) -> Choice:
    """Pick one of ``free`` (``on_duty`` ⊇ ``free``: in hours, whatever their phone says)."""
    if not free:
        if on_duty:
            return Choice(None, "nobody_free")
        return Choice(None, "off_hours", next_on_duty)
    others = [m for m in free if m != previous]
    if not others:
        return Choice(previous, why="only_one_free")
    if responsible is not None and responsible in others:
        return Choice(responsible, why="responsible")
    last = last_assigned or {}
    oldest = min(last.get(m, NEVER) for m in others)
    pool = sorted(m for m in others if last.get(m, NEVER) == oldest)
    return Choice(rng.choice(pool), why="least_recent")
