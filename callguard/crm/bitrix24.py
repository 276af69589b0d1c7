"""Bitrix24 REST adapter over an inbound webhook (facts and traps: shared/crm-apis.md §2).

Traps handled here: rate excess is HTTP 503 ``QUERY_LIMIT_EXCEEDED`` (leaky bucket 2/s, burst 50, §2.2);
multifields are never included by a ``select`` mask, so ``PHONE`` is listed explicitly (§2.3); the full
listing uses ``start=-1`` with ``>ID`` keyset paging, so deletions mid-run shift nothing (§2.3);
``findbycomm`` answers ``[]`` or ``{}`` when nothing matches (unverified which: both handled, §2.4) and
its normalisation is unverified, so every variant is sent and matches are re-checked; no idempotency key
exists, so leads carry ``ORIGINATOR_ID=callguard`` + ``ORIGIN_ID=<linkedid>`` and ``find_lead`` looks
them up (uniqueness of ORIGIN_ID is unverified and not relied on, §3).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from callguard.crm.base import Changes, CrmContact, LeadRef, Page, WebhookRejected, unique_phones
from callguard.crm.http import HttpClient, RetryPolicy, shared_bucket
from callguard.errors import CrmError
from callguard.leads import describe

if TYPE_CHECKING:
    from callguard.config import Bitrix24Config, Config
    from callguard.leads.model import MissedCall

log = structlog.get_logger("callguard.crm.bitrix24")

PAGE = 50  # fixed by Bitrix24
ORIGINATOR = "callguard"
PACING = 0.95  # a little under the portal's drain rate, and two below its burst: arrivals jitter


def _truthy(value: Any) -> bool:
    # Boolean user fields read back as "0"/"1" [3p]; "Y"/"N" handled as well (write format unverified).
    return str(value).strip().upper() in ("1", "Y", "TRUE")


def marker(call: MissedCall) -> str:
    return f"[callguard:{call.linkedid}]"


class Bitrix24:
    kind = "bitrix24"
    stable_paging = True

    def __init__(self, cfg: Config) -> None:
        b = cfg.crm.bitrix24
        if not b.webhook_url:
            raise CrmError("crm.bitrix24.webhook_url is not set (https://<portal>/rest/<user>/<secret>/)")
        self.cfg = b
        self.region = cfg.phone.default_region
        self.url = b.webhook_url.rstrip("/") + "/"
        self.portal = urlsplit(self.url).netloc
        policy = RetryPolicy(cfg.crm.max_retries, cfg.crm.retry_base)
        bucket = shared_bucket(("bitrix24", self.portal), b.rate_rps * PACING, max(1, b.rate_burst - 2))
        self.http = HttpClient("bitrix24", bucket, cfg.crm.timeout, policy)
        self.select = ["ID", "NAME", "LAST_NAME", "ASSIGNED_BY_ID", "DATE_MODIFY", "PHONE"]
        if b.spam_field:
            self.select.append(b.spam_field)

    async def call(self, method: str, params: dict[str, Any], idempotent: bool = True) -> dict[str, Any]:
        # The label is the method: the URL holds the webhook secret and is never logged.
        resp = await self.http.request("POST", f"{self.url}{method}.json", method, json_body=params,
                                       idempotent=idempotent)
        if not isinstance(resp.body, dict) or "result" not in resp.body:
            raise CrmError(f"bitrix24 {method} answered without a result")
        return resp.body

    async def close(self) -> None:
        await self.http.close()

    def parse_contact(self, raw: dict[str, Any]) -> CrmContact:
        phones = [p.get("VALUE") for p in raw.get("PHONE") or () if isinstance(p, dict)]
        name = " ".join(x for x in (raw.get("NAME"), raw.get("LAST_NAME")) if x)
        spam = _truthy(raw.get(self.cfg.spam_field)) if self.cfg.spam_field else False
        return CrmContact(str(raw["ID"]), name, str(raw.get("ASSIGNED_BY_ID") or ""), spam,
                          unique_phones(phones, self.region))

    # --- sync ---------------------------------------------------------------------------------------

    async def list_page(self, token: str | None) -> Page:
        body = await self.call("crm.contact.list", {
            "order": {"ID": "ASC"}, "filter": {">ID": int(token or 0)}, "select": self.select, "start": -1})
        rows = body["result"] or []
        contacts = [self.parse_contact(r) for r in rows]
        # start=-1 skips the count: a short page is the end (§2.3).
        return Page(contacts, contacts[-1].contact_id if len(rows) >= PAGE else None)

    def cursor_at(self, ts: float) -> str:
        return json.dumps({"m": datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds"), "s": 0})

    async def list_changed(self, cursor: str) -> Changes:
        """``>=DATE_MODIFY`` (inclusive: re-reading is harmless); deletions are not in this feed, they
        come by ONCRMCONTACTDELETE webhooks and the daily full resync."""
        cur = json.loads(cursor) if cursor else json.loads(self.cursor_at(datetime.now(UTC).timestamp()))
        since, start = str(cur["m"]), int(cur.get("s", 0))
        body = await self.call("crm.contact.list", {
            "order": {"DATE_MODIFY": "ASC", "ID": "ASC"}, "filter": {">=DATE_MODIFY": since},
            "select": self.select, "start": start})
        rows = body["result"] or []
        since_dt = datetime.fromisoformat(since)
        newest = max((datetime.fromisoformat(r["DATE_MODIFY"]) for r in rows if r.get("DATE_MODIFY")),
                     default=since_dt)
        more = "next" in body
        if newest > since_dt:
            state = {"m": newest.isoformat(timespec="seconds"), "s": 0}
        else:
            state = {"m": since, "s": int(body["next"]) if more else 0}
        return Changes([self.parse_contact(r) for r in rows], [], json.dumps(state), more)

    async def get_contacts(self, contact_ids: Sequence[str]) -> list[CrmContact]:
        ids = [int(i) for i in contact_ids if str(i).isdigit()]
        out: list[CrmContact] = []
        for i in range(0, len(ids), PAGE):
            body = await self.call("crm.contact.list", {
                "filter": {"@ID": ids[i:i + PAGE]}, "select": self.select, "start": -1})
            out.extend(self.parse_contact(r) for r in body["result"] or [])
        return out

    async def find_by_phone(self, e164: str) -> list[CrmContact]:
        variants = [e164]
        if e164.startswith("+7") and len(e164) == 12:
            variants += [e164[1:], "8" + e164[2:]]  # §3: send every form; normalisation unverified
        body = await self.call("crm.duplicate.findbycomm",
                               {"type": "PHONE", "values": variants, "entity_type": "CONTACT"})
        result = body["result"]
        ids = result.get("CONTACT", []) if isinstance(result, dict) else []
        contacts = await self.get_contacts([str(i) for i in ids])
        return [c for c in contacts if e164 in c.phones]

    # --- leads --------------------------------------------------------------------------------------

    async def create_lead(self, call: MissedCall, contact: CrmContact | None) -> LeadRef:
        fields: dict[str, Any] = {
            "TITLE": describe.title(call), "SOURCE_ID": self.cfg.source_id,
            "SOURCE_DESCRIPTION": f"DID {call.did}", "ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": call.linkedid,
            "COMMENTS": f"{describe.text(call)} {marker(call)}"}
        if call.caller.startswith("+"):
            fields["PHONE"] = [{"VALUE": call.caller, "VALUE_TYPE": "WORK"}]
        owner = self.cfg.responsible_user_id or (int(contact.owner) if contact and contact.owner.isdigit() else 0)
        if owner:
            fields["ASSIGNED_BY_ID"] = owner
        if contact is not None:
            fields["CONTACT_ID"] = int(contact.contact_id)  # makes it a repeat lead (§2.5)
        body = await self.call("crm.lead.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}},
                               idempotent=False)
        lead_id = str(body["result"])
        if self.cfg.register_call:
            await self._register_call(call, contact, lead_id)
        return LeadRef(lead_id, contact.contact_id if contact else "")

    async def _register_call(self, call: MissedCall, contact: CrmContact | None, lead_id: str) -> None:
        """Telephony statistics + a call activity (§2.6). Best effort: the lead exists already, and a
        failure here must not make the outbox send the lead again. App-only on current portals
        (unverified over webhooks): a WRONG_AUTH_TYPE answer is logged, nothing more."""
        user = self.cfg.responsible_user_id or (int(contact.owner) if contact and contact.owner.isdigit() else 1)
        try:
            reg = await self.call("telephony.externalcall.register", {
                "USER_ID": user, "PHONE_NUMBER": call.caller, "TYPE": 2, "CRM_CREATE": 0, "SHOW": 0,
                "CALL_START_DATE": datetime.fromtimestamp(call.started_at, UTC).isoformat(timespec="seconds"),
                "CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY_ID": int(lead_id), "LINE_NUMBER": call.did,
                "EXTERNAL_CALL_ID": call.linkedid}, idempotent=False)
            await self.call("telephony.externalcall.finish", {
                "CALL_ID": reg["result"]["CALL_ID"], "USER_ID": user, "DURATION": 0, "STATUS_CODE": "304"},
                idempotent=False)
        except (CrmError, KeyError, TypeError) as e:
            log.warning("crm_register_call_failed", crm=self.kind, linkedid=call.linkedid, error=str(e)[:200])

    async def add_call_note(self, lead_id: str, call: MissedCall) -> None:
        text = f"{describe.text(call)} {marker(call)}"
        await self.call("crm.timeline.comment.add", {"fields": {
            "ENTITY_ID": int(lead_id), "ENTITY_TYPE": "lead", "COMMENT": text}}, idempotent=False)

    async def find_lead(self, call: MissedCall) -> LeadRef | None:
        body = await self.call("crm.lead.list", {
            "filter": {"ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": call.linkedid},
            "select": ["ID", "CONTACT_ID"], "order": {"ID": "ASC"}, "start": -1})
        rows = body["result"] or []
        if not rows:
            return None
        return LeadRef(str(rows[0]["ID"]), str(rows[0].get("CONTACT_ID") or ""))

    async def find_call_note(self, lead_id: str, call: MissedCall) -> bool:
        start = 0
        while True:
            body = await self.call("crm.timeline.comment.list", {
                "filter": {"ENTITY_ID": int(lead_id), "ENTITY_TYPE": "lead"}, "select": ["ID", "COMMENT"],
                "start": start})
            if any(marker(call) in str(r.get("COMMENT", "")) for r in body["result"] or []):
                return True
            if "next" not in body:
                return False
            start = int(body["next"])

    async def verify(self) -> str:
        body = await self.call("crm.contact.fields", {})
        fields = body["result"] if isinstance(body["result"], dict) else {}
        if not self.cfg.spam_field:
            return f"bitrix24 portal {self.portal}: NO spam field (crm.bitrix24.spam_field empty)"
        if self.cfg.spam_field not in fields:
            raise CrmError(f"bitrix24 has no contact field {self.cfg.spam_field} (crm.bitrix24.spam_field); "
                           "create a boolean user field on contacts (crm.contact.userfield.add) or fix the name")
        kind = (fields[self.cfg.spam_field] or {}).get("type", "?")
        return f"bitrix24 portal {self.portal}: spam field {self.cfg.spam_field} ({kind})"


# --- webhooks (crm-apis.md §2.7) -------------------------------------------------------------------------

WEBHOOK_EVENTS = frozenset({"ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE"})
# b24restdocs api-reference/crm/leads/events/on-crm-lead-update.md: ``data[FIELDS][ID]`` only, like contacts.
LEAD_EVENTS = frozenset({"ONCRMLEADUPDATE", "ONCRMLEADDELETE"})


def _one(form: Mapping[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[0]


def parse_webhook(cfg: Bitrix24Config, form: Mapping[str, list[str]]) -> list[str]:
    """The contact id of a form-encoded outbound event (``event``, ``data[FIELDS][ID]``), or
    ``WebhookRejected``; ``auth[application_token]`` is compared in constant time."""
    kind, cid = parse_hook(cfg, form)
    if kind != "contact":
        raise WebhookRejected(400, "unknown_event")
    return [cid]


def parse_hook(cfg: Bitrix24Config, form: Mapping[str, list[str]]) -> tuple[str, str]:
    """("contact" | "lead", id) of a form-encoded outbound event (ONCRMCONTACT*, ONCRMLEADUPDATE/DELETE),
    or ``WebhookRejected``; ``auth[application_token]`` is compared in constant time (§2.7)."""
    given, expected = _one(form, "auth[application_token]"), cfg.application_token
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebhookRejected(401, "bad_token")
    event = _one(form, "event").upper()
    if event not in WEBHOOK_EVENTS and event not in LEAD_EVENTS:
        raise WebhookRejected(400, "unknown_event")
    cid = _one(form, "data[FIELDS][ID]")
    if not cid.isdigit() or len(cid) > 19:
        raise WebhookRejected(400, "no_contacts" if event in WEBHOOK_EVENTS else "no_lead")
    return ("contact" if event in WEBHOOK_EVENTS else "lead"), cid
