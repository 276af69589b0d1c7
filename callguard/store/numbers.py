"""The CRM contact cache and the one read the screening path makes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from callguard.store.db import Database

# (contact_id, name, owner, spam, phones in E.164): what the sync writes per contact.
ContactRows = tuple[str, str, str, bool, Sequence[str]]
_IN_CHUNK = 500  # SQLite's default limit on ? parameters is well above this


@dataclass(frozen=True, slots=True)
class PageChange:
    added: int = 0  # phone rows new to the cache
    removed: int = 0  # phone rows gone (a phone removed from a contact)
    changed: int = 0  # phone rows whose spam flag, name or owner changed


@dataclass(frozen=True, slots=True)
class Contact:
    contact_id: str
    name: str
    owner: str
    spam: bool
    source: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """Everything the store knows about one number; what ``screening.decide`` takes."""

    override: str | None = None  # allow | block
    override_note: str = ""
    contact: Contact | None = None


EMPTY = Lookup()

# One round trip: the override row (kind 0) and every contact row (kind 1) of the number, each a primary-key
# search. (A LEFT JOIN of the two ordered in SQL sorted through a temporary B-tree: ~8 µs more per screen.)
_LOOKUP_SQL = (
    "SELECT 0, action, note, '', '', 0, 0.0 FROM overrides WHERE phone = ?1 "
    "UNION ALL "
    "SELECT 1, contact_id, name, owner, source, spam, updated_at FROM numbers WHERE phone = ?1"
)


_UPSERT_SQL = (
    "INSERT INTO numbers(phone, contact_id, name, owner, spam, source, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(phone, contact_id) DO UPDATE SET name = excluded.name, owner = excluded.owner, "
    "spam = excluded.spam, source = excluded.source, updated_at = excluded.updated_at"
)


class Numbers:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def lookup(self, phone: str | None) -> Lookup:
        return self.lookup_now(phone)

    def lookup_now(self, phone: str | None) -> Lookup:
        """The screening read: synchronous on the loop thread by design (see ``store.db``); a lock
        wait raises ``sqlite3.OperationalError`` after HOT_BUSY_TIMEOUT_MS."""
        if not phone:
            return EMPTY
        override: tuple[str, str] | None = None
        best: tuple[int, float, Contact] | None = None
        for kind, a, b, owner, source, spam, updated_at in self.db.hot.execute(_LOOKUP_SQL, (phone,)):
            if kind == 0:
                override = (a, b)
            elif best is None or (spam, updated_at) > best[:2]:  # a spam flag on any duplicate wins
                best = (spam, updated_at, Contact(str(a), b, owner, bool(spam), source))
        if override is None and best is None:
            return EMPTY
        return Lookup(
            override=override[0] if override else None,
            override_note=override[1] if override else "",
            contact=best[2] if best else None,
        )

    async def count(self) -> tuple[int, int]:
        """(phones cached, of which flagged spam)."""
        async with self.db.reader.execute("SELECT COUNT(*), COALESCE(SUM(spam), 0) FROM numbers") as cur:
            row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    # --- written by the CRM sync (callguard.sync) ---------------------------------------------------

    async def write_contacts(
        self, conn: aiosqlite.Connection, contacts: Sequence[ContactRows], source: str, now: float
    ) -> PageChange:
        """Replace each contact's phones inside the caller's transaction, so a reader sees a contact's old
        rows or its new rows, never a mix. Returns what changed, for ``callguard sync`` to print."""
        if not contacts:
            return PageChange()
        ids = [c[0] for c in contacts]
        before: dict[tuple[str, str], tuple[str, str, int]] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            async with conn.execute(
                "SELECT contact_id, phone, name, owner, spam FROM numbers "
                f"WHERE source = ? AND contact_id IN ({marks})",
                (source, *chunk),
            ) as cur:
                for cid, phone, name, owner, spam in await cur.fetchall():
                    before[(cid, phone)] = (name, owner, int(spam))
        rows = [(p, cid, name, owner, int(spam), source, now) for cid, name, owner, spam, phones in contacts
                for p in phones]
        after = {(r[1], r[0]): (r[2], r[3], r[4]) for r in rows}
        # Only the phones a contact lost are deleted; the rest are upserted in place. (A blind delete of
        # every contact's rows and a re-insert cost twice the B-tree work: scripts/bench_sync.py.)
        gone = [(phone, cid) for cid, phone in before if (cid, phone) not in after]
        if gone:
            await conn.executemany("DELETE FROM numbers WHERE phone = ? AND contact_id = ?", gone)
        await conn.executemany(_UPSERT_SQL, rows)
        added = sum(1 for k in after if k not in before)
        removed = len(gone)
        changed = sum(1 for k, v in after.items() if k in before and before[k] != v)
        return PageChange(added, removed, changed)

    async def purge_older(self, conn: aiosqlite.Connection, source: str, before: float) -> int:
        """After a full sync: rows it did not rewrite belong to contacts or phones the CRM no longer has.

        One DELETE over the whole source could hold the write lock for long on a big cache, but the hot
        reader never waits on it (WAL); the caller runs it in its own short transaction."""
        cur = await conn.execute("DELETE FROM numbers WHERE source = ? AND updated_at < ?", (source, before))
        return cur.rowcount

    async def delete_contacts(self, conn: aiosqlite.Connection, contact_ids: Sequence[str], source: str) -> int:
        """Inside the caller's transaction: contacts the CRM deleted (sync, webhooks)."""
        removed = 0
        for cid in contact_ids:
            cur = await conn.execute("DELETE FROM numbers WHERE contact_id = ? AND source = ?", (cid, source))
            removed += max(cur.rowcount, 0)
        return removed

    async def contacts_older(self, source: str, before: float, limit: int = 100_000) -> list[str]:
        """Contact ids with no row rewritten since ``before``: what a full sync did not see."""
        async with self.db.reader.execute(
            "SELECT DISTINCT contact_id FROM numbers WHERE source = ? AND updated_at < ? LIMIT ?",
            (source, before, limit),
        ) as cur:
            return [str(r[0]) for r in await cur.fetchall()]
