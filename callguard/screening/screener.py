"""The screener: caller ID → normalise once → one store read → ``decide`` → the channel variables.

It answers the FastAGI server (agi/server.py) with a ``Screen`` and knows nothing of the wire: the server
writes the variables, owns the deadline, and calls ``record`` once Asterisk has them (or not). The same
decision serves ``callguard check`` and ``/v1/check`` (``check``, ``explain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from callguard import metrics, tasks
from callguard.config import Config
from callguard.phone import Kind, Phone, normalise
from callguard.screening.rules import Decision, Schedule, Verdict, decide
from callguard.store import Store
from callguard.store.numbers import EMPTY
from callguard.store.screens import ScreenRecord

log = structlog.get_logger("callguard.screen")

Subscriber = Callable[[ScreenRecord], None]

# Small batches, often: a big insert is a burst of CPU the screens would queue behind.
FLUSH_INTERVAL = 0.25
FLUSH_BATCH = 250
FLUSH_KEEP = 50_000


@dataclass(frozen=True, slots=True)
class ScreenRequest:
    """What the screener needs of one incoming call, as Asterisk sent it."""

    caller: str  # agi_callerid, raw
    caller_name: str  # agi_calleridname
    did: str  # the number dialled, raw (agi/wire.py picks it)
    uniqueid: str  # the caller channel's Uniqueid: ties the screen to its call (calls/tracker.py)
    arrived: float  # time.perf_counter() of the request's first byte (agi/rxtime.py), waits included


@dataclass(frozen=True, slots=True)
class Screen:
    """One screen's answer: the decision, and what it was made of, for ``record``."""

    request: ScreenRequest
    phone: Phone
    did: str  # normalised
    decision: Decision

    @property
    def variables(self) -> list[tuple[str, str]]:
        return variables_for(self.decision)


def variables_for(decision: Decision) -> list[tuple[str, str]]:
    """The dialplan contract (DESIGN.md): the verdict first, so a caller who leaves mid-way still
    leaves the one variable the dialplan branches on."""
    out = [("CALLGUARD_VERDICT", decision.verdict.value)]
    contact = decision.contact
    if contact is not None:
        out.append(("CALLGUARD_CONTACT_ID", contact.contact_id))
        if contact.name:
            out.append(("CALLGUARD_CONTACT_NAME", contact.name))
        if contact.owner:
            out.append(("CALLGUARD_OWNER", contact.owner))
    return out


_SCREENS = {v.value: metrics.SCREENS.labels(verdict=v.value) for v in Verdict}  # bound once, not per screen


class ScreenService:
    name = "screener"

    def __init__(self, cfg: Config, store: Store, schedule: Schedule) -> None:
        self.cfg = cfg
        self.store = store
        self.schedule = schedule
        self._subscribers: list[Subscriber] = []
        self._pending: list[ScreenRecord] = []
        self._flush_wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._flusher = tasks.spawn(self._flush_loop(), "screen-recorder")

    async def stop(self) -> None:
        await tasks.stop(self._flusher)
        self._flusher = None
        await self._flush()

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    # --- the decision -----------------------------------------------------------------------------

    def normalise(self, raw: str) -> Phone:
        return normalise(raw, self.cfg.phone.default_region, self.cfg.phone.max_extension_digits)

    def did_key(self, raw: str) -> str:
        phone = normalise(raw, self.cfg.phone.default_region, self.cfg.phone.max_extension_digits)
        return phone.key or raw.strip()

    async def check(self, caller_raw: str, did_raw: str = "", now: datetime | None = None) -> tuple[
        Phone, Decision
    ]:
        """The verdict and why, without AGI: what ``callguard check`` and ``/v1/check`` show."""
        phone = self.normalise(caller_raw)
        return phone, self._decide(phone, self.did_key(did_raw), now)

    def _decide(self, phone: Phone, did: str, now: datetime | None = None) -> Decision:
        """Synchronous: the one store read is a plain sqlite3 primary-key read on this thread
        (``store.db``), whose wait for a lock is bounded by HOT_BUSY_TIMEOUT_MS, well inside
        ``agi.deadline_ms``: a bound on the call path, not a throughput trick."""
        lookup = (
            self.store.numbers.lookup_now(phone.key)
            if phone.kind in (Kind.NUMBER, Kind.EXTENSION)
            else EMPTY
        )
        return decide(phone, did, now or datetime.now(UTC), lookup, self.cfg.screening, self.schedule)

    async def explain(self, caller_raw: str, did_raw: str = "") -> dict[str, Any]:
        """``check`` as a JSON-ready document: what ``callguard check --json`` and ``/v1/check`` show."""
        phone, decision = await self.check(caller_raw, did_raw)
        contact = decision.contact
        return {
            "input": caller_raw,
            "kind": phone.kind.value,
            "normalised": phone.key,
            "did": self.did_key(did_raw) if did_raw else "",
            "verdict": decision.verdict.value,
            "reason": decision.reason,
            "contact": (
                {"id": contact.contact_id, "name": contact.name, "owner": contact.owner, "spam": contact.spam,
                 "source": contact.source}
                if contact else None
            ),
            "variables": dict(variables_for(decision)),
        }

    # --- what the FastAGI server asks (agi/server.py) -----------------------------------------------

    def screen(self, request: ScreenRequest) -> Screen:
        phone, did = self.normalise(request.caller), self.did_key(request.did)
        return Screen(request, phone, did, self._decide(phone, did))

    def fail_open(self, request: ScreenRequest, fault: str) -> Screen:
        """``clean``: what a fault of ours or a decision past the deadline answers (pure, never raises)."""
        phone, did = self.normalise(request.caller), self.did_key(request.did)
        return Screen(request, phone, did, Decision(Verdict.CLEAN, f"fail_open:{fault}"))

    def record(self, screen: Screen, delivered: bool, hung_up: bool) -> None:
        """Once the server wrote the variables: log the screen and record it, off the call path."""
        req, decision = screen.request, screen.decision
        latency_ms = (time.perf_counter() - req.arrived) * 1000  # from the first byte, waits included
        contact = decision.contact
        log.info(
            "call_screened",
            uniqueid=req.uniqueid,
            caller=screen.phone.display,
            caller_name=req.caller_name[:80],
            did=screen.did,
            verdict=decision.verdict.value,
            reason=decision.reason,
            contact_id=contact.contact_id if contact else None,
            latency_ms=round(latency_ms, 3),
            delivered=delivered,
            caller_hung_up=hung_up,
        )
        self.ingest(
            ScreenRecord(
                req.uniqueid, time.time(), screen.phone.display, screen.did, decision.verdict.value,
                decision.reason, latency_ms,
            )
        )

    # --- recording, off the call path ---------------------------------------------------------------

    def ingest(self, record: ScreenRecord) -> None:
        """Count, tell subscribers (the call tracker) and queue for the store one screen's record."""
        _SCREENS[record.verdict].inc()
        metrics.SCREEN_LATENCY.observe(record.latency_ms / 1000)
        for fn in self._subscribers:
            try:
                fn(record)
            except Exception:
                log.exception("screen_subscriber_failed", uniqueid=record.uniqueid)
        self._pending.append(record)
        if len(self._pending) >= FLUSH_BATCH:
            self._flush_wakeup.set()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wakeup.wait(), FLUSH_INTERVAL)
            self._flush_wakeup.clear()
            try:
                await self._flush()
            except Exception:
                log.exception("screen_record_failed", pending=len(self._pending))

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.store.screens.insert_many(batch)
        except Exception:
            self._pending[:0] = batch[-FLUSH_KEEP:]  # keep the newest for the next try, bounded
            raise
