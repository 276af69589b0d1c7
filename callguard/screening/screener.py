"""The ``screen`` route: caller ID → normalise → one store read → ``decide`` → channel variables.

Protocol lives in ``agi``/``agiproto``, the rules in ``screening``; this module joins them and owns the
deadline: whatever happens inside (a slow disk, a bug), Asterisk gets a verdict in time, ``clean`` when
in doubt, so a legitimate caller is never blocked by callguard's own fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from callguard import metrics
from callguard.agi.server import AgiSession
from callguard.agi.wire import set_variable, set_variables
from callguard.config import Config
from callguard.errors import AgiProtocolError
from callguard.phone import Kind, Phone, normalise
from callguard.screening.rules import Decision, Schedule, Verdict, decide
from callguard.store import Store
from callguard.store.numbers import EMPTY
from callguard.store.screens import ScreenRecord

log = structlog.get_logger("callguard.screen")

Subscriber = Callable[[ScreenRecord], None]

# Small batches, often: a big insert is a burst of CPU the screening processes would queue behind.
FLUSH_INTERVAL = 0.25
FLUSH_BATCH = 250
FLUSH_KEEP = 50_000


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
_VERDICT_COMMANDS = {v: set_variable("CALLGUARD_VERDICT", v.value) for v in Verdict}
_VERDICT_CHECK = "GET VARIABLE CALLGUARD_VERDICT"

# How long a check that ARRAY() works (func_strings.so loaded) is trusted before the next call checks again.
ARRAY_RECHECK_S = 600.0


def commands_for(decision: Decision, array_works: bool = True) -> list[str]:
    """The AGI commands that set ``variables_for(decision)``. The verdict alone, as the lab recorded it;
    with a contact, everything in one ARRAY() command, one round trip instead of four. When ARRAY()
    is known not to work, one plain command per variable, the verdict first."""
    variables = variables_for(decision)
    if len(variables) == 1:
        return [_VERDICT_COMMANDS[decision.verdict]]
    if array_works:
        return [set_variables(variables)]
    return [_VERDICT_COMMANDS[decision.verdict], *(set_variable(name, value) for name, value in variables[1:])]


class ScreenService:
    name = "screener"

    def __init__(
        self, cfg: Config, store: Store, schedule: Schedule, sink: Subscriber | None = None,
    ) -> None:
        """``sink`` takes each screen's record; by default ``ingest`` (this process records it). An AGI
        worker process passes its link to the main process, whose ScreenService ingests it."""
        self.cfg = cfg
        self.store = store
        self.schedule = schedule
        self._sink = sink or self.ingest
        self._subscribers: list[Subscriber] = []
        self._pending: list[ScreenRecord] = []
        self._flush_wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        # ARRAY() lives in func_strings.so; Asterisk answers 200 to a SET VARIABLE of an unknown function,
        # so whether it took is read back (GET VARIABLE) once per ARRAY_RECHECK_S, on a contact's call.
        self._array_works = True
        self._array_checked = -ARRAY_RECHECK_S

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="screen-recorder")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
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
        """Synchronous: the one store read is a plain sqlite3 call on this thread (``store.db``), whose
        wait for a lock is bounded by HOT_BUSY_TIMEOUT_MS, well inside ``agi.deadline_ms``."""
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

    # --- the AGI route ----------------------------------------------------------------------------

    async def handle(self, session: AgiSession) -> None:
        req = session.request
        phone, did = self.normalise(req.callerid), self.did_key(req.did)  # pure, never raise
        fault = ""
        try:
            decision = self._decide(phone, did)
        except Exception as e:  # any fault of ours answers clean: never hold or block a caller
            fault = f"internal_error:{type(e).__name__}"
            log.exception("screen_failed", uniqueid=req.uniqueid, caller=req.callerid[:40])
        else:
            # Nothing here awaits, so nothing can be cut short; a decision that took past the deadline
            # (a stalled disk) is not trusted: clean, as a cut-short one would have been.
            if (time.perf_counter() - session.started) * 1000 > self.cfg.agi.deadline_ms:
                fault = "deadline"
                metrics.AGI_TIMEOUTS.inc()
        if fault:
            decision = Decision(Verdict.CLEAN, f"fail_open:{fault}")
        delivered = await self._answer(session, decision)
        latency_ms = (time.perf_counter() - session.arrived) * 1000  # from the first byte, waits included
        contact = decision.contact
        log.info(
            "call_screened",
            uniqueid=req.uniqueid,
            caller=phone.display,
            caller_name=req.calleridname[:80],
            did=did,
            verdict=decision.verdict.value,
            reason=decision.reason,
            contact_id=contact.contact_id if contact else None,
            latency_ms=round(latency_ms, 3),
            delivered=delivered,
            caller_hung_up=session.hung_up,
        )
        self._sink(
            ScreenRecord(
                req.uniqueid, time.time(), phone.display, did, decision.verdict.value, decision.reason, latency_ms
            )
        )

    async def _answer(self, session: AgiSession, decision: Decision) -> bool:
        """Send the variables; False when Asterisk did not take them (the dialplan then fails open)."""
        try:
            check = decision.contact is not None and self._array_due()  # also retries ARRAY() after a miss
            if not await self._send(session, commands_for(decision, self._array_works or check)):
                return False
            if check:
                return await self._check_array(session, decision)
        except (AgiProtocolError, TimeoutError, ConnectionError, OSError) as e:
            metrics.AGI_ERRORS.labels(kind="reply").inc()
            log.warning("agi_reply_failed", uniqueid=session.request.uniqueid, error=str(e) or type(e).__name__)
            return False
        return True

    async def _send(self, session: AgiSession, commands: list[str]) -> bool:
        for command in commands:
            reply = await session.send_command(command)
            if not reply.ok:
                log.warning(
                    "agi_command_rejected", uniqueid=session.request.uniqueid, command=command.split(" ")[2],
                    reply=reply.text,
                )
                return False
        return True

    def _array_due(self) -> bool:
        return time.monotonic() - self._array_checked >= ARRAY_RECHECK_S

    async def _check_array(self, session: AgiSession, decision: Decision) -> bool:
        """Read the verdict back after an ARRAY() command; if it is not there, Asterisk has no ARRAY()
        (func_strings.so not loaded): say so loudly and set the variables one by one from now on."""
        reply = await session.send_command(_VERDICT_CHECK)
        works = reply.ok and reply.result == "1" and reply.data == decision.verdict.value
        self._array_checked = time.monotonic()
        if works != self._array_works:
            self._array_works = works
            if works:
                log.info("agi_array_available", uniqueid=session.request.uniqueid)
            else:
                log.error(
                    "agi_array_unsupported", uniqueid=session.request.uniqueid, reply=reply.text,
                    hint="ARRAY() did not set CALLGUARD_VERDICT: load func_strings.so in Asterisk; "
                    "until then each variable goes in its own SET VARIABLE",
                )
        return works or await self._send(session, commands_for(decision, array_works=False))

    # --- recording, off the call path ---------------------------------------------------------------

    def ingest(self, record: ScreenRecord) -> None:
        """Count, tell subscribers (the call tracker) and queue for the store one screen's record, from
        this process or from an AGI worker."""
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
