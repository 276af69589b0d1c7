"""The outbox's ``LeadSink`` for a CRM: one missed call → one lead linked to its contact, or a note on
the open lead for a repeat miss — exactly once across crashes and lost replies.

Exactly once: neither CRM has an idempotency key (crm-apis.md §3). Every lead/note carries the Linkedid
as a marker (adapters). A create whose outcome is unknown (5xx, timeout, dropped connection — the CRM may
have made it) is not retried blind: the next ``deliver`` for that Linkedid first looks for the marker, and
after a restart the outbox calls ``find_delivered`` for items left in ``sending``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from callguard.crm import CRM, CrmContact, build_crm
from callguard.errors import ConfigError, CrmRejectedError, CrmUnavailableError
from callguard.leads.model import Delivery, LeadSink, MissedCall

if TYPE_CHECKING:
    from callguard.config import Config
    from callguard.store import Store

log = structlog.get_logger("callguard.crm.sink")


class CrmSink:
    def __init__(self, crm: CRM, store: Store | None = None) -> None:
        self.crm = crm
        self.name = crm.kind
        self.store = store
        self._uncertain: set[str] = set()  # Linkedids whose last create may have gone through

    async def deliver(self, call: MissedCall) -> Delivery:
        if call.linkedid in self._uncertain:
            found = await self.find_delivered(call)
            if found is not None:
                self._uncertain.discard(call.linkedid)
                log.info("crm_lead_found_after_unknown_outcome", linkedid=call.linkedid, ref=found.ref,
                         caller=call.caller, did=call.did)
                return found
        try:
            delivery = await self._send(call)
        except CrmUnavailableError:
            self._uncertain.add(call.linkedid)
            raise
        self._uncertain.discard(call.linkedid)
        return delivery

    async def _send(self, call: MissedCall) -> Delivery:
        if call.open_lead_ref and not call.open_lead_ref.startswith("unsorted:"):
            try:
                await self.crm.add_call_note(call.open_lead_ref, call)
            except CrmRejectedError as e:
                # The open lead was deleted or merged in the CRM: a new lead is better than a dead letter.
                log.warning("crm_open_lead_gone", linkedid=call.linkedid, ref=call.open_lead_ref, error=str(e)[:200])
            else:
                log.info("crm_note_added", linkedid=call.linkedid, ref=call.open_lead_ref, caller=call.caller,
                         did=call.did, misses=call.misses)
                return Delivery(call.open_lead_ref, repeat=True)
        contact = await self._contact(call)
        ref = await self.crm.create_lead(call, contact)
        log.info("crm_lead_created", linkedid=call.linkedid, ref=ref.lead_id, contact_id=ref.contact_id,
                 caller=call.caller, did=call.did, reason=call.reason)
        return Delivery(ref.lead_id)

    async def _contact(self, call: MissedCall) -> CrmContact | None:
        """Cache first (what the last sync/webhook saw), then a CRM search that checks phones exactly."""
        if not call.caller.startswith("+"):
            return None  # anonymous / invalid: nothing to match on
        if self.store is not None:
            hit = await self.store.numbers.lookup(call.caller)
            if hit.contact is not None and hit.contact.source == self.crm.kind:
                c = hit.contact
                return CrmContact(c.contact_id, c.name, c.owner, c.spam, (call.caller,))
        if call.contact_id:
            return CrmContact(call.contact_id, call.caller_name, "", False, (call.caller,))
        found = await self.crm.find_by_phone(call.caller)
        return min(found, key=lambda c: int(c.contact_id) if c.contact_id.isdigit() else 0) if found else None

    async def find_delivered(self, call: MissedCall) -> Delivery | None:
        repeat = bool(call.open_lead_ref) and not call.open_lead_ref.startswith("unsorted:")
        if repeat and await self.crm.find_call_note(call.open_lead_ref, call):
            return Delivery(call.open_lead_ref, repeat=True)
        ref = await self.crm.find_lead(call)
        return Delivery(ref.lead_id) if ref is not None else None

    async def close(self) -> None:
        await self.crm.close()


def build_crm_sink(cfg: Config, store: Store | None = None) -> LeadSink:
    """The outbox's sink for ``outbox.sink = "crm"``. Pass the runtime's store for the cache lookup and
    amoCRM OAuth token persistence; without it the sink searches the CRM for every caller."""
    crm = build_crm(cfg, store)
    if crm is None:
        raise ConfigError("outbox.sink = 'crm' needs crm.kind = 'amocrm' or 'bitrix24'", "crm.kind")
    return CrmSink(crm, store)
