"""amoCRM missed-call leads: Unsorted ``sip`` entries or a lead + call-back task (crm-apis.md §1.5–1.7).

Exactly once: amoCRM has no idempotency key (``request_id`` is only echoed, §3), so every lead carries
the Linkedid as a marker: ``metadata.uniq`` of an Unsorted entry, or the tag ``callguard:<linkedid>`` on
a lead; notes carry it in ``params.uniq``. ``find_lead`` looks for the marker among what was created
since the call ended. ``AmoLeads`` is given the account's ``AmoApi`` (callguard.crm.amocrm_api) and
calls only its public methods.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from callguard.crm.base import CrmContact, LeadRef
from callguard.errors import CrmError

if TYPE_CHECKING:
    from callguard.config import AmoCrmConfig
    from callguard.crm.amocrm_api import AmoApi
    from callguard.leads.model import MissedCall

CALL_STATUS_NO_ANSWER = 6  # "did not get through / no answer": there is no missed note type (§1.7)
# How far before the call a marker search starts: Unsorted ``created_at`` is the call's start.
SEARCH_SLACK = 120
PAGE = 250  # the v4 maximum (§1.3)


def title(call: MissedCall) -> str:
    return f"Missed call {call.caller}"


def marker(call: MissedCall) -> str:
    return f"callguard:{call.linkedid}"


def _phone_contact(call: MissedCall) -> dict[str, Any]:
    return {"first_name": call.caller_name or call.caller,
            "custom_fields_values": [{"field_code": "PHONE",
                                      "values": [{"value": call.caller, "enum_code": "MOB"}]}]}


def _has_number(call: MissedCall) -> bool:
    return call.caller.startswith("+")


def _unsorted_item(cfg: AmoCrmConfig, call: MissedCall, contact: CrmContact | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "source_uid": cfg.source_name, "source_name": cfg.source_name, "created_at": int(call.started_at),
        "metadata": {"from": call.caller, "phone": call.did, "called_at": int(call.started_at),
                     "duration": 0, "service_code": cfg.source_name, "uniq": call.linkedid,
                     "is_call_event_needed": True},
        "_embedded": {"leads": [{"name": title(call)}]},
        "request_id": call.linkedid,
    }
    if cfg.pipeline_id:
        item["pipeline_id"] = cfg.pipeline_id
    # Linking an existing contact by {"id": N} is unverified (§1.6, §4.4); assumed to work as for leads.
    if contact is not None:
        item["_embedded"]["contacts"] = [{"id": int(contact.contact_id)}]
    elif _has_number(call):
        item["_embedded"]["contacts"] = [_phone_contact(call)]
    return item


def _lead_id_from_unsorted(entry: dict[str, Any]) -> str:
    emb = entry.get("_embedded") or {}
    # Docs say ``_embedded.leads``, the PHP SDK uses ``_embedded.lead`` (§4.4): accept both.
    leads = emb.get("leads") or emb.get("lead") or []
    if isinstance(leads, dict):
        leads = [leads]
    return str(leads[0]["id"]) if leads and isinstance(leads[0], dict) and "id" in leads[0] else ""


def _lead_body(cfg: AmoCrmConfig, call: MissedCall, contact: CrmContact | None) -> dict[str, Any]:
    lead: dict[str, Any] = {"name": title(call), "request_id": call.linkedid,
                            "_embedded": {"tags": [{"name": marker(call)}]}}
    if cfg.pipeline_id:
        lead["pipeline_id"] = cfg.pipeline_id
    owner = cfg.responsible_user_id or (int(contact.owner) if contact and contact.owner.isdigit() else 0)
    if owner:
        lead["responsible_user_id"] = owner
    if contact is not None:
        lead["_embedded"]["contacts"] = [{"id": int(contact.contact_id)}]
    return lead


def call_note(cfg: AmoCrmConfig, lead_id: str, call: MissedCall) -> dict[str, Any]:
    return {"entity_id": int(lead_id), "note_type": "call_in",
            "params": {"uniq": call.linkedid, "duration": 0, "source": cfg.source_name,
                       "phone": call.caller, "call_status": CALL_STATUS_NO_ANSWER, "call_result": "Пропущен"}}



class AmoLeads:
    """Missed-call leads, notes and their marker searches, over the account's ``AmoApi``."""

    def __init__(self, api: AmoApi, cfg: AmoCrmConfig) -> None:
        self.api = api
        self.cfg = cfg

    async def add_call_note(self, lead_id: str, call: MissedCall) -> None:
        await self.api.post("/api/v4/leads/notes", "note_add", [call_note(self.cfg, lead_id, call)])

    async def find_call_note(self, lead_id: str, call: MissedCall) -> bool:
        page = 1
        while True:
            body = await self.api.get(f"/api/v4/leads/{int(lead_id)}/notes", "notes_list",
                                      {"filter[note_type]": "call_in", "limit": PAGE, "page": page})
            notes = (body.get("_embedded") or {}).get("notes") or [] if isinstance(body, dict) else []
            if any((n.get("params") or {}).get("uniq") == call.linkedid for n in notes if isinstance(n, dict)):
                return True
            if not (isinstance(body, dict) and "next" in (body.get("_links") or {})):
                return False
            page += 1

    async def create_lead(self, call: MissedCall, contact: CrmContact | None) -> LeadRef:
        if self.cfg.lead_mode == "unsorted":
            item = _unsorted_item(self.cfg, call, contact)
            body = await self.api.post("/api/v4/leads/unsorted/sip", "unsorted_add", [item])
            entries = (body or {}).get("_embedded", {}).get("unsorted") or [] if isinstance(body, dict) else []
            if not entries:
                raise CrmError("amoCRM unsorted/sip answered without an entry")
            lead_id = _lead_id_from_unsorted(entries[0])
            return LeadRef(lead_id or f"unsorted:{entries[0].get('uid', '')}",
                           contact.contact_id if contact else "", {"uid": str(entries[0].get("uid", ""))})
        lead = _lead_body(self.cfg, call, contact)
        if contact is None and _has_number(call):
            # /leads/complex creates the lead and its contact in one call (§1.5).
            lead["_embedded"]["contacts"] = [_phone_contact(call)]
            reply = await self.api.post("/api/v4/leads/complex", "lead_add_complex", [lead])
            if not isinstance(reply, list) or not reply:
                raise CrmError("amoCRM leads/complex answered without a lead")
            lead_id, contact_id = str(reply[0]["id"]), str(reply[0].get("contact_id") or "")
        else:
            reply = await self.api.post("/api/v4/leads", "lead_add", [lead])
            leads = (reply or {}).get("_embedded", {}).get("leads") or [] if isinstance(reply, dict) else []
            if not leads:
                raise CrmError("amoCRM leads answered without a lead")
            lead_id, contact_id = str(leads[0]["id"]), contact.contact_id if contact else ""
        await self._add_task(call, lead_id, lead.get("responsible_user_id"))
        return LeadRef(lead_id, contact_id)


    async def _add_task(self, call: MissedCall, lead_id: str, owner: int | None) -> None:
        task: dict[str, Any] = {"text": f"Call back {call.caller} (missed call, {call.reason})",
                                "complete_till": int(time.time()) + 3600, "entity_id": int(lead_id),
                                "entity_type": "leads", "task_type_id": 1}
        if owner:
            task["responsible_user_id"] = owner
        await self.api.post("/api/v4/tasks", "task_add", [task])


    async def find_lead(self, call: MissedCall) -> LeadRef | None:
        if self.cfg.lead_mode == "unsorted":
            found = await self._find_unsorted(call)
            if found is not None:
                return found
        return await self._find_tagged(call)


    async def _find_unsorted(self, call: MissedCall) -> LeadRef | None:
        """Newest first; stop once entries are older than the call (``created_at`` = call start)."""
        page = 1
        floor = int(call.started_at) - SEARCH_SLACK
        while True:
            body = await self.api.get("/api/v4/leads/unsorted", "unsorted_list", {
                "filter[category][]": "sip", "order[created_at]": "desc", "limit": 250, "page": page})
            entries = (body.get("_embedded") or {}).get("unsorted") or [] if isinstance(body, dict) else []
            for e in entries:
                if (e.get("metadata") or {}).get("uniq") == call.linkedid:
                    return LeadRef(_lead_id_from_unsorted(e) or f"unsorted:{e.get('uid', '')}", "",
                                   {"uid": str(e.get("uid", ""))})
            too_old = any(int(e.get("created_at") or 0) < floor for e in entries)
            if too_old or not (isinstance(body, dict) and "next" in (body.get("_links") or {})):
                return None
            page += 1


    async def _find_tagged(self, call: MissedCall) -> LeadRef | None:
        page = 1
        tag = marker(call)
        while True:
            body = await self.api.get("/api/v4/leads", "leads_list", {
                "filter[created_at][from]": int(call.ended_at) - SEARCH_SLACK, "limit": 250, "page": page})
            leads = (body.get("_embedded") or {}).get("leads") or [] if isinstance(body, dict) else []
            for lead in leads:
                tags = (lead.get("_embedded") or {}).get("tags") or []
                if any(t.get("name") == tag for t in tags):
                    contacts = (lead.get("_embedded") or {}).get("contacts") or []
                    return LeadRef(str(lead["id"]), str(contacts[0]["id"]) if contacts else "")
            if not (isinstance(body, dict) and "next" in (body.get("_links") or {})):
                return None
            page += 1
