"""Lead-side routes of the amoCRM fake (methods of ``FakeAmo``): leads, complex, Unsorted sip, notes,
tasks — with the body validation a real account applies (unknown fields → 400 validation-errors)."""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from tests.fakes.amocrm import LEAD_KEYS, METADATA_KEYS, NOTE_PARAMS, UNSORTED_KEYS, hal, problem

_lead_ids = itertools.count(9_000_001)


def _lead_contacts(self: Any, request: web.Request, emb: dict[str, Any]) -> list[int] | web.Response:
    out = []
    for c in emb.get("contacts") or []:
        if set(c) == {"id"}:
            if int(c["id"]) not in self.contacts:
                return self._reject(request, f"_embedded.contacts.id {c['id']} does not exist")
            out.append(int(c["id"]))
        else:
            phones = [v["value"] for f in c.get("custom_fields_values") or []
                      if f.get("field_code") == "PHONE" for v in f.get("values") or []]
            out.append(self.add_contact(c.get("first_name") or c.get("name") or "", phones))
    return out


def _new_lead(self: Any, request: web.Request, item: dict[str, Any]) -> dict[str, Any] | web.Response:
    unknown = set(item) - LEAD_KEYS
    if unknown:
        return self._reject(request, f"lead fields {sorted(unknown)}")
    emb = item.get("_embedded") or {}
    if set(emb) - {"contacts", "tags", "companies"}:
        return self._reject(request, f"lead _embedded {sorted(emb)}")
    contacts = _lead_contacts(self, request, emb)
    if isinstance(contacts, web.Response):
        return contacts
    lid = next(_lead_ids)
    lead = {"id": lid, "name": item.get("name", ""), "responsible_user_id": item.get("responsible_user_id", 0),
            "pipeline_id": item.get("pipeline_id", 0), "created_at": self.tick(), "contacts": contacts,
            "tags": [t["name"] for t in emb.get("tags") or []], "request_id": item.get("request_id")}
    self.leads[lid] = lead
    return lead


def render_lead(self: Any, lead: dict[str, Any]) -> dict[str, Any]:
    return {"id": lead["id"], "name": lead["name"], "responsible_user_id": lead["responsible_user_id"],
            "pipeline_id": lead["pipeline_id"], "created_at": lead["created_at"], "account_id": self.account_id,
            "_embedded": {"tags": [{"id": i + 1, "name": t} for i, t in enumerate(lead["tags"])],
                          "contacts": [{"id": c} for c in lead["contacts"]], "companies": []}}


async def add_leads(self: Any, request: web.Request) -> web.StreamResponse:
    body = await self._json(request)
    made = []
    for item in body:
        lead = _new_lead(self, request, item)
        if isinstance(lead, web.Response):
            return lead
        made.append({"id": lead["id"], "request_id": item.get("request_id", "0"),
                     "_links": {"self": {"href": f"/api/v4/leads/{lead['id']}"}}})
    return hal({"_embedded": {"leads": made}})


async def add_complex(self: Any, request: web.Request) -> web.StreamResponse:
    body = await self._json(request)
    if len(body) > 50:
        return self._reject(request, "more than 50 leads")
    out = []
    for item in body:
        lead = _new_lead(self, request, item)
        if isinstance(lead, web.Response):
            return lead
        out.append({"id": lead["id"], "contact_id": lead["contacts"][0] if lead["contacts"] else None,
                    "company_id": None, "request_id": [item.get("request_id", "0")], "merged": False})
    return web.json_response(out)


async def list_leads(self: Any, request: web.Request) -> web.StreamResponse:
    params = self._params(request, "leads")
    if isinstance(params, web.Response):
        return params
    limit, page = int(params.get("limit", ["50"])[0]), int(params.get("page", ["1"])[0])
    since = int(params.get("filter[created_at][from]", ["0"])[0])
    items = [lead for lead in self.leads.values() if lead["created_at"] >= since]
    chunk = items[(page - 1) * limit: page * limit]
    if not chunk:
        return web.Response(status=204)
    return hal({"_page": page, "_links": self._page_links(request, page, len(items) > page * limit),
                "_embedded": {"leads": [render_lead(self, lead) for lead in chunk]}})


async def add_unsorted(self: Any, request: web.Request) -> web.StreamResponse:
    body = await self._json(request)
    out = []
    for item in body:
        unknown = set(item) - UNSORTED_KEYS
        if unknown or not item.get("source_uid") or not item.get("source_name"):
            return self._reject(request, f"unsorted item fields {sorted(unknown) or 'source_uid/source_name'}")
        meta = item.get("metadata") or {}
        if set(meta) - METADATA_KEYS:
            return self._reject(request, f"metadata {sorted(set(meta) - METADATA_KEYS)}")
        emb = item.get("_embedded") or {}
        if set(emb) - {"leads", "contacts", "companies"}:
            return self._reject(request, f"unsorted _embedded {sorted(emb)}")
        contacts = _lead_contacts(self, request, emb)
        if isinstance(contacts, web.Response):
            return contacts
        leads_in = emb.get("leads") or [{"name": f"Звонок {meta.get('from', '')}"}]
        lead = _new_lead(self, request, {"name": leads_in[0].get("name", "")})
        assert isinstance(lead, dict)
        lead["contacts"] = contacts
        uid = f"{lead['id']:032x}"
        self.unsorted.append({"uid": uid, "category": "sip", "source_uid": item["source_uid"],
                              "created_at": item.get("created_at", self._clock), "metadata": dict(meta),
                              "lead_id": lead["id"], "contacts": contacts})
        out.append({"uid": uid, "request_id": item.get("request_id", "0"), "_embedded": {
            "leads": [{"id": lead["id"]}], "contacts": [{"id": c} for c in contacts], "companies": []}})
    return hal({"_total_items": len(out), "_embedded": {"unsorted": out}})


async def list_unsorted(self: Any, request: web.Request) -> web.StreamResponse:
    params = self._params(request, "unsorted")
    if isinstance(params, web.Response):
        return params
    limit, page = int(params.get("limit", ["50"])[0]), int(params.get("page", ["1"])[0])
    items = [u for u in self.unsorted if u["category"] in params.get("filter[category][]", ["sip"])]
    items.sort(key=lambda u: u["created_at"], reverse=params.get("order[created_at]", ["asc"])[0] == "desc")
    chunk = items[(page - 1) * limit: page * limit]
    if not chunk:
        return web.Response(status=204)
    rendered = [{"uid": u["uid"], "category": "sip", "source_uid": u["source_uid"], "created_at": u["created_at"],
                 "metadata": u["metadata"], "_embedded": {"leads": [{"id": u["lead_id"]}],
                                                          "contacts": [{"id": c} for c in u["contacts"]]}}
                for u in chunk]
    return hal({"_page": page, "_links": self._page_links(request, page, len(items) > page * limit),
                "_embedded": {"unsorted": rendered}})


async def add_notes(self: Any, request: web.Request) -> web.StreamResponse:
    body = await self._json(request)
    out = []
    for note in body:
        if set(note) - {"entity_id", "note_type", "params", "request_id"}:
            return self._reject(request, f"note fields {sorted(note)}")
        if note.get("note_type") not in ("call_in", "call_out", "common"):
            return self._reject(request, f"note_type {note.get('note_type')}")
        if set(note.get("params") or {}) - NOTE_PARAMS:
            return self._reject(request, f"note params {sorted(note['params'])}")
        if int(note["entity_id"]) not in self.leads:
            return problem(400, "Bad Request", "entity not found")
        self.notes.append({"id": len(self.notes) + 1, **note, "created_at": self.tick()})
        out.append({"id": len(self.notes), "entity_id": note["entity_id"]})
    return hal({"_embedded": {"notes": out}})


async def list_notes(self: Any, request: web.Request) -> web.StreamResponse:
    params = self._params(request, "notes")
    if isinstance(params, web.Response):
        return params
    lid = int(request.match_info["id"])
    items = [n for n in self.notes if int(n["entity_id"]) == lid
             and n["note_type"] == params.get("filter[note_type]", [n["note_type"]])[0]]
    limit, page = int(params.get("limit", ["50"])[0]), int(params.get("page", ["1"])[0])
    chunk = items[(page - 1) * limit: page * limit]
    if not chunk:
        return web.Response(status=204)
    return hal({"_page": page, "_links": self._page_links(request, page, len(items) > page * limit),
                "_embedded": {"notes": chunk}})


async def add_tasks(self: Any, request: web.Request) -> web.StreamResponse:
    body = await self._json(request)
    for task in body:
        allowed = {"text", "complete_till", "entity_id", "entity_type", "responsible_user_id", "task_type_id"}
        if set(task) - allowed or "complete_till" not in task or "text" not in task:
            return self._reject(request, f"task fields {sorted(task)}")
        self.tasks.append(task)
    return hal({"_embedded": {"tasks": [{"id": i + 1} for i in range(len(body))]}})


async def patch_lead(self: Any, request: web.Request) -> web.StreamResponse:
    """``PATCH /api/v4/leads/{id}`` (crm-apis.md §1.5): only the fields sent change; an unknown lead is 404."""
    lid = int(request.match_info["id"])
    if request.content_type != "application/json":
        return self._reject(request, f"content type {request.content_type}")
    body = await request.json()  # one lead: an object, where the collection routes take an array
    if not isinstance(body, dict) or set(body) - {"responsible_user_id", "status_id", "pipeline_id", "name"}:
        return self._reject(request, f"lead patch {body!r}")
    if lid not in self.leads:
        return problem(404, "Not Found")
    self.leads[lid].update(body)
    self.lead_patches.append((lid, body))
    return hal({"id": lid, "updated_at": self.tick()})
