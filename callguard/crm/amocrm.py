"""amoCRM / Kommo API v4 adapter (facts and traps: shared/crm-apis.md §1).

Traps handled here: an empty list is HTTP 204 with no body (§1.3); ``filter[custom_fields_values]`` is
silently ignored on most accounts, so the spam flag is read client-side (§1.3); ``query=`` matches digits
anywhere, so phone search keeps only contacts whose PHONE values normalise to the caller (§1.4); no
idempotency key exists, so every lead carries the Linkedid as a marker that ``find_lead`` looks for (§3).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from callguard.crm import Changes, CrmContact, LeadRef, Page, offload
from callguard.crm.http import Decoder, HttpClient, Response, RetryPolicy, parse_body, shared_bucket
from callguard.errors import CrmError, CrmRejectedError
from callguard.phone import to_e164

if TYPE_CHECKING:
    from callguard.config import Config
    from callguard.leads.model import MissedCall
    from callguard.store import Store

log = structlog.get_logger("callguard.crm.amocrm")

PAGE = 250  # the v4 maximum (§1.3)
MARKER_PREFIX = "callguard:"
# Pace a little under the configured ceiling: requests sent exactly 1/7 s apart can arrive closer.
PACING = 0.95
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
    ``id`` and ``updated_at``, all the sync reads of it). Runs in the ``crm.offload`` worker process;
    plain tuples pickle there and unpickle on the event loop ~4x faster than ``CrmContact``s
    (``CrmContact._make`` puts the name back)."""
    body = parse_body(raw)
    items = _embedded(body, "contacts")
    contacts = [tuple(parse_contact(c, spam_id, region)) for c in items]
    if items:
        body["_embedded"]["contacts"] = [{"id": c.get("id"), "updated_at": c.get("updated_at")} for c in items]
    return contacts, body


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a dropped read-ahead's error is not the caller's: consume it quietly


def _has_next(body: Any) -> bool:
    return isinstance(body, dict) and "next" in (body.get("_links") or {})


class AmoCrm:
    kind = "amocrm"
    stable_paging = False

    def __init__(self, cfg: Config, store: Store | None = None) -> None:
        a = cfg.crm.amocrm
        if not a.base_url:
            raise CrmError("crm.amocrm.base_url is not set (https://<subdomain>.amocrm.ru)")
        self.cfg = a
        self.region = cfg.phone.default_region
        self.parse_workers = cfg.sync.parse_workers
        self._ahead: dict[int, asyncio.Task[tuple[list[CrmContact], Any]]] = {}  # list_page read-ahead
        self.base = a.base_url.rstrip("/")
        self.store = store
        self._token = a.token
        self._refresh_token = a.refresh_token
        self._tokens_loaded = store is None
        self._spam_id: int | None = None
        self._spam_resolved = False
        policy = RetryPolicy(cfg.crm.max_retries, cfg.crm.retry_base)
        bucket = shared_bucket(("amocrm", self.base), a.rate_rps * PACING, 1.0)
        oauth = all((a.client_id, a.client_secret, a.redirect_uri)) and bool(a.refresh_token or store)
        self.http = HttpClient("amocrm", bucket, cfg.crm.timeout, policy, self._auth_headers,
                               self._refresh if oauth else None)

    # --- plumbing ---------------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def _get(self, path: str, label: str, params: Any = None) -> Any:
        return (await self._get_response(path, label, params)).body

    async def _get_response(self, path: str, label: str, params: Any = None,
                            decode: Decoder | None = None) -> Response:
        await self._load_tokens()
        return await self.http.request("GET", self.base + path, label, params=params, decode=decode)

    async def _post(self, path: str, label: str, body: Any) -> Any:
        await self._load_tokens()
        return (await self.http.request("POST", self.base + path, label, json_body=body, idempotent=False)).body

    async def _load_tokens(self) -> None:
        """A rotated OAuth pair in the store is newer than the one in the config file."""
        if self._tokens_loaded or self.store is None:
            return
        self._tokens_loaded = True
        saved = await self.store.sync_state.get_tokens(self.kind)
        if saved is not None:
            self._token, self._refresh_token = saved

    async def _refresh(self) -> bool:
        """One OAuth refresh after a 401 (the official SDK does the same, §1.1); the new refresh token
        replaces the old one for good, so it is stored before use."""
        if not self._refresh_token:
            return False
        body = {"client_id": self.cfg.client_id, "client_secret": self.cfg.client_secret,
                "grant_type": "refresh_token", "refresh_token": self._refresh_token,
                "redirect_uri": self.cfg.redirect_uri}
        try:
            # The token endpoint takes no bearer (authed=False) and is not refreshed on 401 itself.
            reply = (await self.http.request("POST", self.base + "/oauth2/access_token", "oauth_refresh",
                                             json_body=body, authed=False)).body
        except CrmError as e:
            log.error("crm_oauth_refresh_failed", crm=self.kind, error=str(e)[:200], alert=True)
            return False
        if not isinstance(reply, dict) or not reply.get("access_token") or not reply.get("refresh_token"):
            log.error("crm_oauth_refresh_failed", crm=self.kind, error="reply without tokens", alert=True)
            return False
        self._token, self._refresh_token = str(reply["access_token"]), str(reply["refresh_token"])
        if self.store is not None:
            await self.store.sync_state.save_tokens(self.kind, self._token, self._refresh_token)
        log.info("crm_oauth_refreshed", crm=self.kind)
        return True

    async def close(self) -> None:
        self._drop_ahead()
        await self.http.close()

    # --- the spam field -----------------------------------------------------------------------------

    async def _custom_fields(self) -> list[dict[str, Any]]:
        fields: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self._get("/api/v4/contacts/custom_fields", "custom_fields",
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
            resp = await self._get_response("/api/v4/contacts", label, params,
                                            decode=functools.partial(offload.run, self.parse_workers, page))
            return ([CrmContact._make(t) for t in resp.decoded or ()], resp.body)
        body = await self._get("/api/v4/contacts", label, params)
        items = _embedded(body, "contacts")
        out: list[CrmContact] = []
        for i in range(0, len(items), PARSE_SLICE):
            await asyncio.sleep(0)  # let screens in: decoding and parsing a page takes several ms
            out.extend(parse_contact(c, spam_id, self.region) for c in items[i:i + PARSE_SLICE])
        return out, body

    # --- sync ---------------------------------------------------------------------------------------

    async def list_page(self, token: str | None) -> Page:
        page = int(token or 1)
        await self.spam_field_id()  # resolved (and cached) once, before two listings could both ask
        task = self._ahead.pop(page, None) or asyncio.create_task(self._listing(page))
        if self.parse_workers > 0 and not self._ahead:
            # Offset paging: the next page's number is known before this body is decoded (in the
            # worker), so ask for it now and let the fetch, the decode and the caller's write overlap.
            self._ahead[page + 1] = asyncio.create_task(self._listing(page + 1))
        try:
            contacts, body = await task
        except BaseException:
            self._drop_ahead()
            raise
        if not _has_next(body):
            self._drop_ahead()  # a page past the end (an amoCRM 204), or a stale one
        return Page(contacts, str(page + 1) if _has_next(body) else None)

    async def _listing(self, page: int) -> tuple[list[CrmContact], Any]:
        return await self._contacts({"limit": PAGE, "page": page, "order[id]": "asc"}, "contacts_list")

    def _drop_ahead(self) -> None:
        for task in self._ahead.values():
            task.cancel()
            task.add_done_callback(_retrieve)
        self._ahead.clear()

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
            body = await self._get("/api/v4/events", "events_deleted", {
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

    # --- leads ----------------------------------------------------------------------------------------

    async def create_lead(self, call: MissedCall, contact: CrmContact | None) -> LeadRef:
        from callguard.crm import amocrm_leads

        return await amocrm_leads.create_lead(self, call, contact)

    async def add_call_note(self, lead_id: str, call: MissedCall) -> None:
        from callguard.crm import amocrm_leads

        await self._post("/api/v4/leads/notes", "note_add", [amocrm_leads.call_note(self, lead_id, call)])

    async def find_lead(self, call: MissedCall) -> LeadRef | None:
        from callguard.crm import amocrm_leads

        return await amocrm_leads.find_lead(self, call)

    async def find_call_note(self, lead_id: str, call: MissedCall) -> bool:
        page = 1
        while True:
            body = await self._get(f"/api/v4/leads/{int(lead_id)}/notes", "notes_list",
                                   {"filter[note_type]": "call_in", "limit": PAGE, "page": page})
            if any((n.get("params") or {}).get("uniq") == call.linkedid for n in _embedded(body, "notes")):
                return True
            if not _has_next(body):
                return False
            page += 1

    async def verify(self) -> str:
        account = await self._get("/api/v4/account", "account")
        if not isinstance(account, dict):
            raise CrmError("amoCRM /api/v4/account answered without a body")
        if self.cfg.account_id and int(account.get("id") or 0) != self.cfg.account_id:
            raise CrmRejectedError(f"token belongs to account {account.get('id')}, config says "
                                   f"crm.amocrm.account_id = {self.cfg.account_id}", 403)
        spam_id = await self.spam_field_id()
        spam = f"spam field #{spam_id}" if spam_id else "NO spam field (crm.amocrm.spam_field empty)"
        return f"amocrm account {account.get('subdomain', '?')} #{account.get('id')}: {spam}"
