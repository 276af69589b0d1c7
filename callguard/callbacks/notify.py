"""Telling people: every ``notify`` action of the call-back loop (a manager assigned or handed a missed
call, the head of sales told of it or of an escalation) as one JSON POST to ``callback.notify.url``.

The receiver is the site's own (a chat bot, a mail gateway, a pager): callguard only says who is to be
told what. The document::

    {"type": "callback_notice", "what": "assigned", "sent_at": 1764590000.123,
     "to": {"name": "Olga", "crm_user_id": 7, "role": "head"},
     "manager": {"name": "Ivan", "crm_user_id": 101},          # who has the call-back now ({} if nobody)
     "call": {"key": "<linkedid>", "customer": "+7…", "did": "…", "lead": "<CRM lead id>"},
     "due": 1764590600.0, "epoch": 2, "text": "…words a person reads…"}

``what`` is ``assigned``, ``handed_on``, ``escalated`` or ``repeat_miss``. Signed like the lead webhook
(``X-Callguard-Signature: sha256=<hex>`` over the exact body, key ``callback.notify.secret``), with
``Idempotency-Key`` = ``<key>:<epoch>:<to>`` so a receiver drops a repeat.

A notice is a courtesy beside the durable instruction (the CRM's responsible and task, which the loop
persists and redoes): it is queued in memory (``QUEUE_MAX``), tried up to ``TRIES`` times with the one
back-off on 408/429/5xx and network errors, dropped at once on any other 4xx, and every drop is logged
(``callback_notice_dropped``) and counted. A restart loses the notices still queued; the loop's steps
and the ``callback_notify`` log line are not lost.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from callguard import backoff, metrics, tasks
from callguard.callbacks.actions import Subject
from callguard.callbacks.loop import HEAD, Action
from callguard.callbacks.settings import Roster
from callguard.config import NotifyConfig
from callguard.crm.http import classify
from callguard.errors import CrmUnavailableError, RateLimitedError
from callguard.leads.sinks import SIGNATURE_HEADER, sign

log = structlog.get_logger("callguard.callbacks.notify")

QUEUE_MAX = 1000
TRIES = 4
WORDS = {
    "assigned": "Перезвоните клиенту {customer}: пропущенный звонок на {did}.",
    "handed_on": "Вам передан пропущенный звонок от {customer} на {did}: перезвоните.",
    "repeat_miss": "Клиент {customer} снова не дозвонился на {did}: перезвоните.",
    "escalated": "Клиенту {customer} (звонок на {did}) так никто и не перезвонил: передано вам.",
}
HEAD_WORDS = {
    "assigned": "{manager} назначен перезвонить клиенту {customer} (звонок на {did}).",
    "handed_on": "Пропущенный звонок от {customer} передан менеджеру {manager}.",
}


@dataclass(frozen=True, slots=True)
class Notice:
    key: str  # the Linkedid of the missed call
    customer: str
    did: str
    lead: str
    action: Action

    @classmethod
    def of(cls, s: Subject, a: Action) -> Notice:
        return cls(s.key, s.customer, s.did, s.lead_ref, a)


def document(n: Notice, roster: Roster, now: float) -> dict[str, Any]:
    """The POST body of one notice (pure)."""
    what, _, assignee = n.action.detail.partition(":")
    to_head = n.action.manager == HEAD
    if to_head:
        to = {"name": roster.head.name, "crm_user_id": roster.head.crm_user_id, "role": "head"}
    else:
        m = roster.get(n.action.manager)
        to = {"name": n.action.manager, "crm_user_id": m.crm_user_id if m else 0, "role": "manager"}
    who = assignee if to_head else n.action.manager
    m = roster.get(who) if who else None
    manager = {"name": who, "crm_user_id": m.crm_user_id if m else 0} if who else {}
    words = (HEAD_WORDS if to_head and what in HEAD_WORDS else WORDS).get(what, "{customer}: {what}")
    return {
        "type": "callback_notice", "what": what, "sent_at": round(now, 3), "to": to, "manager": manager,
        "call": {"key": n.key, "customer": n.customer, "did": n.did, "lead": n.lead},
        "due": n.action.due, "epoch": n.action.epoch,
        "text": words.format(customer=n.customer or "без номера", did=n.did or "—", manager=who, what=what),
    }


class Notices:
    """Part ``callback_notices``: the queue and its one sender task (only with ``callback.notify.url``)."""

    name = "callback_notices"

    def __init__(
        self, cfg: NotifyConfig, roster: Roster, session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
        retry_base: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.retry_base = retry_base
        self.roster = roster
        self.clock = clock
        self.rng = rng
        self._session = session
        self._own_session = session is None
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def __call__(self, s: Subject, a: Action) -> None:
        """``Executor``'s hook for a ``notify`` action (synchronous, never blocks)."""
        self.send(Notice.of(s, a))

    def send(self, n: Notice) -> None:
        """Queued, or dropped loudly when the queue is full."""
        try:
            self._queue.put_nowait(n)
        except asyncio.QueueFull:
            self._dropped(n, "queue_full")

    async def start(self) -> None:
        self._task = tasks.spawn(self._sender(), name="callback-notices")

    async def stop(self) -> None:
        await tasks.stop(self._task)
        self._task = None
        if self._queue.qsize():
            log.warning("callback_notices_unsent", count=self._queue.qsize())
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def drain(self) -> None:
        """Tests and shutdown: wait until every queued notice was sent or dropped."""
        await self._queue.join()

    async def _sender(self) -> None:
        while True:
            n = await self._queue.get()
            try:
                await self._deliver(n)
            except Exception:  # a bug in here must not stop the notices after it
                log.exception("callback_notice_failed", key=n.key, linkedid=n.key)
            finally:
                self._queue.task_done()

    async def _deliver(self, n: Notice) -> None:
        doc = document(n, self.roster, self.clock())
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "callguard",
                   "Idempotency-Key": f"{n.key}:{n.action.epoch}:{doc['to']['role']}:{doc['to']['name']}"}
        if self.cfg.secret:
            headers[SIGNATURE_HEADER] = sign(self.cfg.secret, body)
        why = ""
        for attempt in range(TRIES):
            status, retry_after, why = await self._post(body, headers)
            if status is not None and 200 <= status < 300:
                self.sent += 1
                metrics.CALLBACK_NOTICES.labels(result="sent").inc()
                log.info("callback_notice_sent", key=n.key, linkedid=n.key, caller=n.customer, did=n.did,
                         what=doc["what"], to=doc["to"]["name"], role=doc["to"]["role"])
                return
            if status is not None and retry_after is None and why == "refused":
                break  # a 4xx that is not 408/429: the receiver will not take it later either
            if attempt + 1 < TRIES:
                delay = backoff.delay(attempt, self.retry_base, 60.0, self.rng)
                await asyncio.sleep(max(delay, retry_after or 0.0))
        self._dropped(n, why)

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int | None, float | None, str]:
        """(status or None, Retry-After seconds or None, why it failed)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=float(self.cfg.timeout)))
        try:
            async with self._session.post(self.cfg.url, data=body, headers=headers) as resp:
                await resp.read()
                status, answer_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as e:
            return None, None, f"unreachable: {type(e).__name__}"
        error = classify("notify", status, None, answer_headers)
        if error is None:
            return status, None, ""
        if isinstance(error, RateLimitedError):
            return status, error.retry_after or 1.0, f"answered {status}"
        if isinstance(error, CrmUnavailableError):
            return status, 0.0, f"answered {status}"
        return status, None, "refused"

    def _dropped(self, n: Notice, why: str) -> None:
        metrics.CALLBACK_NOTICES.labels(result="dropped").inc()
        log.warning("callback_notice_dropped", key=n.key, linkedid=n.key, caller=n.customer, did=n.did,
                    what=n.action.detail, to=n.action.manager, why=why)
