"""All open call-backs, pure: the indexes the driver needs around ``loop.step`` (no I/O, no clock).

* by key (the lead), by customer (E.164: where a detected attempt or a customer getting through goes),
  a heap of due times (``tick(now)`` steps every call-back whose timer is due, stale heap entries are
  skipped), and the set waiting for someone to become free (``freed(now)``).
* ``make_picker`` binds the rule in pick.py to the presence, the roster's hours, an injected random
  source and the book's own record of when each manager was last assigned.
A call-back leaves the book when it reaches a terminal state; every ``Step`` returned is what the store
must persist (``step.callback.to_row()``) before the driver carries out its actions.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable

from callguard.callbacks.loop import (
    HANDOFF_WAITING,
    TIMED,
    Attempt,
    Callback,
    Context,
    Event,
    Freed,
    GotThrough,
    LeadOpened,
    Picker,
    State,
    Step,
    TimerDue,
    step,
)
from callguard.callbacks.pick import Choice, choose
from callguard.callbacks.presence import Presence
from callguard.callbacks.settings import CallbackConfig


class CallbackBook:
    __slots__ = ("_by_customer", "_heap", "_open", "_waiting", "cfg", "ctx", "last_assigned")

    def __init__(self, cfg: CallbackConfig, ctx: Context | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self._open: dict[str, Callback] = {}
        self._by_customer: dict[str, set[str]] = {}
        self._heap: list[tuple[float, str]] = []
        self._waiting: set[str] = set()
        self.last_assigned: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._open)

    def get(self, key: str) -> Callback | None:
        return self._open.get(key)

    def values(self) -> list[Callback]:
        """Every open call-back (a copy: safe to step while iterating)."""
        return list(self._open.values())

    def for_customer(self, customer: str) -> list[Callback]:
        return [self._open[k] for k in sorted(self._by_customer.get(customer, ()))]

    def bind(self, presence: Presence, rng: random.Random) -> None:
        self.ctx = Context(self.cfg, make_picker(presence, self.last_assigned, rng), presence.roster.head_from)

    def load(self, rows: Iterable[dict[str, object]]) -> int:
        """After a restart: the open rows from the store; their timers resume where they were."""
        n = 0
        for row in rows:
            cb = Callback.from_row(dict(row))
            if cb.is_open:
                self._put(cb)
                n += 1
        return n

    # --- inputs -------------------------------------------------------------------------------------

    def open(self, key: str, customer: str, at: float, *, responsible: str = "", repeat: bool = False) -> Step:
        cb = self._open.get(key) or Callback(key, customer, at, responsible=responsible)
        return self.apply(cb, LeadOpened(at, repeat))

    def apply(self, cb: Callback, event: Event) -> Step:
        assert self.ctx is not None, "bind() or pass a Context first"
        result = step(cb, event, self.ctx)
        for a in result.actions:
            if a.kind == "assign":
                self.last_assigned[a.manager] = event.at
        self._put(result.callback)
        return result

    def tick(self, now: float, limit: int | None = None) -> list[Step]:
        """The call-backs whose timer is due at ``now`` (at most ``limit``: the rest stay due for the next
        tick, so a burst never holds the event loop long)."""
        out: list[Step] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(out) < limit):
            due, key = heapq.heappop(self._heap)
            cb = self._open.get(key)
            if cb is None or cb.due != due:
                continue  # moved or closed since: a stale entry
            out.append(self.apply(cb, TimerDue(now)))
        return out

    def freed(self, now: float) -> list[Step]:
        """Someone became free: the call-backs waiting for a manager try again (oldest miss first)."""
        keys = sorted(self._waiting, key=lambda k: self._open[k].missed_at)
        return [self.apply(self._open[k], Freed(now)) for k in keys if k in self._waiting]

    def attempt(self, customer: str, event: Attempt) -> list[Step]:
        return [self.apply(cb, event) for cb in self.for_customer(customer)]

    def got_through(self, customer: str, at: float) -> list[Step]:
        return [self.apply(cb, GotThrough(at)) for cb in self.for_customer(customer)]

    def next_due(self) -> float | None:
        while self._heap:
            due, key = self._heap[0]
            cb = self._open.get(key)
            if cb is not None and cb.due == due:
                return due
            heapq.heappop(self._heap)
        return None

    # --- bookkeeping --------------------------------------------------------------------------------

    def _put(self, cb: Callback) -> None:
        old = self._open.get(cb.key)
        if not cb.is_open:
            self._open.pop(cb.key, None)
            self._waiting.discard(cb.key)
            keys = self._by_customer.get(cb.customer)
            if keys is not None:
                keys.discard(cb.key)
                if not keys:
                    del self._by_customer[cb.customer]
            return
        self._open[cb.key] = cb
        self._by_customer.setdefault(cb.customer, set()).add(cb.key)
        if cb.state is State.WAITING or (cb.state in TIMED and cb.reason == HANDOFF_WAITING):
            self._waiting.add(cb.key)
        else:
            self._waiting.discard(cb.key)
        if cb.due is not None and (old is None or old.due != cb.due):
            heapq.heappush(self._heap, (cb.due, cb.key))


def make_picker(presence: Presence, last_assigned: dict[str, float], rng: random.Random) -> Picker:
    """The loop's ``pick``: the rule in pick.py over who ``presence`` says is free at that moment."""
    roster = presence.roster

    def pick(cb: Callback, at: float) -> Choice:
        free, on_duty = presence.snapshot(at)
        opens = [t for m in roster.managers if (t := m.next_on_duty(at)) is not None] if not on_duty else []
        return choose(
            free, on_duty=on_duty, previous=cb.manager or None, responsible=cb.responsible or None,
            last_assigned=last_assigned, next_on_duty=min(opens, default=None), rng=rng,
        )

    return pick
