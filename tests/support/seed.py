"""A store filled through its own API with a known week of calls: the dashboard and browser tests.

Two DIDs (advertising sources), answered and missed calls with every reason shown, spam screens from a
few callers (one with a local-list note, one with a CRM name), a pending and a dead lead. Data that must
be escaped on a page rides along: a DID, a note and a CRM name with markup in them.
"""

from __future__ import annotations

from callguard.store import Store
from callguard.store.calls import CallRow
from callguard.store.screens import ScreenRecord

HOUR = 3600.0
DAY = 86400.0
DID_A = "+74950000001"
DID_B = "+74950000002"
DID_EVIL = "<script>alert('did')</script>"
SPAMMER = "+79990000001"
SPAMMER_NOTE = "<img src=x onerror=alert('note')>robocall"
SPAMMER_CRM = "+79990000002"
CRM_NAME = "Spam & <b>Co</b>"

# (did, outcome, reason, wait_s)
CALLS = (
    [(DID_A, "answered", "queue", 5.0)] * 6
    + [(DID_A, "missed", "abandoned", w) for w in (10.0, 30.0, 50.0)]
    + [(DID_A, "missed", "timeout", 20.0), (DID_A, "missed", "after_hours", 0.0)]
    + [(DID_B, "answered", "dial", 3.0)] * 2
    + [(DID_B, "missed", "abandoned", 70.0), (DID_B, "missed", "no_agents", 1.0)]
    + [(DID_B, "missed", "hangup_before_queue", 2.0), (DID_B, "missed", "busy", 0.0)]
    + [(DID_EVIL, "missed", "no_answer", 4.0), (DID_A, "spam", "screened", 0.0)]
)
# (did, caller, verdict)
SCREENS = (
    [(DID_A, SPAMMER, "spam")] * 4 + [(DID_B, SPAMMER_CRM, "spam")] * 2 + [(DID_A, "+79990000003", "spam")]
    + [(DID_A, "+79120000000", "clean")] * 11 + [(DID_B, "+79120000001", "clean")] * 8
    + [(DID_EVIL, "+79120000002", "clean"), (DID_A, "+79120000003", "whitelist")]
)


async def seed(store: Store, now: float) -> None:
    """Calls and screens over the last three days (never near a 7-day edge)."""
    for i, (did, outcome, reason, wait) in enumerate(CALLS):
        ended = now - 2 * HOUR - i * 3 * HOUR
        lead = {"caller": f"+7912000{i:04d}"} if outcome == "missed" and i < 2 + 6 + 3 else None
        row = CallRow(f"seed-{i}", f"u-{i}", f"+7912000{i:04d}", did, "clean", outcome, reason,
                      ended - wait - 10, ended, wait)
        await store.calls.record(row, lead, now)
    await store.screens.insert_many([
        ScreenRecord(f"s-{i}", now - HOUR - i * 2 * HOUR, caller, did, verdict, "seed", 1.0)
        for i, (did, caller, verdict) in enumerate(SCREENS)
    ])
    await store.overrides.upsert_many([(SPAMMER, "block", SPAMMER_NOTE), ("+79120000003", "allow", "the boss")])
    async with store.db.write() as conn:
        await store.numbers.write_contacts(conn, [("c1", CRM_NAME, "ivan", True, [SPAMMER_CRM])], "amocrm", now)
    item = await store.outbox.get("seed-6")
    assert item is not None
    await store.outbox.mark_dead("seed-6", "CRM said no", now)
