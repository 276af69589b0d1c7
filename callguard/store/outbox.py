"""The outbox table (durable lead delivery, key = Linkedid) and the ``leads`` table (open lead per caller).

States: ``pending`` (due at ``next_at``) → ``sending`` (set BEFORE the sink is called, so a crash leaves
a trace) → ``sent`` | back to ``pending`` (retry) | ``dead`` (dead letter, `callguard outbox`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from callguard.store.db import Database

_COLUMNS = "linkedid, payload, state, attempts, next_at, last_error, crm_ref, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    linkedid: str
    payload: dict[str, Any]
    state: str
    attempts: int
    next_at: float
    last_error: str
    crm_ref: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Depth:
    pending: int  # pending + sending
    oldest_created: float | None  # created_at of the oldest of those
    dead: int


def _item(row: Any) -> OutboxItem:
    return OutboxItem(row[0], json.loads(row[1]), *row[2:])


async def enqueue(conn: aiosqlite.Connection, linkedid: str, payload: str, now: float) -> None:
    """Inside the caller's transaction (``Calls.record``)."""
    await conn.execute(
        "INSERT OR IGNORE INTO outbox(linkedid, payload, state, attempts, next_at, created_at, updated_at) "
        "VALUES (?, ?, 'pending', 0, ?, ?, ?)",
        (linkedid, payload, now, now, now),
    )


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _select(self, where: str, args: tuple[Any, ...]) -> list[OutboxItem]:
        async with self.db.reader.execute(f"SELECT {_COLUMNS} FROM outbox WHERE {where}", args) as cur:
            return [_item(r) for r in await cur.fetchall()]

    async def get(self, linkedid: str) -> OutboxItem | None:
        items = await self._select("linkedid = ?", (linkedid,))
        return items[0] if items else None

    async def due(self, now: float, limit: int = 50) -> list[OutboxItem]:
        return await self._select("state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?", (now, limit))

    async def next_due_at(self) -> float | None:
        async with self.db.reader.execute("SELECT MIN(next_at) FROM outbox WHERE state = 'pending'") as cur:
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def in_state(self, state: str, limit: int = 1000) -> list[OutboxItem]:
        return await self._select("state = ? ORDER BY created_at LIMIT ?", (state, limit))

    async def listing(self, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        if state:
            return await self.in_state(state, limit)
        return await self._select("1 ORDER BY created_at DESC LIMIT ?", (limit,))

    async def counts(self) -> dict[str, int]:
        async with self.db.reader.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state") as cur:
            return {str(s): int(n) for s, n in await cur.fetchall()}

    async def depth(self) -> Depth:
        """Items waiting (pending + sending), the oldest one's ``created_at``, and dead letters: the
        outbox gauges. Through the (state, next_at) index: delivered rows pile up and are never scanned."""
        pending, oldest, dead = 0, None, 0
        async with self.db.reader.execute(
            "SELECT state, COUNT(*), MIN(created_at) FROM outbox WHERE state IN ('pending', 'sending', 'dead') "
            "GROUP BY state"
        ) as cur:
            for state, n, first in await cur.fetchall():
                if state == "dead":
                    dead = int(n)
                else:
                    pending += int(n)
                    oldest = float(first) if oldest is None else min(oldest, float(first))
        return Depth(pending, oldest, dead)

    async def oldest_pending_created(self) -> float | None:
        async with self.db.reader.execute(
            "SELECT MIN(created_at) FROM outbox WHERE state IN ('pending', 'sending')"
        ) as cur:
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def mark_sending(self, linkedid: str, payload: dict[str, Any], now: float) -> bool:
        """Claim a pending item; the payload saved is exactly what the sink gets (repeat-lead fields too)."""
        async with self.db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, payload = ?, updated_at = ? "
                "WHERE linkedid = ? AND state = 'pending'",
                (json.dumps(payload, ensure_ascii=False), now, linkedid),
            )
            return cur.rowcount == 1

    async def mark_sent(self, linkedid: str, ref: str, now: float, lead: tuple[str, str, bool] | None) -> None:
        """``lead`` = (phone, sink, repeat): the open lead for dedupe is updated in the same transaction."""
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE outbox SET state = 'sent', crm_ref = ?, last_error = '', updated_at = ? WHERE linkedid = ?",
                (ref, now, linkedid),
            )
            if lead is None:
                return
            phone, sink, repeat = lead
            if repeat:
                await conn.execute(
                    "UPDATE leads SET last_at = ?, misses = misses + 1 WHERE phone = ? AND sink = ?",
                    (now, phone, sink),
                )
            else:
                await conn.execute(
                    "INSERT OR REPLACE INTO leads(phone, sink, crm_ref, opened_at, last_at, misses) "
                    "VALUES (?, ?, ?, ?, ?, 1)",
                    (phone, sink, ref, now, now),
                )

    async def mark_retry(self, linkedid: str, next_at: float, error: str, now: float) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE outbox SET state = 'pending', next_at = ?, last_error = ?, updated_at = ? WHERE linkedid = ?",
                (next_at, error[:500], now, linkedid),
            )

    async def mark_dead(self, linkedid: str, error: str, now: float) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE outbox SET state = 'dead', last_error = ?, updated_at = ? WHERE linkedid = ?",
                (error[:500], now, linkedid),
            )

    async def retry(self, linkedid: str, now: float) -> bool:
        """A dead letter back to pending, due now, with a fresh attempt budget."""
        async with self.db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_at = ?, updated_at = ? "
                "WHERE linkedid = ? AND state = 'dead'",
                (now, now, linkedid),
            )
            return cur.rowcount == 1

    async def drop(self, linkedid: str) -> bool:
        async with self.db.write() as conn:
            cur = await conn.execute("DELETE FROM outbox WHERE linkedid = ? AND state = 'dead'", (linkedid,))
            return cur.rowcount == 1

    async def open_lead(self, phone: str, sink: str, opened_since: float) -> tuple[str, int] | None:
        async with self.db.reader.execute(
            "SELECT crm_ref, misses FROM leads WHERE phone = ? AND sink = ? AND opened_at >= ?",
            (phone, sink, opened_since),
        ) as cur:
            row = await cur.fetchone()
        return (str(row[0]), int(row[1])) if row else None
