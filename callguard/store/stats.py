"""What happened to the calls: screens by verdict, misses by reason and DID, answered share.

``callguard stats`` and ``/v1/stats`` read the same ``Report``. Screens come from ``screens`` (one row
per FastAGI screen, ``at`` = when it was answered); finished calls from ``calls`` (``ended_at`` decides
the window and the day, so a call is counted once, when it is over). The DID is the number the caller
dialled, i.e. the advertising source: grouping by it shows which number draws spam and which loses calls.

The dashboard (callguard.web.dashboard) renders this same ``Report``, so page and CLI agree by construction:
beside the counts it carries the most-blocked callers, the outbox as it stands, and the call-back figures
(callguard/store/callback_stats.py, from the ``callbacks`` rows of the window) when the caller passes
``callback_sla`` (``callback_sla(cfg)``: the call-back loop is switched on); without it they are ``None``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

from callguard.config import Config, parse_duration
from callguard.store.callback_stats import CallbackFigures, summarise
from callguard.store.callbacks import Callbacks
from callguard.store.db import Database
from callguard.store.outbox import Outbox

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
    def would_block(self) -> int:
        """Spam let through in monitor mode (``screening.mode = "monitor"``)."""
        return self.verdicts.get("would_block", 0)

    @property
    def spam_share(self) -> float | None:
        """Spam blocked ÷ calls screened."""
        return round(self.spam_blocked / self.screened, 4) if self.screened else None

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
            "would_block": self.would_block,
            "spam_share": self.spam_share,
            "answered": self.answered,
            "missed": self.missed,
            "missed_by_reason": dict(sorted(self.missed_by_reason.items())),
            "other_calls": dict(sorted(self.other_calls.items())),
            "answered_share": self.answered_share,
            "median_abandon_wait_s": self.median_abandon_wait_s,
            "abandoned": len(self.abandon_waits),
        }


@dataclass(frozen=True)
class Blocked:
    """A caller screened as spam in the window; ``note`` from the local list, ``contact`` the CRM name."""

    caller: str
    calls: int
    note: str = ""
    contact: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"caller": self.caller, "calls": self.calls, "note": self.note, "contact": self.contact}


@dataclass(frozen=True)
class OutboxState:
    """Leads as they stand now (not windowed): waiting to leave, dead letters, the oldest waiting one."""

    pending: int = 0
    dead: int = 0
    oldest_age_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "dead": self.dead, "oldest_age_s": self.oldest_age_s}


@dataclass
class Report:
    since: float
    until: float
    by: str | None
    total: Row
    rows: list[Row]
    missed_by_did: dict[str, int]
    top_blocked: list[Blocked] = field(default_factory=list)
    outbox: OutboxState = field(default_factory=OutboxState)
    callbacks: CallbackFigures | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": datetime.fromtimestamp(self.since, UTC).isoformat(),
            "until": datetime.fromtimestamp(self.until, UTC).isoformat(),
            "by": self.by,
            "total": self.total.as_dict(),
            "missed_by_did": self.missed_by_did,
            "rows": [r.as_dict() for r in self.rows],
            "top_blocked": [b.as_dict() for b in self.top_blocked],
            "outbox": self.outbox.as_dict(),
            "callbacks": self.callbacks.as_dict() if self.callbacks else None,
        }


def callback_sla(cfg: Config) -> float | None:
    """What ``Stats.report`` is given for the call-back figures: ``callback.sla`` when the loop is on."""
    return float(cfg.callback.sla) if cfg.callback.enabled else None


def window_start(spec: str, now: float, tz: tzinfo = UTC, key: str = "--since") -> float:
    """Where a window that ends ``now`` starts: ``today`` is the local midnight in ``tz``, anything else a
    duration back (``24h``, ``7d``). The CLI's ``--since`` and the dashboard's period both come here."""
    if spec.strip().lower() == "today":
        local = datetime.fromtimestamp(now, tz)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    return now - parse_duration(spec, key)


class Stats:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def report(
        self, since: float, until: float, by: GroupBy | None = None, tz: tzinfo = UTC, *,
        top: int = 10, callback_sla: float | None = None,
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
        return Report(
            since, until, by, total, ordered, by_did,
            top_blocked=await self.top_blocked(window, top),
            outbox=await self.outbox_state(),
            callbacks=await self.callback_figures(since, until, callback_sla) if callback_sla is not None else None,
        )

    async def callback_figures(self, since: float, until: float, sla_s: float) -> CallbackFigures:
        """The call-backs of the misses in ``[since, until)``; ``until`` is also "now" for the open ones' age."""
        return summarise(await Callbacks(self.db).in_window(since, until), sla_s, until)

    async def top_blocked(self, window: tuple[float, float], limit: int = 10) -> list[Blocked]:
        """The callers screened spam most often in the window, with the local note and the CRM name."""
        if limit <= 0:
            return []
        async with self.db.reader.execute(
            "SELECT s.caller, COUNT(*) AS n, COALESCE((SELECT note FROM overrides o WHERE o.phone = s.caller), ''), "
            "COALESCE((SELECT name FROM numbers c WHERE c.phone = s.caller ORDER BY c.spam DESC LIMIT 1), '') "
            "FROM screens s WHERE s.at >= ? AND s.at < ? AND s.verdict = 'spam' AND s.uniqueid != ? "
            "GROUP BY s.caller ORDER BY n DESC, s.caller LIMIT ?",
            (*window, DOCTOR_UNIQUEID, int(limit)),
        ) as cur:
            return [Blocked(str(c), int(n), str(note), str(name)) for c, n, note, name in await cur.fetchall()]

    async def outbox_state(self, now: float | None = None) -> OutboxState:
        """The outbox gauges' own query (``Outbox.depth``), as the report shows it."""
        now = time.time() if now is None else now
        depth = await Outbox(self.db).depth()
        oldest = depth.oldest_created
        age = round(max(0.0, now - oldest), 1) if oldest is not None else None
        return OutboxState(depth.pending, depth.dead, age)

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
