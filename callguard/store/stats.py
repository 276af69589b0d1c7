"""What happened to the calls: screens by verdict, misses by reason and DID, answered share.

``callguard stats`` and ``/v1/stats`` read the same ``Report``. Screens come from ``screens`` (one row
per FastAGI screen, ``at`` = when it was answered); finished calls from ``calls`` (``ended_at`` decides
the window and the day, so a call is counted once, when it is over). The DID is the number the caller
dialled, i.e. the advertising source: grouping by it shows which number draws spam and which loses calls.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

from callguard.store.db import Database

GroupBy = Literal["day", "did", "reason"]

# ``callguard doctor`` screens a test caller through a running service to prove the port is ours;
# that screen is not traffic.
DOCTOR_UNIQUEID = "callguard-doctor"

# Column expressions per grouping; only these constants reach the SQL text. Days are local calendar
# days (the sales team's "Monday" is not UTC's): SQL groups by 15-minute slot — every UTC offset in use
# is a multiple of 15 minutes — and Python names each slot's local day, a few hundred calls a week
# instead of one Python call per row.
SLOT = 900
_SCREEN_KEY = {None: "''", "day": f"CAST(at / {SLOT} AS INTEGER)", "did": "did", "reason": "reason"}
_CALL_KEY = {None: "''", "day": f"CAST(ended_at / {SLOT} AS INTEGER)", "did": "did", "reason": "reason"}


@dataclass
class Row:
    """One line of the report; ``key`` is the day, the DID or the reason ('' for the whole window)."""

    key: str
    screened: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    missed: int = 0
    missed_by_reason: dict[str, int] = field(default_factory=dict)
    other_calls: dict[str, int] = field(default_factory=dict)  # spam / short / lost outcomes
    abandon_waits: list[float] = field(default_factory=list, repr=False)

    @property
    def spam_blocked(self) -> int:
        return self.verdicts.get("spam", 0)

    @property
    def answered_share(self) -> float | None:
        """Answered ÷ (answered + missed): spam, too-short and lost calls are not calls to answer."""
        total = self.answered + self.missed
        return round(self.answered / total, 4) if total else None

    @property
    def median_abandon_wait_s(self) -> float | None:
        return round(statistics.median(self.abandon_waits), 3) if self.abandon_waits else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "screened": self.screened,
            "verdicts": dict(sorted(self.verdicts.items())),
            "spam_blocked": self.spam_blocked,
            "answered": self.answered,
            "missed": self.missed,
            "missed_by_reason": dict(sorted(self.missed_by_reason.items())),
            "other_calls": dict(sorted(self.other_calls.items())),
            "answered_share": self.answered_share,
            "median_abandon_wait_s": self.median_abandon_wait_s,
            "abandoned": len(self.abandon_waits),
        }


@dataclass
class Report:
    since: float
    until: float
    by: str | None
    total: Row
    rows: list[Row]
    missed_by_did: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": datetime.fromtimestamp(self.since, UTC).isoformat(),
            "until": datetime.fromtimestamp(self.until, UTC).isoformat(),
            "by": self.by,
            "total": self.total.as_dict(),
            "missed_by_did": self.missed_by_did,
            "rows": [r.as_dict() for r in self.rows],
        }


class Stats:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def report(
        self, since: float, until: float, by: GroupBy | None = None, tz: tzinfo = UTC
    ) -> Report:
        if by not in _SCREEN_KEY:
            raise ValueError(f"cannot group by {by!r}")
        conn = self.db.reader
        days: dict[int, str] = {}

        def label(key: Any) -> str:
            if by != "day":
                return str(key)
            if key not in days:
                days[key] = datetime.fromtimestamp(int(key) * SLOT, tz).date().isoformat()
            return days[key]

        rows: dict[str, Row] = {}
        total = Row("")
        sk, ck = _SCREEN_KEY[by], _CALL_KEY[by]
        window = (since, until)
        async with conn.execute(
            f"SELECT {sk}, verdict, COUNT(*) FROM screens WHERE at >= ? AND at < ? AND uniqueid != ? "
            "GROUP BY 1, 2",
            (*window, DOCTOR_UNIQUEID),
        ) as cur:
            for key, verdict, n in await cur.fetchall():
                for row in (_row(rows, label(key)), total):
                    row.screened += n
                    row.verdicts[verdict] = row.verdicts.get(verdict, 0) + n
        async with conn.execute(
            f"SELECT {ck}, outcome, reason, COUNT(*) FROM calls WHERE ended_at >= ? AND ended_at < ? "
            "GROUP BY 1, 2, 3",
            window,
        ) as cur:
            for key, outcome, reason, n in await cur.fetchall():
                for row in (_row(rows, label(key)), total):
                    _add_call(row, outcome, reason, n)
        async with conn.execute(
            f"SELECT {ck}, wait_s FROM calls WHERE ended_at >= ? AND ended_at < ? "
            "AND outcome = 'missed' AND reason = 'abandoned'",
            window,
        ) as cur:
            for key, wait_s in await cur.fetchall():
                _row(rows, label(key)).abandon_waits.append(float(wait_s))
                total.abandon_waits.append(float(wait_s))
        by_did = await self._missed_by_did(window)
        ordered = _order(rows.values(), by) if by else []
        return Report(since, until, by, total, ordered, by_did)

    async def _missed_by_did(self, window: tuple[float, float]) -> dict[str, int]:
        async with self.db.reader.execute(
            "SELECT did, COUNT(*) FROM calls WHERE ended_at >= ? AND ended_at < ? AND outcome = 'missed' "
            "GROUP BY did ORDER BY 2 DESC, 1",
            window,
        ) as cur:
            return {str(did): int(n) for did, n in await cur.fetchall()}


def _row(rows: dict[str, Row], key: object) -> Row:
    k = str(key)
    if k not in rows:
        rows[k] = Row(k)
    return rows[k]


def _add_call(row: Row, outcome: str, reason: str, n: int) -> None:
    if outcome == "answered":
        row.answered += n
    elif outcome == "missed":
        row.missed += n
        row.missed_by_reason[reason] = row.missed_by_reason.get(reason, 0) + n
    else:
        row.other_calls[outcome] = row.other_calls.get(outcome, 0) + n


def _order(rows: Iterable[Row], by: str) -> list[Row]:
    if by == "day":
        return sorted(rows, key=lambda r: r.key)
    # DIDs and reasons: the ones that matter most first (most missed, then most screened).
    return sorted(rows, key=lambda r: (-r.missed, -r.screened, r.key))
