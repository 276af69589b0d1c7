"""amoCRM / Kommo API v4 adapter (facts and traps: shared/crm-apis.md §1).

Traps handled here: an empty list is HTTP 204 with no body (§1.3); ``filter[custom_fields_values]`` is
silently ignored on most accounts, so the spam flag is read client-side (§1.3); ``query=`` matches digits
anywhere, so phone search keeps only contacts whose PHONE values normalise to the caller (§1.4); no
idempotency key exists, so every lead carries the Linkedid as a marker that ``find_lead`` looks for (§3).

Here: contacts (sync, phone search), the webhook body; the HTTP session and OAuth are ``AmoApi``
(callguard.crm.amocrm_api), the leads ``AmoLeads`` (callguard.crm.amocrm_leads), both given the same
``AmoApi``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import callguard.crm.offload as offload
from callguard.crm.amocrm_api import AmoApi
from callguard.crm.amocrm_leads import AmoLeads
from callguard.crm.base import Changes, CrmContact, LeadRef, Page, WebhookRejected
from callguard.crm.http import parse_body
from callguard.errors import CrmError, CrmRejectedError
from callguard.phone import to_e164

if TYPE_CHECKING:
    from callguard.config import AmoCrmConfig, Config
    from callguard.leads.model import MissedCall
    from callguard.store import Store

PAGE = 250  # the v4 maximum (§1.3)
# Contacts parsed between two yields to the loop: a 250-contact page is ~9 ms of CPU (decode + parse);
# in slices of 25 a screen waits < 1 ms behind it (scripts/bench_sync.py, screens p99 during the sync).
PARSE_SLICE = 25


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "y", "yes")
    return bool(value)


def parse_contact(raw: dict[str, Any], spam_id: int | None, region: str) -> CrmContact:
    """A v4 contact → ``CrmContact``. Hot in a full sync (a million calls): plain loops, no helpers."""
    phones: list[str] = []
    spam = False
    # ``custom_fields_values`` is null for a contact without custom values (§1.3); match by code/id,
    # never by position.
    for fld in raw.get("custom_fields_values") or ():
        if fld.get("field_code") == "PHONE":
            for v in fld.get("values") or ():
                e164 = to_e164(v.get("value"), region)
                if e164 is not None and e164 not in phones:
                    phones.append(e164)
        elif spam_id is not None and fld.get("field_id") == spam_id:
            spam = any(_truthy(v.get("value")) for v in fld.get("values") or ())
    owner = raw.get("responsible_user_id")
    return CrmContact(str(raw["id"]), raw.get("name") or "", str(owner) if owner else "", spam, tuple(phones))


def _embedded(body: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []  # 204: nothing matched
    items = (body.get("_embedded") or {}).get(key) or []
    return [i for i in items if isinstance(i, dict)]


def decode_contacts(raw: bytes, spam_id: int | None, region: str) -> tuple[list[tuple[Any, ...]], Any]:
    """A contacts page → (its contacts parsed, as plain tuples, and the body with each contact cut to
    ``id`` and ``updated_at``, all the sync reads of it). Runs in the opt-in ``crm.offload`` process;
    plain tuples pickle there and unpickle on the event loop ~4x faster than ``CrmContact``s
    (``CrmContact._make`` puts the name back)."""
    body = parse_body(raw)
    items = _embedded(body, "contacts")
    contacts = [tuple(parse_contact(c, spam_id, region)) for c in items]
    if items:
        body["_embedded"]["contacts"] = [{"id": c.get("id"), "updated_at": c.get("updated_at")} for c in items]
    return contacts, body


def _has_next(body: Any) -> bool:
    return isinstance(body, dict) and "next" in (body.get("_links") or {})


class AmoCrm:
    kind = "amocrm"
    stable_paging = False

    def __init__(self, cfg: Config, store: Store | None = None) -> None:
        self.api = AmoApi(cfg, store)
        self.cfg = self.api.cfg
        self.leads = AmoLeads(self.api, self.cfg)
        self.region = cfg.phone.default_region
        # 0 (the default): pages are parsed on the loop, in slices. > 0: in the opt-in crm.offload process.
        self.parse_workers = cfg.sync.parse_workers
        self._spam_id: int | None = None
        self._spam_resolved = False

    async def close(self) -> None:
        await self.api.close()

    # --- the spam field -----------------------------------------------------------------------------

    async def _custom_fields(self) -> list[dict[str, Any]]:
        fields: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self.api.get("/api/v4/contacts/custom_fields", "custom_fields",
                                      {"limit": 50, "page": page})
            fields.extend(_embedded(body, "custom_fields"))
            if not _has_next(body):
                return fields
            page += 1

    async def spam_field_id(self) -> int | None:
        if not self._spam_resolved:
            self._spam_id = await self._resolve_spam_field()
            self._spam_resolved = True
        return self._spam_id

    async def _resolve_spam_field(self) -> int | None:
        wanted = self.cfg.spam_field.strip()
        if not wanted:
            return None
        for fld in await self._custom_fields():
            if str(fld.get("id")) == wanted or str(fld.get("name", "")).casefold() == wanted.casefold():
                if fld.get("type") != "checkbox":
                    raise CrmError(f"amoCRM contact field {wanted!r} is a {fld.get('type')}, not a checkbox")
                return int(fld["id"])
        raise CrmError(f"amoCRM has no contact field {wanted!r} (crm.amocrm.spam_field); "
                       "create a checkbox field on contacts or fix the setting")

    async def _contacts(self, params: dict[str, Any], label: str) -> tuple[list[CrmContact], Any]:
        spam_id = await self.spam_field_id()
        if self.parse_workers > 0:  # decoded and parsed in the worker process (crm.offload)
            page = functools.partial(decode_contacts, spam_id=spam_id, region=self.region)
            resp = await self.api.get_response("/api/v4/contacts", label, params,
                                               decode=functools.partial(offload.run, self.parse_workers, page))
            return ([CrmContact._make(t) for t in resp.decoded or ()], resp.body)
        body = await self.api.get("/api/v4/contacts", label, params)
        items = _embedded(body, "contacts")
        out: list[CrmContact] = []
        for i in range(0, len(items), PARSE_SLICE):
            await asyncio.sleep(0)  # let screens in: decoding and parsing a page takes several ms
            out.extend(parse_contact(c, spam_id, self.region) for c in items[i:i + PARSE_SLICE])
        return out, body

    # --- sync ---------------------------------------------------------------------------------------

    async def list_page(self, token: str | None) -> Page:
        page = int(token or 1)
        contacts, body = await self._contacts({"limit": PAGE, "page": page, "order[id]": "asc"}, "contacts_list")
        return Page(contacts, str(page + 1) if _has_next(body) else None)

    def cursor_at(self, ts: float) -> str:
        return json.dumps({"c": int(ts), "p": 1, "e": int(ts)})

    async def list_changed(self, cursor: str) -> Changes:
        """One page of contacts by ``updated_at`` (inclusive: re-reading is harmless), then deletions
        from the events feed (§1.9). The cursor holds a page number only while a whole page shares one
        second, so it always advances."""
        cur = json.loads(cursor) if cursor else json.loads(self.cursor_at(time.time()))
        since, page, events_from = int(cur["c"]), int(cur.get("p", 1)), int(cur.get("e", cur["c"]))
        params = {"limit": PAGE, "page": page, "order[updated_at]": "asc", "filter[updated_at][from]": since}
        contacts, body = await self._contacts(params, "contacts_changed")
        newest = max((int(c.get("updated_at") or 0) for c in _embedded(body, "contacts")), default=since)
        more = _has_next(body)
        next_c, next_p = (newest, 1) if newest > since else (since, page + 1 if more else page)
        deleted: list[str] = []
        if not more:
            deleted, events_from = await self._deleted_since(events_from)
        state = {"c": next_c, "p": next_p if more else 1, "e": events_from}
        return Changes(contacts, deleted, json.dumps(state), more)

    async def _deleted_since(self, since: int) -> tuple[list[str], int]:
        ids: list[str] = []
        newest = since - 1
        page = 1
        while True:
            body = await self.api.get("/api/v4/events", "events_deleted", {
                "filter[entity][]": "contact", "filter[type][]": "contact_deleted",
                "filter[created_at][from]": since, "limit": 100, "page": page})
            for ev in _embedded(body, "events"):
                ids.append(str(ev.get("entity_id")))
                newest = max(newest, int(ev.get("created_at") or 0))
            if not _has_next(body):
                # Exclusive from here on: a contact restored after its deletion must not be dropped again.
                return ids, newest + 1
            page += 1

    async def get_contacts(self, contact_ids: Sequence[str]) -> list[CrmContact]:
        out: list[CrmContact] = []
        ids = [i for i in contact_ids if str(i).isdigit()]
        for start in range(0, len(ids), 50):
            chunk = ids[start:start + 50]
            contacts, _ = await self._contacts(
                {"limit": PAGE, "filter[id][]": [str(i) for i in chunk]}, "contacts_by_id")
            out.extend(contacts)
        return out

    async def find_by_phone(self, e164: str) -> list[CrmContact]:
        # query= is a free-text search: 8… vs +7… differ and digits match anywhere (§1.4), so search
        # the last 10 digits and keep only exact phone matches.
        contacts, _ = await self._contacts({"query": e164[-10:], "limit": 50}, "contacts_by_phone")
        return [c for c in contacts if e164 in c.phones]

    # --- leads (callguard.crm.amocrm_leads) ----------------------------------------------------------

    async def create_lead(self, call: MissedCall, contact: CrmContact | None) -> LeadRef:
        return await self.leads.create_lead(call, contact)

    async def add_call_note(self, lead_id: str, call: MissedCall) -> None:
        await self.leads.add_call_note(lead_id, call)

    async def find_lead(self, call: MissedCall) -> LeadRef | None:
        return await self.leads.find_lead(call)

    async def find_call_note(self, lead_id: str, call: MissedCall) -> bool:
        return await self.leads.find_call_note(lead_id, call)

    async def verify(self) -> str:
        account = await self.api.get("/api/v4/account", "account")
        if not isinstance(account, dict):
            raise CrmError("amoCRM /api/v4/account answered without a body")
        if self.cfg.account_id and int(account.get("id") or 0) != self.cfg.account_id:
            raise CrmRejectedError(f"token belongs to account {account.get('id')}, config says "
                                   f"crm.amocrm.account_id = {self.cfg.account_id}", 403)
        spam_id = await self.spam_field_id()
        spam = f"spam field #{spam_id}" if spam_id else "NO spam field (crm.amocrm.spam_field empty)"
        return f"amocrm account {account.get('subdomain', '?')} #{account.get('id')}: {spam}"


# --- webhooks (crm-apis.md §1.8) -------------------------------------------------------------------------

_WEBHOOK_ID = re.compile(r"contacts\[(add|update|delete|restore)\]\[\d+\]\[id\]")
# Lead hooks (settings update_lead, status_lead, responsible_lead, delete_lead; §1.8 [3p] codes):
# leads[status][0][id] with …[status_id], leads[update][0][…], leads[responsible][0][…]. Only the id is used.
_WEBHOOK_LEAD = re.compile(r"leads\[(update|status|responsible|delete)\]\[\d+\]\[id\]")


def _one(form: Mapping[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[0]


def check_webhook_token(cfg: AmoCrmConfig, token: str) -> None:
    """The secret in the webhook URL, compared in constant time; checked before the body is read. No
    signature exists (unverified that none is sent), so this plus the account checks of
    ``parse_webhook``."""
    if not cfg.webhook_secret or not hmac.compare_digest(token.encode(), cfg.webhook_secret.encode()):
        raise WebhookRejected(401, "bad_token")


def _ids(form: Mapping[str, list[str]], key: re.Pattern[str]) -> list[str]:
    return [v for k, vals in form.items() if key.fullmatch(k) for v in vals]


def _valid(ids: list[str]) -> bool:
    return all(v.isdigit() and len(v) < 20 for v in ids)


def parse_hook(cfg: AmoCrmConfig, form: Mapping[str, list[str]]) -> tuple[list[str], list[str]]:
    """(contact ids, lead ids) of a form-encoded v2 delivery from our account (``contacts[…]`` as in
    ``parse_webhook``, ``leads[update|status|responsible|delete][N][id]``), or ``WebhookRejected``. The
    lead fields (``status_id``, ``responsible_user_id``) are not trusted: the lead is re-read."""
    _check_account(cfg, form)
    contacts, leads = _ids(form, _WEBHOOK_ID), _ids(form, _WEBHOOK_LEAD)
    if not contacts and not leads:
        raise WebhookRejected(400, "no_entities")
    if not _valid(contacts) or not _valid(leads):
        raise WebhookRejected(400, "malformed_id")
    return contacts, leads


def parse_webhook(cfg: AmoCrmConfig, form: Mapping[str, list[str]]) -> list[str]:
    """The contact ids of a form-encoded v2 delivery ``contacts[add|update|delete|restore][N][…]``
    from our account, or ``WebhookRejected``."""
    _check_account(cfg, form)
    ids = _ids(form, _WEBHOOK_ID)
    if not ids or not _valid(ids):
        raise WebhookRejected(400, "no_contacts")
    return ids


def _check_account(cfg: AmoCrmConfig, form: Mapping[str, list[str]]) -> None:
    if cfg.account_id and _one(form, "account[id]") != str(cfg.account_id):
        raise WebhookRejected(401, "wrong_account")
    host = urlsplit(cfg.base_url).hostname or ""
    # Only for real amoCRM/Kommo hosts: ``<subdomain>.amocrm.ru`` must match what the hook says.
    real = host.endswith((".amocrm.ru", ".amocrm.com", ".kommo.com"))
    if real and _one(form, "account[subdomain]") != host.split(".")[0]:
        raise WebhookRejected(401, "wrong_account")
