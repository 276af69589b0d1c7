"""The call-back intake's poll (``Callbacks.delivered_leads``, asked every second) must cost the same
whatever the outbox's history: sent leads are kept for good, so a read that walks them all grows without
bound (migration 7's index). Measured in SQLite VM steps (``set_progress_handler``), a count, not a time."""

from __future__ import annotations

import json
from pathlib import Path

from callguard.store import Store
from callguard.store.callbacks import Callbacks

T0 = 1796114370.0


async def _history(store: Store, old: int, new: int) -> None:
    """``old`` sent leads the loop took in long ago, then ``new`` sent just now (not taken yet)."""
    rows = [(f"old.{i}", T0 - 86_400 + i * 0.01) for i in range(old)] + [(f"new.{i}", T0 + i) for i in range(new)]
    async with store.db.write() as conn:
        await conn.executemany(
            "INSERT INTO outbox(linkedid, payload, state, attempts, next_at, crm_ref, created_at, updated_at) "
            "VALUES (?, ?, 'sent', 1, 0, ?, ?, ?)",
            [(lid, json.dumps({"linkedid": lid, "caller": "+79030000001"}), "ref", at, at) for lid, at in rows])
    await Callbacks(store.db).save([], T0, taken=[(f"old.{i}", f"old.{i}") for i in range(old)])


async def _steps_of_a_poll(store: Store) -> tuple[int, list[str]]:
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    await store.db.reader.set_progress_handler(count, 1)
    try:
        leads = await Callbacks(store.db).delivered_leads(T0 - 5)
    finally:
        await store.db.reader.set_progress_handler(None, 1)
    return steps[0], [lead.linkedid for lead in leads]


async def test_a_poll_reads_the_new_leads_not_the_history(tmp_path: Path) -> None:
    counts = []
    for old in (100, 3000):
        store = await Store.open(f"{tmp_path}/h{old}.sqlite3")
        try:
            await _history(store, old, 3)
            steps, taken = await _steps_of_a_poll(store)
        finally:
            await store.close()
        assert taken == ["new.0", "new.1", "new.2"]  # oldest first, none of the history
        counts.append(steps)
    small, large = counts
    # 30 times the history: through outbox_due (state, next_at) the steps grew ~30-fold with it
    assert large < small * 1.5, counts
