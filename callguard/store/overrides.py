"""Local allow/block overrides: the embedded default list when no CRM is configured."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from callguard.store.db import Database


@dataclass(frozen=True, slots=True)
class Override:
    phone: str
    action: str  # allow | block
    note: str
    created_at: float


class Overrides:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert_many(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """(phone, action, note) rows; a later row for the same phone wins. Returns rows written."""
        now = time.time()
        batch = [(p, a, n, now) for p, a, n in rows]
        async with self.db.write() as conn:
            await conn.executemany(
                "INSERT INTO overrides(phone, action, note, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(phone) DO UPDATE SET action=excluded.action, note=excluded.note, "
                "created_at=excluded.created_at",
                batch,
            )
        return len(batch)

    async def delete(self, phone: str) -> bool:
        async with self.db.write() as conn:
            cur = await conn.execute("DELETE FROM overrides WHERE phone = ?", (phone,))
            return cur.rowcount > 0

    async def count(self) -> dict[str, int]:
        async with self.db.reader.execute("SELECT action, COUNT(*) FROM overrides GROUP BY action") as cur:
            return {str(a): int(n) for a, n in await cur.fetchall()}
