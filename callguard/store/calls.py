"""Finished calls, and the one transaction that records a missed call with its outbox item."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from callguard.store.db import Database
from callguard.store.outbox import enqueue


@dataclass(frozen=True, slots=True)
class CallRow:
    linkedid: str
    uniqueid: str
    caller: str
    did: str
    verdict: str
    outcome: str
    reason: str
    started_at: float
    ended_at: float
    wait_s: float


class Calls:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, row: CallRow, lead: dict[str, Any] | None, now: float) -> bool:
        """Write the call and, for a lead, its outbox item in ONE transaction keyed by Linkedid.

        False when this Linkedid was already recorded: a second outcome for a call is a no-op, so a
        replayed stream or a restart can never make a second lead.
        """
        async with self.db.write() as conn:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO calls(linkedid, uniqueid, caller, did, verdict, outcome, reason, "
                "started_at, ended_at, wait_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.linkedid, row.uniqueid, row.caller, row.did, row.verdict, row.outcome, row.reason,
                 row.started_at, row.ended_at, row.wait_s),
            )
            if cur.rowcount != 1:
                return False
            if lead is not None:
                await enqueue(conn, row.linkedid, json.dumps(lead, ensure_ascii=False), now)
        return True

    async def get(self, linkedid: str) -> CallRow | None:
        async with self.db.reader.execute(
            "SELECT linkedid, uniqueid, caller, did, verdict, outcome, reason, started_at, ended_at, wait_s "
            "FROM calls WHERE linkedid = ?", (linkedid,)
        ) as cur:
            r = await cur.fetchone()
        return CallRow(*r) if r else None
