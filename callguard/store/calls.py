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


@dataclass(frozen=True, slots=True)
class Recorded:
    settled: set[str]  # a row that says what happened: never written again
    lost: set[str]  # a row that says ``lost``: a record that knows better replaces it (``Calls.record``)


_ROW = "SELECT linkedid, uniqueid, caller, did, verdict, outcome, reason, started_at, ended_at, wait_s FROM calls"


class Calls:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, row: CallRow, lead: dict[str, Any] | None, now: float) -> bool:
        """Write the call and, for a lead, its outbox item in ONE transaction keyed by Linkedid.

        False when this Linkedid was already recorded: a second outcome for a call is a no-op, so a
        replayed stream or a restart can never make a second lead. The one exception is a row that says
        ``lost`` (its events had a hole and no record of it was found then): a later outcome that knows
        what happened (a reconcile that found the record) replaces it, once — a lost row never has a lead,
        and the replacement is no longer lost, so this too gives at most one lead per Linkedid.
        """
        async with self.db.write() as conn:
            cur = await conn.execute(
                "INSERT INTO calls(linkedid, uniqueid, caller, did, verdict, outcome, reason, "
                "started_at, ended_at, wait_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(linkedid) DO UPDATE SET uniqueid = excluded.uniqueid, caller = excluded.caller, "
                "did = excluded.did, verdict = excluded.verdict, outcome = excluded.outcome, "
                "reason = excluded.reason, started_at = excluded.started_at, ended_at = excluded.ended_at, "
                "wait_s = excluded.wait_s WHERE calls.outcome = 'lost' AND excluded.outcome != 'lost'",
                (row.linkedid, row.uniqueid, row.caller, row.did, row.verdict, row.outcome, row.reason,
                 row.started_at, row.ended_at, row.wait_s),
            )
            if cur.rowcount != 1:
                return False
            if lead is not None:
                await enqueue(conn, row.linkedid, json.dumps(lead, ensure_ascii=False), now)
        return True

    async def recorded(self, linkedids: list[str]) -> Recorded:
        """Which of ``linkedids`` have a call row (a reconcile's "already settled"; ``lost`` rows apart:
        a record may still say what happened to them), in chunks of 500."""
        out = Recorded(set(), set())
        for i in range(0, len(linkedids), 500):
            chunk = linkedids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            async with self.db.reader.execute(
                f"SELECT linkedid, outcome FROM calls WHERE linkedid IN ({marks})", chunk
            ) as cur:
                for lid, outcome in await cur.fetchall():
                    (out.lost if outcome == "lost" else out.settled).add(str(lid))
        return out

    async def lost_since(self, since: float, limit: int = 100) -> list[CallRow]:
        """Calls recorded as lost from their events alone (not ``record_unclear``: a record said that),
        newest first: what a later look at Asterisk's records may still explain."""
        async with self.db.reader.execute(
            f"{_ROW} WHERE ended_at >= ? AND outcome = 'lost' AND reason != 'record_unclear' "
            "ORDER BY ended_at DESC LIMIT ?", (since, limit)
        ) as cur:
            return [CallRow(*r) for r in await cur.fetchall()]

    async def get(self, linkedid: str) -> CallRow | None:
        async with self.db.reader.execute(
            f"{_ROW} WHERE linkedid = ?", (linkedid,)
        ) as cur:
            r = await cur.fetchone()
        return CallRow(*r) if r else None
