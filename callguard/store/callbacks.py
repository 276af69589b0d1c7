"""The ``callbacks`` table (one row per call-back, ``callbacks.loop.Callback.to_row()`` in ``data``) and
``callback_leads`` (which delivered leads the loop has taken in), ``callback_managers`` (when each manager
was last assigned one), plus the reads the loop's intake needs.

Every transition is written here BEFORE its actions are carried out: ``pending`` holds the actions of the
last step not yet done (a restart re-runs them with the same epoch, so a CRM call is redone, never a
second hand-on). A lead is taken in by the same transaction that writes its call-back, so a crash
between the two makes the intake see it again, never twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from callguard.store.db import Database

TERMINAL_STATES = ("reached", "got_through", "closed_in_crm")
_COLUMNS = ("key, customer, did, lead_ref, state, manager, by_manager, missed_at, due, handoffs, attempts, "
            "first_attempt_at, first_talk_at, closed_at, reason, data, pending, opened_at, updated_at")


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """One call-back as the store holds it: the loop's row plus what the driver knows around it."""

    row: dict[str, Any]  # Callback.to_row()
    did: str = ""
    lead_ref: str = ""  # the CRM lead's id (the outbox item's crm_ref)
    pending: list[dict[str, Any]] = field(default_factory=list)  # actions persisted, not yet carried out
    opened_at: float = 0.0
    updated_at: float = 0.0

    @property
    def key(self) -> str:
        return str(self.row["key"])

    @property
    def state(self) -> str:
        return str(self.row.get("state", "waiting"))

    def to_json(self) -> dict[str, Any]:
        r = self.row
        return {"key": self.key, "customer": r.get("customer", ""), "did": self.did, "lead": self.lead_ref,
                "state": self.state, "manager": r.get("manager", ""), "by": r.get("by", ""),
                "handoffs": r.get("handoffs", 0), "attempts": r.get("attempts", 0),
                "assignees": list(r.get("assignees", ())), "missed_at": r.get("missed_at"),
                "first_attempt_at": r.get("first_attempt_at"), "first_talk_at": r.get("first_talk_at"),
                "closed_at": r.get("closed_at"), "due": r.get("due"), "reason": r.get("reason", ""),
                "misses": r.get("misses", 1)}


@dataclass(frozen=True, slots=True)
class DeliveredLead:
    linkedid: str
    payload: dict[str, Any]  # the MissedCall as the sink got it
    crm_ref: str
    updated_at: float


def _record(r: Sequence[Any]) -> CallbackRecord:
    return CallbackRecord(json.loads(r[15]), str(r[2]), str(r[3]), json.loads(r[16]), float(r[17]), float(r[18]))


def _values(rec: CallbackRecord, now: float) -> tuple[Any, ...]:
    r = rec.row
    return (
        rec.key, r["customer"], rec.did, rec.lead_ref, r["state"], r.get("manager", ""), r.get("by", ""),
        r["missed_at"], r.get("due"), r.get("handoffs", 0), r.get("attempts", 0), r.get("first_attempt_at"),
        r.get("first_talk_at"), r.get("closed_at"), r.get("reason", ""),
        json.dumps(r, ensure_ascii=False, separators=(",", ":")),
        json.dumps(rec.pending, ensure_ascii=False, separators=(",", ":")), rec.opened_at or now, now,
    )


_UPSERT = (
    f"INSERT INTO callbacks({_COLUMNS}) VALUES ({', '.join('?' * 19)}) "
    "ON CONFLICT(key) DO UPDATE SET state = excluded.state, manager = excluded.manager, "
    "by_manager = excluded.by_manager, due = excluded.due, handoffs = excluded.handoffs, "
    "attempts = excluded.attempts, first_attempt_at = excluded.first_attempt_at, "
    "first_talk_at = excluded.first_talk_at, closed_at = excluded.closed_at, reason = excluded.reason, "
    "data = excluded.data, pending = excluded.pending, updated_at = excluded.updated_at, "
    "did = CASE WHEN excluded.did != '' THEN excluded.did ELSE callbacks.did END, "
    "lead_ref = CASE WHEN excluded.lead_ref != '' THEN excluded.lead_ref ELSE callbacks.lead_ref END"
)


class Callbacks:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(
        self, records: Iterable[CallbackRecord], now: float, taken: Iterable[tuple[str, str]] = (),
        assigned: Mapping[str, float] | None = None,
    ) -> int:
        """Write call-backs (the last state of each), mark the leads ``taken`` = (outbox linkedid,
        call-back key) and the managers' last assignment times ``assigned`` in ONE transaction."""
        values = [_values(rec, now) for rec in records]
        leads = [(linkedid, key, now) for linkedid, key in taken]
        managers = list((assigned or {}).items())
        if not values and not leads and not managers:
            return 0
        async with self.db.write() as conn:
            if values:
                await conn.executemany(_UPSERT, values)
            if leads:
                await conn.executemany(
                    "INSERT OR IGNORE INTO callback_leads(linkedid, callback, at) VALUES (?, ?, ?)", leads
                )
            if managers:
                await conn.executemany(
                    "INSERT INTO callback_managers(name, last_assigned_at) VALUES (?, ?) ON CONFLICT(name) "
                    "DO UPDATE SET last_assigned_at = MAX(last_assigned_at, excluded.last_assigned_at)", managers
                )
        return len(values)

    async def last_assigned(self) -> dict[str, float]:
        """Manager name → when they were last assigned a call-back (the picker's "least recently")."""
        async with self.db.reader.execute("SELECT name, last_assigned_at FROM callback_managers") as cur:
            return {str(n): float(t) for n, t in await cur.fetchall()}

    async def get(self, key: str) -> CallbackRecord | None:
        async with self.db.reader.execute(f"SELECT {_COLUMNS} FROM callbacks WHERE key = ?", (key,)) as cur:
            r = await cur.fetchone()
        return _record(r) if r else None

    async def open_rows(self) -> list[CallbackRecord]:
        """What a restart loads: every call-back not in a terminal state."""
        marks = ", ".join("?" * len(TERMINAL_STATES))
        async with self.db.reader.execute(
            f"SELECT {_COLUMNS} FROM callbacks WHERE state NOT IN ({marks}) ORDER BY missed_at", TERMINAL_STATES
        ) as cur:
            return [_record(r) for r in await cur.fetchall()]

    async def listing(self, since: float, open_only: bool = False, limit: int = 1000) -> list[CallbackRecord]:
        marks = ", ".join("?" * len(TERMINAL_STATES))
        where = f"missed_at >= ? AND state NOT IN ({marks})" if open_only else "missed_at >= ?"
        args: tuple[Any, ...] = (since, *TERMINAL_STATES) if open_only else (since,)
        async with self.db.reader.execute(
            f"SELECT {_COLUMNS} FROM callbacks WHERE {where} ORDER BY missed_at DESC LIMIT ?", (*args, limit)
        ) as cur:
            return [_record(r) for r in await cur.fetchall()]

    async def in_window(self, since: float, until: float) -> list[CallbackRecord]:
        """The call-backs of the misses in ``[since, until)`` (stats)."""
        async with self.db.reader.execute(
            f"SELECT {_COLUMNS} FROM callbacks WHERE missed_at >= ? AND missed_at < ? ORDER BY missed_at",
            (since, until),
        ) as cur:
            return [_record(r) for r in await cur.fetchall()]

    async def count_open(self) -> int:
        marks = ", ".join("?" * len(TERMINAL_STATES))
        async with self.db.reader.execute(
            f"SELECT COUNT(*) FROM callbacks WHERE state NOT IN ({marks})", TERMINAL_STATES
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # --- the loop's intake: the outbox's delivered leads and the answered calls ----------------------

    async def delivered_leads(self, since: float, limit: int = 200) -> list[DeliveredLead]:
        """Leads the outbox delivered (``sent``) at or after ``since`` that no call-back has taken in."""
        async with self.db.reader.execute(
            "SELECT o.linkedid, o.payload, o.crm_ref, o.updated_at FROM outbox o "
            "LEFT JOIN callback_leads t ON t.linkedid = o.linkedid "
            "WHERE o.state = 'sent' AND o.updated_at >= ? AND t.linkedid IS NULL "
            "ORDER BY o.updated_at LIMIT ?",
            (since, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [DeliveredLead(str(r[0]), json.loads(r[1]), str(r[2]), float(r[3])) for r in rows]

    async def answered_since(self, since: float, limit: int = 500) -> list[tuple[str, str, float, float]]:
        """Answered calls that ended at or after ``since``: (linkedid, caller, answered at, ended at); the
        answer is ``started_at + wait_s`` (the tracker's wait runs to the answer for an answered call)."""
        async with self.db.reader.execute(
            "SELECT linkedid, caller, started_at + wait_s, ended_at FROM calls "
            "WHERE outcome = 'answered' AND ended_at >= ? ORDER BY ended_at LIMIT ?",
            (since, limit),
        ) as cur:
            return [(str(a), str(b), float(c), float(d)) for a, b, c, d in await cur.fetchall()]
