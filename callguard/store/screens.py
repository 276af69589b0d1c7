"""Screen records, written in batches after the AGI answer went out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from callguard.store.db import Database


@dataclass(frozen=True, slots=True)
class ScreenRecord:
    uniqueid: str
    at: float
    caller: str
    did: str
    verdict: str
    reason: str
    latency_ms: float


class Screens:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert_many(self, records: Sequence[ScreenRecord]) -> None:
        if not records:
            return
        async with self.db.write() as conn:
            await conn.executemany(
                "INSERT INTO screens(uniqueid, at, caller, did, verdict, reason, latency_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.uniqueid, r.at, r.caller, r.did, r.verdict, r.reason, r.latency_ms) for r in records],
            )

    async def verdict_of(self, uniqueid: str) -> str | None:
        async with self.db.reader.execute(
            "SELECT verdict FROM screens WHERE uniqueid = ? ORDER BY at DESC LIMIT 1", (uniqueid,)
        ) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None
