"""The CRM contact cache and the one read the screening path makes."""

from __future__ import annotations

from dataclasses import dataclass

from callguard.store.db import Database


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

# One round trip: the override and the most telling contact row (a spam flag on any duplicate wins).
_LOOKUP_SQL = (
    "SELECT o.action, o.note, n.contact_id, n.name, n.owner, n.spam, n.source "
    "FROM (SELECT ? AS p) AS q "
    "LEFT JOIN overrides AS o ON o.phone = q.p "
    "LEFT JOIN numbers AS n ON n.phone = q.p "
    "ORDER BY n.spam DESC, n.updated_at DESC LIMIT 1"
)


class Numbers:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def lookup(self, phone: str | None) -> Lookup:
        """The screening read: synchronous on the loop thread by design (see ``store.db``)."""
        if not phone:
            return EMPTY
        row = self.db.hot.execute(_LOOKUP_SQL, (phone,)).fetchone()
        if row is None:
            return EMPTY
        action, note, contact_id, name, owner, spam, source = row
        contact = (
            Contact(str(contact_id), name or "", owner or "", bool(spam), source or "")
            if contact_id is not None
            else None
        )
        if action is None and contact is None:
            return EMPTY
        return Lookup(override=action, override_note=note or "", contact=contact)

    async def count(self) -> tuple[int, int]:
        """(phones cached, of which flagged spam)."""
        async with self.db.reader.execute("SELECT COUNT(*), COALESCE(SUM(spam), 0) FROM numbers") as cur:
            row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)
