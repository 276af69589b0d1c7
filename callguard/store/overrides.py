"""Local allow/block overrides: the embedded default list when no CRM is configured."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
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

    async def get(self, phone: str) -> Override | None:
        async with self.db.reader.execute(
            "SELECT phone, action, note, created_at FROM overrides WHERE phone = ?", (phone,)
        ) as cur:
            row = await cur.fetchone()
        return Override(str(row[0]), str(row[1]), str(row[2]), float(row[3])) if row else None

    async def search(
        self, text: str = "", action: str | None = None, limit: int = 200, offset: int = 0
    ) -> tuple[list[Override], int]:
        """Rows whose phone or note contains ``text`` (case-insensitive for ASCII), newest first, and how
        many match in all. ``action`` is ``allow``, ``block`` or None for both."""
        where, params = _filter(text, action)
        async with self.db.reader.execute(f"SELECT COUNT(*) FROM overrides{where}", params) as cur:
            row = await cur.fetchone()
        matching = int(row[0]) if row else 0
        async with self.db.reader.execute(
            f"SELECT phone, action, note, created_at FROM overrides{where} "
            "ORDER BY created_at DESC, phone LIMIT ? OFFSET ?", (*params, int(limit), int(offset)),
        ) as cur:
            rows = [Override(str(p), str(a), str(n), float(t)) for p, a, n, t in await cur.fetchall()]
        return rows, matching

    async def iterate(self, action: str | None = None, batch: int = 1000) -> AsyncIterator[Override]:
        """Every row in phone order, a batch at a time (exports): never the whole table in memory."""
        where, params = _filter("", action)
        last = ""
        while True:
            clause = f"{where} AND phone > ?" if where else " WHERE phone > ?"
            async with self.db.reader.execute(
                f"SELECT phone, action, note, created_at FROM overrides{clause} ORDER BY phone LIMIT ?",
                (*params, last, batch),
            ) as cur:
                rows = await cur.fetchall()
            for p, a, n, t in rows:
                yield Override(str(p), str(a), str(n), float(t))
            if len(rows) < batch:
                return
            last = str(rows[-1][0])


def _filter(text: str, action: str | None) -> tuple[str, tuple[object, ...]]:
    """A WHERE clause from constants only; the search text goes in as a LIKE parameter, its wildcards
    escaped so ``%`` and ``_`` match themselves."""
    clauses: list[str] = []
    params: list[object] = []
    if action is not None:
        if action not in ("allow", "block"):
            raise ValueError(f"action must be allow or block, not {action!r}")
        clauses.append("action = ?")
        params.append(action)
    text = text.strip()
    if text:
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(phone LIKE ? ESCAPE '\\' OR note LIKE ? ESCAPE '\\')")
        params += [like, like]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
