"""A contract-faithful fake of amoCRM API v4 (shared/crm-apis.md §1) on loopback.

Behaves as the real API does where callguard relies on it: pages of ≤ 250 with ``_links.next``, HTTP 204
with no body for an empty list, v4 contact shapes (``custom_fields_values`` null when empty, PHONE as a
multitext with ``enum_code``), ``query=`` matching digits anywhere (also in non-phone fields), 7 rps
answered with a non-JSON 429, problem+json 401 for a bad token, OAuth refresh that rotates the refresh
token, Unsorted ``sip``, leads with tags, call notes, events for deleted contacts, and v2 form-encoded
webhook bodies. ``generated=N`` serves N synthetic contacts computed per page (the 1M benchmark) without
holding them in memory; ``serve()`` runs it standalone (scripts/bench_sync.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import urllib.parse
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.crmbase import FakeServer, SlidingWindow

PHONE_FIELD = {"id": 3, "name": "Телефон", "code": "PHONE", "type": "multitext"}
SPAM_FIELD = {"id": 777, "name": "Спам", "code": None, "type": "checkbox"}
ORDER_FIELD = {"id": 900, "name": "Номер заказа", "code": None, "type": "text"}
FIELDS = [PHONE_FIELD, SPAM_FIELD, ORDER_FIELD] + [
    {"id": 1000 + i, "name": f"Поле {i}", "code": None, "type": "text"} for i in range(60)]

Q = {  # allowed query parameters per route: anything else fails loudly
    "contacts": {"limit", "page", "order[id]", "order[updated_at]", "filter[updated_at][from]",
                 "filter[updated_at][to]", "filter[id][]", "query", "with"},
    "fields": {"limit", "page"},
    "events": {"filter[entity][]", "filter[type][]", "filter[created_at][from]", "limit", "page"},
    "leads": {"filter[created_at][from]", "limit", "page", "with"},
    "unsorted": {"filter[category][]", "order[created_at]", "limit", "page"},
    "notes": {"filter[note_type]", "limit", "page"},
    "tasks": {"filter[entity_type]", "filter[entity_id][]", "limit", "page"},
    "none": set(),
}
UNSORTED_KEYS = {"source_uid", "source_name", "pipeline_id", "created_at", "metadata", "_embedded", "request_id"}
METADATA_KEYS = {"from", "phone", "called_at", "duration", "link", "service_code", "uniq", "is_call_event_needed"}
LEAD_KEYS = {"name", "price", "pipeline_id", "status_id", "responsible_user_id", "custom_fields_values",
             "_embedded", "request_id", "created_at", "tags_to_add"}
NOTE_PARAMS = {"uniq", "duration", "source", "link", "phone", "call_status", "call_result"}


def problem(status: int, title: str, detail: str = "") -> web.Response:
    return web.json_response({"title": title, "type": f"https://httpstatus.es/{status}", "status": status,
                              "detail": detail}, status=status, content_type="application/problem+json")


def hal(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/hal+json")


class FakeAmo(FakeServer):
    def __init__(self, token: str = "amo-token", rps: float | None = 7, account_id: int = 28805383,
                 subdomain: str = "callguard", generated: int = 0) -> None:
        super().__init__()
        self.token = token
        self.window = SlidingWindow(rps)
        self.account_id, self.subdomain = account_id, subdomain
        self.generated = generated
        self.contacts: dict[int, dict[str, Any]] = {}  # id → {name, owner, phones, spam, order, updated_at}
        self.events: list[dict[str, Any]] = []
        self.leads: dict[int, dict[str, Any]] = {}
        self.unsorted: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.lead_patches: list[tuple[int, dict[str, Any]]] = []  # (lead id, body) in order
        self.oauth = {"client_id": "", "client_secret": "", "refresh_token": ""}
        self._ids = itertools.count(generated + 1000)
        self._clock = int(time.time())
        self.app.middlewares.append(self._middleware)
        r = self.app.router
        r.add_get("/api/v4/account", self.account)
        r.add_get("/api/v4/contacts", self.list_contacts)
        r.add_get("/api/v4/contacts/custom_fields", self.custom_fields)
        r.add_get(r"/api/v4/contacts/{id:\d+}", self.get_contact)
        r.add_get("/api/v4/events", self.list_events)
        r.add_post("/api/v4/leads", self.add_leads)
        r.add_get("/api/v4/leads", self.list_leads)
        r.add_post("/api/v4/leads/complex", self.add_complex)
        r.add_post("/api/v4/leads/unsorted/sip", self.add_unsorted)
        r.add_get("/api/v4/leads/unsorted", self.list_unsorted)
        r.add_post("/api/v4/leads/notes", self.add_notes)
        r.add_get(r"/api/v4/leads/{id:\d+}/notes", self.list_notes)
        r.add_post("/api/v4/tasks", self.add_tasks)
        r.add_get("/api/v4/tasks", self.list_tasks)
        r.add_get(r"/api/v4/leads/{id:\d+}", self.get_lead)
        r.add_patch(r"/api/v4/leads/{id:\d+}", self.patch_lead)
        r.add_post("/oauth2/access_token", self.access_token)

    # --- test helpers ---------------------------------------------------------------------------------

    def tick(self) -> int:
        """The CRM's clock moves on at every change, so ``updated_at`` cursors see each one."""
        self._clock = max(self._clock + 1, int(time.time()))
        return self._clock

    def add_contact(self, name: str, phones: list[str], spam: bool | None = None, owner: int = 504141,
                    order: str | None = None, contact_id: int | None = None) -> int:
        cid = contact_id or next(self._ids)
        self.contacts[cid] = {"name": name, "owner": owner, "phones": list(phones), "spam": spam,
                              "order": order, "updated_at": self.tick(), "created_at": self._clock}
        return cid

    def update_contact(self, cid: int, **changes: Any) -> None:
        self.contacts[cid].update(changes)
        self.contacts[cid]["updated_at"] = self.tick()

    def delete_contact(self, cid: int) -> None:
        del self.contacts[cid]
        self.events.append({"id": f"01J{cid:020d}", "type": "contact_deleted", "entity_id": cid,
                            "entity_type": "contact", "created_at": self.tick()})

    def webhook_body(self, action: str, cid: int, account_id: int | None = None) -> bytes:
        """A v2 form-encoded delivery (§1.8) for ``contacts[action]``."""
        c = self.contacts.get(cid, {"name": "", "owner": 0, "phones": [], "updated_at": self.tick()})
        p = f"contacts[{action}][0]"
        pairs = [(f"{p}[id]", str(cid)), (f"{p}[name]", c["name"]), (f"{p}[responsible_user_id]", str(c["owner"])),
                 (f"{p}[date_create]", str(c.get("created_at", 0))), (f"{p}[last_modified]", str(c["updated_at"]))]
        for i, phone in enumerate(c["phones"]):
            f = f"{p}[custom_fields][0]"
            pairs += [(f"{f}[id]", "3"), (f"{f}[name]", "Телефон"), (f"{f}[values][{i}][value]", phone),
                      (f"{f}[values][{i}][enum]", "2218698")]
        pairs += [("account[subdomain]", self.subdomain), ("account[id]", str(account_id or self.account_id)),
                  ("account[_links][self]", f"https://{self.subdomain}.amocrm.ru")]
        return urllib.parse.urlencode(pairs).encode()

    # --- plumbing -----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls[f"{request.method} {request.path}"] += 1
        if request.match_info.http_exception is not None:
            self.strict_error(f"{request.method} {request.path}: no such route")
            return problem(request.match_info.http_exception.status, "Not Found", "unknown path or method")
        if not self.window.admit():
            self.violations += 1
            return web.Response(status=429, text="Too Many Requests")  # not JSON (§1.2)
        injected = await self.take_injection()
        if injected is not None and injected[0] == "status":
            status, retry_after = injected[1]
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            if status == 429:
                return web.Response(status=429, text="Too Many Requests", headers=headers)
            return problem(status, "Injected", "fault injected by the test")
        if request.path != "/oauth2/access_token" and request.headers.get("Authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthorized", "Token is invalid or expired")
        response = await handler(request)
        await self.pause_reply(f"{request.method} {request.path}")
        lost = self.take_after(f"{request.method} {request.path}")
        if lost is not None:
            return problem(lost, "Gateway Timeout", "reply lost after the change was made")
        return response

    def _params(self, request: web.Request, route: str) -> dict[str, list[str]] | web.Response:
        params: dict[str, list[str]] = {}
        for k, v in request.query.items():
            if k not in Q[route]:
                self.strict_error(f"{request.path}: unknown parameter {k}")
                return problem(400, "Bad Request", f"unknown parameter {k}")
            params.setdefault(k, []).append(v)
        limit = int(params.get("limit", ["50"])[0])
        cap = {"fields": 50, "events": 100}.get(route, 250)
        if limit > cap:
            self.strict_error(f"{request.path}: limit {limit} > {cap}")
            return problem(400, "Bad Request", "limit too large")
        return params

    async def _json(self, request: web.Request) -> Any:
        if request.content_type != "application/json":
            self.strict_error(f"{request.path}: content type {request.content_type}")
            raise web.HTTPUnsupportedMediaType()
        body = await request.json()
        if not isinstance(body, list):
            self.strict_error(f"{request.path}: body must be an array, got {type(body).__name__}")
            raise web.HTTPBadRequest(text=json.dumps({"title": "Bad Request", "status": 400}))
        return body

    def _reject(self, request: web.Request, what: str) -> web.Response:
        self.strict_error(f"{request.path}: {what}")
        return web.json_response({"validation-errors": [{"request_id": "0", "errors": [
            {"code": "NotSupportedChoice", "path": what, "detail": "This field is not expected."}]}],
            "title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
            "detail": "Request validation failed"}, status=400, content_type="application/problem+json")

    # --- contacts -------------------------------------------------------------------------------------

    def render(self, cid: int, c: dict[str, Any]) -> dict[str, Any]:
        cfv: list[dict[str, Any]] = []
        if c["phones"]:
            cfv.append({"field_id": 3, "field_name": "Телефон", "field_code": "PHONE", "field_type": "multitext",
                        "values": [{"value": p, "enum_id": 1 + i, "enum_code": ("WORK", "MOB", "HOME")[i % 3]}
                                   for i, p in enumerate(c["phones"])]})
        if c.get("order"):
            cfv.append({"field_id": 900, "field_name": "Номер заказа", "field_code": None, "field_type": "text",
                        "values": [{"value": c["order"]}]})
        if c.get("spam") is not None:
            cfv.append({"field_id": 777, "field_name": "Спам", "field_code": None, "field_type": "checkbox",
                        "values": [{"value": bool(c["spam"])}]})
        first, _, last = c["name"].partition(" ")
        return {"id": cid, "name": c["name"], "first_name": first, "last_name": last,
                "responsible_user_id": c["owner"], "group_id": 0, "created_by": 0, "updated_by": 0,
                "created_at": c.get("created_at", c["updated_at"]), "updated_at": c["updated_at"],
                "closest_task_at": None, "is_deleted": False, "custom_fields_values": cfv or None,
                "account_id": self.account_id,
                "_links": {"self": {"href": f"https://{self.subdomain}.amocrm.ru/api/v4/contacts/{cid}"}},
                "_embedded": {"tags": [], "companies": []}}

    def generated_contact(self, cid: int) -> dict[str, Any]:
        phones = [f"+79{cid:09d}"]
        if cid % 3 == 0:
            n = f"{(cid * 7919) % 10**9:09d}"
            phones.append(f"8 (9{n[:2]}) {n[2:5]}-{n[5:7]}-{n[7:]}")
        return {"name": f"Контакт {cid}", "owner": 504141 + cid % 7, "phones": phones, "spam": cid % 50 == 0,
                "order": None, "updated_at": 1700000000 + cid, "created_at": 1700000000}

    def _page_links(self, request: web.Request, page: int, more: bool) -> dict[str, Any]:
        base = f"https://{self.subdomain}.amocrm.ru{request.path}"
        links = {"self": {"href": f"{base}?page={page}&limit=250"}}
        if more:
            links["next"] = {"href": f"{base}?page={page + 1}&limit=250"}
        return links

    async def list_contacts(self, request: web.Request) -> web.StreamResponse:
        params = self._params(request, "contacts")
        if isinstance(params, web.Response):
            return params
        limit, page = int(params.get("limit", ["50"])[0]), int(params.get("page", ["1"])[0])
        if self.generated:
            return self._generated_page(request, params, limit, page)
        items = self._filter(params)
        chunk = items[(page - 1) * limit: page * limit]
        if not chunk:
            return web.Response(status=204)  # no body, not [] (§1.3)
        more = len(items) > page * limit
        return hal({"_page": page, "_links": self._page_links(request, page, more),
                    "_embedded": {"contacts": [self.render(cid, c) for cid, c in chunk]}})

    def _filter(self, params: dict[str, list[str]]) -> list[tuple[int, dict[str, Any]]]:
        items = list(self.contacts.items())
        if "filter[updated_at][from]" in params:
            since = int(params["filter[updated_at][from]"][0])
            items = [(i, c) for i, c in items if c["updated_at"] >= since]
        if "filter[id][]" in params:
            wanted = {int(x) for x in params["filter[id][]"]}
            items = [(i, c) for i, c in items if i in wanted]
        if "query" in params:
            q = re.sub(r"\D", "", params["query"][0]) or params["query"][0]
            items = [(i, c) for i, c in items if any(
                q in re.sub(r"\D", "", v) for v in [*c["phones"], c.get("order") or ""]) or q in c["name"]]
        if "order[updated_at]" in params:
            items.sort(key=lambda t: (t[1]["updated_at"], t[0]), reverse=params["order[updated_at]"][0] == "desc")
        else:
            items.sort(key=lambda t: t[0], reverse=params.get("order[id]", ["asc"])[0] == "desc")
        return items

    def _generated_page(self, request: web.Request, params: dict[str, list[str]], limit: int,
                        page: int) -> web.Response:
        if set(params) - {"limit", "page", "order[id]"}:
            self.strict_error(f"generated mode serves plain listings only, got {sorted(params)}")
            return problem(400, "Bad Request", "unsupported in generated mode")
        first = (page - 1) * limit + 1
        last = min(self.generated, page * limit)
        if first > last:
            return web.Response(status=204)
        contacts = [self.render(i, self.generated_contact(i)) for i in range(first, last + 1)]
        return hal({"_page": page, "_links": self._page_links(request, page, last < self.generated),
                    "_embedded": {"contacts": contacts}})

    async def get_contact(self, request: web.Request) -> web.StreamResponse:
        cid = int(request.match_info["id"])
        if cid not in self.contacts:
            return web.Response(status=204)
        return hal(self.render(cid, self.contacts[cid]))

    async def custom_fields(self, request: web.Request) -> web.StreamResponse:
        params = self._params(request, "fields")
        if isinstance(params, web.Response):
            return params
        limit, page = int(params.get("limit", ["50"])[0]), int(params.get("page", ["1"])[0])
        chunk = FIELDS[(page - 1) * limit: page * limit]
        if not chunk:
            return web.Response(status=204)
        return hal({"_page": page, "_links": self._page_links(request, page, len(FIELDS) > page * limit),
                    "_embedded": {"custom_fields": chunk}})

    async def account(self, request: web.Request) -> web.StreamResponse:
        return hal({"id": self.account_id, "name": "Callguard test", "subdomain": self.subdomain,
                    "country": "RU", "currency": "RUB"})

    async def list_events(self, request: web.Request) -> web.StreamResponse:
        params = self._params(request, "events")
        if isinstance(params, web.Response):
            return params
        limit, page = int(params.get("limit", ["50"])[0]), int(params.get("page", ["1"])[0])
        since = int(params.get("filter[created_at][from]", ["0"])[0])
        types = set(params.get("filter[type][]", []))
        items = [e for e in self.events if e["created_at"] >= since and (not types or e["type"] in types)]
        chunk = items[(page - 1) * limit: page * limit]
        if not chunk:
            return web.Response(status=204)
        return hal({"_page": page, "_links": self._page_links(request, page, len(items) > page * limit),
                    "_embedded": {"events": chunk}})

    async def access_token(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        o = self.oauth
        if (body.get("grant_type") != "refresh_token" or body.get("client_id") != o["client_id"]
                or body.get("client_secret") != o["client_secret"] or body.get("refresh_token") != o["refresh_token"]):
            return problem(400, "Bad Request", "Refresh token is invalid")
        self.token = f"access-{self.tick()}"
        o["refresh_token"] = f"refresh-{self._clock}"  # rotates: the old one is void now
        return web.json_response({"token_type": "Bearer", "expires_in": 86400, "server_time": self._clock,
                                  "access_token": self.token, "refresh_token": o["refresh_token"]})

    # --- leads, unsorted, notes, tasks: see amocrm_leads.py ---------------------------------------------

    from tests.fakes.amocrm_leads import (
        add_complex,
        add_leads,
        add_notes,
        add_tasks,
        add_unsorted,
        list_leads,
        list_notes,
        list_unsorted,
        patch_lead,
    )
    from tests.fakes.amocrm_tasks import get_lead, lead_webhook_body, list_tasks


async def serve(generated: int, rps: float | None = None) -> None:
    """Serve until killed, printing the base URL first (scripts/bench_sync.py runs it in a process)."""
    fake = FakeAmo(rps=rps, generated=generated)
    url = await fake.start()
    print(url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.close()
