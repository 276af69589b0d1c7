"""Lead sinks that need no CRM: ``log`` (the embedded default: the leads file, leads/leadfile.py, and a
``missed_call`` log event) and ``webhook`` (any HTTP receiver).

The webhook POSTs one JSON document per missed call with an HMAC-SHA256 signature over the exact body
(``X-Callguard-Signature: sha256=<hex>``, key = ``outbox.webhook.secret``) and the Linkedid as
``Idempotency-Key``, so a receiver can verify the sender and drop the (rare) repeat after a crash
mid-delivery. Any 2xx is success; 408/429/5xx and network errors are retried by the outbox; any other
4xx is a dead letter. The status is read by ``crm.http.classify``, the one map from HTTP answers to errors
(Retry-After included), and put in the sink's terms here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from callguard.config import Config, WebhookSinkConfig, log_file_of
from callguard.crm.http import classify
from callguard.errors import CrmUnavailableError, RateLimitedError, SinkError
from callguard.leads import describe
from callguard.leads.leadfile import LeadFile, line_of
from callguard.leads.model import Delivery, LeadSink, MissedCall

if TYPE_CHECKING:
    from callguard.store import Store

log = structlog.get_logger("callguard.leads.sinks")
SIGNATURE_HEADER = "X-Callguard-Signature"


class LogSink:
    """Leads without any integration: a line in the leads file (leads/leadfile.py: durable, searchable, so
    exactly once across crashes) and a ``missed_call`` event in the structured log (journald's view)."""

    name = "log"

    def __init__(self, path: Path) -> None:
        self.file = LeadFile(path)

    async def deliver(self, call: MissedCall) -> Delivery:
        delivery = Delivery(call.open_lead_ref, repeat=True) if call.open_lead_ref else Delivery(f"log:{call.linkedid}")
        line = line_of(call, delivery.ref, delivery.repeat, time.time())
        try:
            await asyncio.to_thread(self.file.append, line)  # fdatasync off the loop: screens never wait on it
        except OSError as e:
            log.error("leads_file_write_failed", path=str(self.file.path), error=e.strerror or str(e),
                      linkedid=call.linkedid, caller=call.caller, did=call.did)
            raise SinkError(f"cannot write the leads file {self.file.path}: {e.strerror or e}") from e
        # A level of warning would drop an info line: then the journald copy goes out as a warning.
        emit = log.info if log.is_enabled_for(logging.INFO) else log.warning
        emit("missed_call", **call.to_json())
        return delivery

    async def find_delivered(self, call: MissedCall) -> Delivery | None:
        try:
            found = await asyncio.to_thread(self.file.find, call.linkedid)
        except OSError as e:
            raise SinkError(f"cannot read the leads file {self.file.path}: {e.strerror or e}") from e
        return Delivery(found.ref, repeat=found.repeat) if found is not None else None

    async def close(self) -> None:
        return None


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    name = "webhook"

    def __init__(self, cfg: WebhookSinkConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.cfg = cfg
        self._session = session
        self._own_session = session is None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=float(self.cfg.timeout)))
        return self._session

    def document(self, call: MissedCall) -> dict[str, Any]:
        """The call's facts, and what a CRM lead would say of it (leads/describe.py) for a receiver that
        forwards it to people (a chat, a mail)."""
        return {"type": "missed_call", "sent_at": round(time.time(), 3), "call": call.to_json(),
                "repeat": bool(call.open_lead_ref), "title": describe.title(call), "text": describe.text(call)}

    async def deliver(self, call: MissedCall) -> Delivery:
        body = json.dumps(self.document(call), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": call.linkedid,
                   "User-Agent": "callguard"}
        if self.cfg.secret:
            headers[SIGNATURE_HEADER] = sign(self.cfg.secret, body)
        try:
            async with self._client().post(self.cfg.url, data=body, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
                answer_headers = resp.headers
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SinkError(f"webhook unreachable: {type(e).__name__}: {e}") from e
        # body=None: a receiver's error body is not a CRM's, only its status (and Retry-After) counts
        error = classify("webhook", status, None, answer_headers)
        if error is None:
            return Delivery(_ref_from(text) or call.open_lead_ref or f"webhook:{call.linkedid}",
                            repeat=bool(call.open_lead_ref))
        if isinstance(error, RateLimitedError):
            raise RateLimitedError("webhook said 429", error.retry_after)
        if isinstance(error, CrmUnavailableError):  # 408, 5xx
            raise SinkError(f"webhook answered {status}")
        # any other 4xx, 401/403 included: a dead letter, as ever (`callguard outbox retry` resends it)
        raise SinkError(f"webhook refused the lead: {status} {text[:200]}", permanent=True)

    async def find_delivered(self, call: MissedCall) -> Delivery | None:
        return None  # the receiver dedupes on Idempotency-Key

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None


def _ref_from(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    if isinstance(data, dict):
        for key in ("ref", "id", "lead_id"):
            if data.get(key) not in (None, ""):
                return str(data[key])
    return ""


def build_sink(cfg: Config, store: Store | None = None) -> LeadSink:
    """The sink ``outbox.sink`` names; ``store`` is what the CRM sink needs (its contact lookups)."""
    kind = cfg.outbox.sink
    if kind == "webhook":
        return WebhookSink(cfg.outbox.webhook)
    if kind == "crm":
        from callguard.crm.sink import build_crm_sink  # written with the CRM adapters; imported lazily

        sink: LeadSink = build_crm_sink(cfg, store)
        return sink
    return LogSink(log_file_of(cfg))
