"""A store with a known set of call-backs, written through the store's own ``Callbacks.save`` (the rows the
loop writes: ``Callback.to_row()``): the call-back figures of stats, ``/v1/stats`` and the dashboard.

Six misses in the last week and one older (outside a 7-day window). The expected figures are worked out
by hand in the tests from the table below, not from the code under test.
"""

from __future__ import annotations

from callguard.callbacks.loop import Callback, State
from callguard.store import Store
from callguard.store.callbacks import CallbackRecord, Callbacks

DAY = 86400.0
DID_A = "+74950000001"
DID_B = "+74950000002"
DID_EVIL = "<b>evil</b>"

# key, customer, did, state, manager, by, missed (s before now), wait to first attempt (None: none), hand-ons
ROWS: list[tuple[str, str, str, State, str, str, float, float | None, int]] = [
    ("cb1", "+79030000001", DID_A, State.REACHED, "Ivan", "Ivan", 5 * DAY, 60.0, 0),
    ("cb2", "+79030000002", DID_A, State.REACHED, "Ivan", "Ivan", 4 * DAY, 300.0, 1),
    ("cb3", "+79030000003", DID_B, State.ATTEMPTED, "Petr", "Petr", 3 * DAY, 1200.0, 2),
    ("cb4", "+79030000004", DID_B, State.GOT_THROUGH, "Petr", "", 2 * DAY, None, 0),
    ("cb5", "+79030000005", DID_EVIL, State.ESCALATED, "Petr", "", 1 * DAY, None, 3),
    ("cb6", "+79030000006", DID_A, State.WAITING, "", "", 2 * 3600.0, None, 0),
    ("cb0", "+79030000000", DID_A, State.REACHED, "Ivan", "Ivan", 8 * DAY, 10.0, 0),  # outside 7 days
]


async def seed_callbacks(store: Store, now: float) -> None:
    records = []
    for key, customer, did, state, manager, by, ago, wait, handoffs in ROWS:
        missed = now - ago
        first = missed + wait if wait is not None else None
        cb = Callback(key, customer, missed, state=state, manager=manager, handoffs=handoffs, by=by,
                      assignees=(manager,) if manager else (), attempts=int(first is not None),
                      first_attempt_at=first, first_talk_at=first if state is State.REACHED else None,
                      closed_at=first if state is State.REACHED else None)
        records.append(CallbackRecord(cb.to_row(), did, f"lead-{key}"))
    await Callbacks(store.db).save(records, now)
