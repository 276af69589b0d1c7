"""Where the CRM sync stands (cursor, full-sync resume point) and the CRM's rotated OAuth tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

from callguard.store.db import Database

_FIELDS = ("cursor", "last_sync_at", "last_full_at", "full_started_at", "full_page")


@dataclass(frozen=True, slots=True)
class SyncRow:
    crm: str
    cursor: str = ""
    last_sync_at: float = 0.0
    last_full_at: float = 0.0
    full_started_at: float = 0.0  # set while a full sync is unfinished (with full_page)
    full_page: str = ""  # resume point of an unfinished full sync


class SyncState:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, crm: str) -> SyncRow:
        async with self.db.reader.execute(
            "SELECT cursor, last_sync_at, last_full_at, full_started_at, full_page FROM sync_state WHERE crm = ?",
            (crm,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return SyncRow(crm)
        return SyncRow(crm, str(row[0]), float(row[1]), float(row[2]), float(row[3]), str(row[4]))

    async def latest_sync_at(self) -> float:
        """The newest ``last_sync_at`` of any CRM; 0 when none ever synced (readiness, the sync age gauge)."""
        async with self.db.reader.execute("SELECT COALESCE(MAX(last_sync_at), 0) FROM sync_state") as cur:
            row = await cur.fetchone()
        return float(row[0]) if row else 0.0

    async def update(self, crm: str, **values: str | float) -> None:
        """Set some of cursor / last_sync_at / last_full_at / full_started_at / full_page."""
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown sync_state fields: {sorted(unknown)}")
        cols = list(values)
        async with self.db.write() as conn:
            await conn.execute("INSERT INTO sync_state(crm) VALUES (?) ON CONFLICT(crm) DO NOTHING", (crm,))
            if cols:
                sets = ", ".join(f"{c} = ?" for c in cols)
                await conn.execute(f"UPDATE sync_state SET {sets} WHERE crm = ?", (*values.values(), crm))

    async def get_tokens(self, crm: str) -> tuple[str, str] | None:
        async with self.db.reader.execute(
            "SELECT access_token, refresh_token FROM crm_tokens WHERE crm = ?", (crm,)
        ) as cur:
            row = await cur.fetchone()
        return (str(row[0]), str(row[1])) if row else None

    async def save_tokens(self, crm: str, access_token: str, refresh_token: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO crm_tokens(crm, access_token, refresh_token, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(crm) DO UPDATE SET access_token = excluded.access_token, "
                "refresh_token = excluded.refresh_token, updated_at = excluded.updated_at",
                (crm, access_token, refresh_token, time.time()),
            )

    @staticmethod
    async def update_in(conn: aiosqlite.Connection, crm: str, **values: str | float) -> None:
        """``update`` inside the caller's transaction: a page's rows and its resume point commit together."""
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown sync_state fields: {sorted(unknown)}")
        await conn.execute("INSERT INTO sync_state(crm) VALUES (?) ON CONFLICT(crm) DO NOTHING", (crm,))
        if values:
            sets = ", ".join(f"{c} = ?" for c in values)
            await conn.execute(f"UPDATE sync_state SET {sets} WHERE crm = ?", (*values.values(), crm))
