"""Durable delivery of missed calls to the lead sink: at most once per Linkedid, retried, never lost.

The item is written with its call row in one transaction (``store.calls.record``). The worker here:
- claims a due item by setting ``sending`` BEFORE it calls the sink, so a crash (kill -9) mid-delivery
  leaves a mark; on start, items found in ``sending`` are first looked up with ``sink.find_delivered``
  and marked sent when the sink already has them, else sent again (the log sink searches its leads file,
  the CRM sink its markers; the webhook cannot search, so it carries an Idempotency-Key); when that
  lookup fails (the sink is down), the item is looked up again before it is sent;
- retries what can succeed later (5xx, 429 with Retry-After, timeouts, network) with ``backoff.delay``
  (exponential, jittered, capped), up to ``outbox.max_attempts``; what never can (4xx, ``permanent``) is a
  dead letter at once, shown by ``callguard outbox list``;
- a repeat miss from the same number inside ``missed.dedupe_window`` goes to the open lead
  (``MissedCall.open_lead_ref`` + ``misses``) instead of a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Callable

import structlog

from callguard import backoff, metrics, tasks
from callguard.config import Config
from callguard.errors import CallguardError, CrmAuthError, CrmRejectedError, RateLimitedError, SinkError
from callguard.leads.model import Delivery, LeadSink, MissedCall
from callguard.store import Store
from callguard.store.outbox import OutboxItem

log = structlog.get_logger("callguard.leads.outbox")

BATCH = 50
STOP_GRACE = 5.0  # seconds a delivery in flight may finish after SIGTERM before it is cancelled


class OutboxWorker:
    """Part ``outbox``: always runs, whatever the sink, so queued leads leave even without AMI."""

    name = "outbox"

    def __init__(
        self, cfg: Config, store: Store, sink: LeadSink,
        clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.sink = sink
        self.clock = clock
        self.rng = rng
        self.delivered = 0
        self.failed = 0
        self._wakeup = asyncio.Event()
        # Linkedids a crash left in 'sending' whose recovery lookup failed (the sink was down): asked
        # again before they are sent, else a CRM that took the lead before the crash gets it twice.
        self._unverified: set[str] = set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.recover()
        self._task = tasks.spawn(self._loop(), name="outbox-worker")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE)
            except TimeoutError:
                await tasks.stop(self._task)  # the item stays 'sending'; the next start resolves it
            self._task = None
        await self.sink.close()

    def wake(self) -> None:
        self._wakeup.set()

    # --- the loop ---------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            # Cleared BEFORE the pass, not after: a wake() (new lead) or a stop() arriving while the pass
            # runs must not be lost, else a lead waits a poll and SIGTERM waits out STOP_GRACE.
            self._wakeup.clear()
            try:
                await self.run_once()
                await self.publish_gauges()
                delay = await self._sleep_for()
            except Exception:  # the store or a bug: log, back off, keep the worker alive
                log.exception("outbox_loop_failed")
                delay = float(self.cfg.outbox.poll_interval)
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)

    async def _sleep_for(self) -> float:
        next_at = await self.store.outbox.next_due_at()
        poll = float(self.cfg.outbox.poll_interval)
        if next_at is None:
            return max(poll, 5.0)
        return min(max(next_at - self.clock(), poll / 10), 60.0)

    async def run_once(self) -> int:
        """Deliver every due item once; the number handled."""
        done = 0
        while not self._stopping:
            items = await self.store.outbox.due(self.clock(), BATCH)
            if not items:
                break
            for item in items:
                if self._stopping:
                    break
                await self.deliver(item)
                done += 1
        return done

    async def recover(self) -> None:
        """Items a crash left in 'sending': ask the sink before sending again."""
        for item in await self.store.outbox.in_state("sending"):
            call = MissedCall.from_json(item.payload)
            try:
                found = await self.sink.find_delivered(call)
            except Exception as e:  # the sink is down: deliver() asks again first, then sends
                log.warning("outbox_recover_lookup_failed", linkedid=item.linkedid, caller=call.caller,
                            did=call.did, error=_text(e))
                self._unverified.add(item.linkedid)
                found = None
            if found is not None:
                await self.store.outbox.mark_sent(item.linkedid, found.ref, self.clock(), self._lead_key(call, found))
                log.info("outbox_recovered_delivered", linkedid=item.linkedid, ref=found.ref)
            else:
                why = "interrupted; sink not asked" if item.linkedid in self._unverified else "interrupted"
                await self.store.outbox.mark_retry(item.linkedid, self.clock(), why, self.clock())
                log.info("outbox_recovered_resend", linkedid=item.linkedid, attempts=item.attempts)

    # --- one item ---------------------------------------------------------------------------------

    async def deliver(self, item: OutboxItem) -> None:
        call = await self._with_open_lead(MissedCall.from_json(item.payload))
        if not await self.store.outbox.mark_sending(item.linkedid, call.to_json(), self.clock()):
            return  # someone (a CLI drop) changed it meanwhile
        attempts = item.attempts + 1
        bound = log.bind(linkedid=call.linkedid, caller=call.caller, did=call.did, attempt=attempts)
        try:
            delivery = await self._deliver(call, bound)
        except asyncio.CancelledError:
            raise
        except RateLimitedError as e:
            await self._retry(bound, call.linkedid, attempts, _text(e), e.retry_after)
        except CrmAuthError as e:
            # the request is fine, the credentials are not: wait for an operator, never dead-letter
            await self._retry(bound, call.linkedid, attempts, _text(e), give_up=False)
        except (CrmRejectedError, SinkError) as e:
            if isinstance(e, CrmRejectedError) or e.permanent:  # type: ignore[union-attr]
                await self._dead(bound, call.linkedid, _text(e))
            else:
                await self._retry(bound, call.linkedid, attempts, _text(e))
        except (CallguardError, OSError, TimeoutError) as e:
            await self._retry(bound, call.linkedid, attempts, _text(e))
        except Exception as e:  # a sink bug: retried with backoff, loudly, never lost
            bound.exception("outbox_sink_crashed")
            await self._retry(bound, call.linkedid, attempts, _text(e))
        else:
            await self.store.outbox.mark_sent(call.linkedid, delivery.ref, self.clock(),
                                              self._lead_key(call, delivery))
            self.delivered += 1
            metrics.OUTBOX_DELIVERIES.labels(result="sent").inc()
            bound.info("lead_delivered", sink=self.sink.name, ref=delivery.ref, repeat=delivery.repeat,
                       misses=call.misses, reason=call.reason)

    async def _deliver(self, call: MissedCall, bound: structlog.typing.FilteringBoundLogger) -> Delivery:
        """The sink's delivery, asking it first when a crash's recovery could not (``_unverified``)."""
        if call.linkedid in self._unverified:
            found = await self.sink.find_delivered(call)  # a failure here is retried like a delivery's
            self._unverified.discard(call.linkedid)
            if found is not None:
                bound.info("outbox_recovered_delivered", ref=found.ref)
                return found
        return await self.sink.deliver(call)

    async def _with_open_lead(self, call: MissedCall) -> MissedCall:
        if call.open_lead_ref or not call.caller.startswith("+"):
            return call  # already decided (a retry), or no number to group by (anonymous, unknown)
        since = self.clock() - float(self.cfg.missed.dedupe_window)
        found = await self.store.outbox.open_lead(call.caller, self.sink.name, since)
        if found is None:
            return call
        ref, misses = found
        return dataclasses.replace(call, open_lead_ref=ref, misses=misses + 1)

    def _lead_key(self, call: MissedCall, delivery: Delivery) -> tuple[str, str, bool] | None:
        if not call.caller.startswith("+"):
            return None
        return call.caller, self.sink.name, bool(call.open_lead_ref)

    async def _retry(
        self, bound: structlog.typing.FilteringBoundLogger, linkedid: str, attempts: int, error: str,
        retry_after: float | None = None, give_up: bool = True,
    ) -> None:
        self.failed += 1
        if give_up and attempts >= self.cfg.outbox.max_attempts:
            await self._dead(bound, linkedid, f"gave up after {attempts} attempts: {error}")
            return
        # ``attempts`` made so far (1 after the first failure) → retry number attempts - 1 (0 = the first)
        delay = backoff.delay(attempts - 1, float(self.cfg.outbox.backoff_base), float(self.cfg.outbox.backoff_cap),
                              self.rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, float(self.cfg.outbox.backoff_cap)))
        await self.store.outbox.mark_retry(linkedid, self.clock() + delay, error, self.clock())
        metrics.OUTBOX_DELIVERIES.labels(result="retry").inc()
        bound.warning("lead_delivery_failed", error=error, retry_in_s=round(delay, 2))

    async def _dead(self, bound: structlog.typing.FilteringBoundLogger, linkedid: str, error: str) -> None:
        await self.store.outbox.mark_dead(linkedid, error, self.clock())
        metrics.OUTBOX_DELIVERIES.labels(result="dead").inc()
        bound.error("lead_dead_letter", error=error, sink=self.sink.name)

    async def publish_gauges(self) -> None:
        """The one place the outbox gauges are set: after each pass, and by whoever reports at scrape
        time (the web part's ``/metrics`` calls this rather than counting the table itself)."""
        counts = await self.store.outbox.counts()
        metrics.OUTBOX_DEPTH.set(counts.get("pending", 0) + counts.get("sending", 0))
        metrics.OUTBOX_DEAD.set(counts.get("dead", 0))
        oldest = await self.store.outbox.oldest_pending_created()
        metrics.OUTBOX_OLDEST.set(max(0.0, self.clock() - oldest) if oldest is not None else 0)


def _text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
