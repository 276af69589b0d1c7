"""A contract-faithful fake of Bitrix24 REST over an inbound webhook (shared/crm-apis.md §2) on loopback.

``POST /rest/<user>/<secret>/<method>[.json]`` with a JSON body. Behaves as the docs say: 50 rows a page
with ``total``/``next`` (none with ``start=-1``), IDs as strings, multifields only when ``PHONE`` is
selected, ``DATE_MODIFY`` as ISO-8601 with +03:00, boolean user fields as "0"/"1", the leaky bucket
answering 503 ``QUERY_LIMIT_EXCEEDED``, 401 ``INVALID_CREDENTIALS`` for a wrong webhook secret, 404
``ERROR_METHOD_NOT_FOUND``, ``findbycomm`` answering ``[]`` when nothing matches, ORIGIN_ID on leads,
timeline comments, and form-encoded ONCRMCONTACT* event deliveries. Strict: an unknown parameter,
filter, select field or method is answered with an error and recorded in ``errors``.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from tests.fakes.crmbase import FakeServer, LeakyBucket

MSK = timezone(timedelta(hours=3))
CONTACT_FIELDS = {"ID", "NAME", "LAST_NAME", "ASSIGNED_BY_ID", "DATE_MODIFY", "PHONE", "UF_CRM_SPAM", "*", "UF_*"}
PARAMS = {
    "crm.contact.list": {"order", "filter", "select", "start"},
    "crm.contact.fields": set(),
    "crm.duplicate.findbycomm": {"type", "values", "entity_type"},
    "crm.lead.add": {"fields", "params"},
    "crm.lead.list": {"order", "filter", "select", "start"},
    "crm.lead.update": {"id", "fields", "params"},
    "crm.lead.get": {"id"},
    # b24restdocs api-reference/crm/timeline/activities/todo/crm-activity-todo-add.md: every parameter
    "crm.activity.todo.add": {"ownerTypeId", "ownerId", "deadline", "title", "description", "responsibleId",
                              "parentActivityId", "pingOffsets", "colorId"},
    "crm.activity.list": {"select", "filter", "order", "start"},
    "crm.timeline.comment.add": {"fields"},
    "crm.timeline.comment.list": {"filter", "select", "start", "order"},
    "telephony.externalcall.register": {"USER_ID", "PHONE_NUMBER", "TYPE", "CALL_START_DATE", "CRM_CREATE",
                                        "CRM_SOURCE", "CRM_ENTITY_TYPE", "CRM_ENTITY_ID", "SHOW", "LINE_NUMBER",
                                        "EXTERNAL_CALL_ID"},
    "telephony.externalcall.finish": {"CALL_ID", "USER_ID", "DURATION", "STATUS_CODE"},
}
LEAD_FIELDS = {"TITLE", "SOURCE_ID", "SOURCE_DESCRIPTION", "STATUS_ID", "ASSIGNED_BY_ID", "CONTACT_ID", "PHONE",
               "ORIGINATOR_ID", "ORIGIN_ID", "COMMENTS", "UF_CRM_SPAM"}


class BadRequest(Exception):
    def __init__(self, text: str, code: str = "", strict: bool = True) -> None:
        super().__init__(text)
        self.code, self.strict = code, strict  # strict: a request callguard should never have sent


def error(status: int, code: str, text: str) -> web.Response:
    return web.json_response({"error": code, "error_description": text}, status=status)


class FakeBitrix(FakeServer):
    def __init__(self, user: str = "1", secret: str = "b24-secret", rate: float | None = 2.0, burst: float = 50,
                 application_token: str = "app-token") -> None:
        super().__init__()
        self.user, self.secret = user, secret
        self.bucket = LeakyBucket(rate, burst)
        self.application_token = application_token
        self.contacts: dict[int, dict[str, Any]] = {}
        self.leads: dict[int, dict[str, Any]] = {}
        self.lead_updates: list[tuple[int, dict[str, Any]]] = []
        self.comments: list[dict[str, Any]] = []
        self.calls_registered: list[dict[str, Any]] = []
        self.activities: list[dict[str, Any]] = []  # crm.activity.todo.add, as crm.activity.list shows them
        self._ids = itertools.count(100)
        self._lead_ids = itertools.count(3000)
        self._clock = datetime.now(MSK).replace(microsecond=0)
        self.app.router.add_route("*", "/rest/{user}/{secret}/{method}", self.dispatch)

    # --- test helpers -------------------------------------------------------------------------------

    def tick(self) -> datetime:
        self._clock = max(self._clock + timedelta(seconds=1), datetime.now(MSK).replace(microsecond=0))
        return self._clock

    def add_contact(self, name: str, phones: list[str], spam: bool = False, owner: int = 1) -> int:
        cid = next(self._ids)
        first, _, last = name.partition(" ")
        self.contacts[cid] = {"NAME": first, "LAST_NAME": last, "ASSIGNED_BY_ID": owner, "spam": spam,
                              "phones": list(phones), "DATE_MODIFY": self.tick()}
        return cid

    def update_contact(self, cid: int, **changes: Any) -> None:
        self.contacts[cid].update(changes)
        self.contacts[cid]["DATE_MODIFY"] = self.tick()

    def event_body(self, event: str, cid: int, token: str | None = None) -> bytes:
        """An outbound-webhook delivery, form-encoded as Bitrix24 sends it (§2.7)."""
        return urllib.parse.urlencode([
            ("event", event), ("event_handler_id", "12"), ("data[FIELDS][ID]", str(cid)),
            ("ts", str(int(time.time()))), ("auth[domain]", "portal.bitrix24.ru"),
            ("auth[client_endpoint]", "https://portal.bitrix24.ru/rest/"), ("auth[member_id]", "a223c6"),
            ("auth[application_token]", token if token is not None else self.application_token)]).encode()

    # --- dispatch -----------------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"].removesuffix(".json").lower()
        self.calls[method] += 1
        if request.match_info["user"] != self.user or request.match_info["secret"] != self.secret:
            return error(401, "INVALID_CREDENTIALS", "Invalid request credentials")
        if request.method != "POST":
            self.strict_error(f"{request.method} {method}: callguard must POST JSON")
            return error(405, "METHOD_NOT_ALLOWED", "use POST")
        if not self.bucket.admit():
            self.violations += 1
            return error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        injected = await self.take_injection()
        if injected is not None and injected[0] == "status":
            status = injected[1][0]
            code = {503: "QUERY_LIMIT_EXCEEDED", 429: "OPERATION_TIME_LIMIT"}.get(status, "INTERNAL_SERVER_ERROR")
            return error(status, code, "injected")
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None or method not in PARAMS:
            self.strict_error(f"unknown method {method}")
            return error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        body = await request.json() if request.can_read_body else {}
        unknown = set(body) - PARAMS[method]
        if unknown:
            self.strict_error(f"{method}: unknown parameters {sorted(unknown)}")
            return error(400, "INVALID_ARG_VALUE", f"unknown parameters {sorted(unknown)}")
        try:
            result = handler(body)
        except BadRequest as e:
            if e.strict:
                self.strict_error(f"{method}: {e}")
            return error(400, e.code, str(e))
        await self.pause_reply(method)
        lost = self.take_after(method)
        if lost is not None:
            return error(lost, "INTERNAL_SERVER_ERROR", "reply lost after the change was made")
        started = time.time()
        result.setdefault("time", {"start": started, "finish": started, "duration": 0.001, "operating": 0,
                                    "date_start": self._clock.isoformat(), "operating_reset_at": started + 600})
        return web.Response(text=json.dumps(result, ensure_ascii=False), content_type="application/json")

    # --- contacts -----------------------------------------------------------------------------------

    def render(self, cid: int, select: list[str]) -> dict[str, Any]:
        c = self.contacts[cid]
        out: dict[str, Any] = {}
        want = set(select) if select else {"*"}
        if unknown := want - CONTACT_FIELDS:
            raise BadRequest(f"unknown select fields {sorted(unknown)}")
        if "*" in want or "ID" in want:
            out["ID"] = str(cid)
        for k in ("NAME", "LAST_NAME", "ASSIGNED_BY_ID"):
            if "*" in want or k in want:
                out[k] = str(c[k]) if c[k] is not None else None
        if "*" in want or "DATE_MODIFY" in want:
            out["DATE_MODIFY"] = c["DATE_MODIFY"].isoformat()
        if "UF_*" in want or "UF_CRM_SPAM" in want:
            out["UF_CRM_SPAM"] = "1" if c["spam"] else "0"
        if "PHONE" in want:  # never by a mask (§2.3)
            out["PHONE"] = [{"ID": str(cid * 10 + i), "VALUE_TYPE": "WORK", "VALUE": p, "TYPE_ID": "PHONE"}
                            for i, p in enumerate(c["phones"])]
        return out

    def _match(self, cid: int, flt: dict[str, Any]) -> bool:
        c = self.contacts[cid]
        for key, value in flt.items():
            if key == ">ID":
                ok = cid > int(value)
            elif key == "@ID":
                ok = cid in {int(v) for v in value}
            elif key == ">=DATE_MODIFY":
                ok = c["DATE_MODIFY"] >= datetime.fromisoformat(value)
            else:
                raise BadRequest(f"unsupported filter {key}")
            if not ok:
                return False
        return True

    def _paged(self, rows: list[Any], start: int) -> dict[str, Any]:
        if start == -1:
            return {"result": rows[:50]}
        out: dict[str, Any] = {"result": rows[start:start + 50], "total": len(rows)}
        if len(rows) > start + 50:
            out["next"] = start + 50
        return out

    def m_crm_contact_list(self, body: dict[str, Any]) -> dict[str, Any]:
        order = body.get("order") or {"ID": "ASC"}
        if set(order) - {"ID", "DATE_MODIFY"}:
            raise BadRequest(f"unsupported order {order}")
        ids = [cid for cid in self.contacts if self._match(cid, body.get("filter") or {})]
        ids.sort(key=lambda i: tuple((self.contacts[i]["DATE_MODIFY"] if k == "DATE_MODIFY" else i) for k in order))
        page = self._paged(ids, int(body.get("start", 0)))
        page["result"] = [self.render(cid, body.get("select") or []) for cid in page["result"]]
        return page

    def m_crm_contact_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"result": {"ID": {"type": "integer"}, "NAME": {"type": "string"}, "PHONE": {"type": "crm_multifield"},
                           "UF_CRM_SPAM": {"type": "boolean", "isMultiple": False}}}

    def m_crm_duplicate_findbycomm(self, body: dict[str, Any]) -> dict[str, Any]:
        values = body.get("values") or []
        if body.get("type") != "PHONE" or len(values) > 20:
            raise BadRequest("type must be PHONE, at most 20 values")
        wanted = {re.sub(r"\D", "", v)[-10:] for v in values}
        ids = [cid for cid, c in self.contacts.items()
               if any(re.sub(r"\D", "", p)[-10:] in wanted for p in c["phones"])]
        return {"result": {"CONTACT": ids} if ids else []}  # nothing found: [] (the docs leave it open)

    # --- leads, comments, telephony -----------------------------------------------------------------

    def m_crm_lead_add(self, body: dict[str, Any]) -> dict[str, Any]:
        fields = body.get("fields") or {}
        if unknown := set(fields) - LEAD_FIELDS:
            raise BadRequest(f"unknown lead fields {sorted(unknown)}")
        if "CONTACT_ID" in fields and int(fields["CONTACT_ID"]) not in self.contacts:
            raise BadRequest("contact not found")
        lid = next(self._lead_ids)
        self.leads[lid] = {**fields, "ID": str(lid), "IS_RETURN_CUSTOMER": "Y" if "CONTACT_ID" in fields else "N"}
        return {"result": lid}

    def m_crm_lead_update(self, body: dict[str, Any]) -> dict[str, Any]:
        """§2.5: only the fields passed change; unknown fields are ignored; ``{"result": true}``."""
        lead = self.leads.get(int(body.get("id") or 0))
        if lead is None:
            raise BadRequest("Not found")
        fields = {k: v for k, v in (body.get("fields") or {}).items() if k in LEAD_FIELDS}
        lead.update(fields)
        self.lead_updates.append((int(body["id"]), fields))
        return {"result": True}

    def m_crm_lead_list(self, body: dict[str, Any]) -> dict[str, Any]:
        flt = body.get("filter") or {}
        if set(flt) - {"ORIGINATOR_ID", "ORIGIN_ID"}:
            raise BadRequest(f"unsupported lead filter {sorted(flt)}")
        rows = [lead for lead in self.leads.values() if all(str(lead.get(k)) == str(v) for k, v in flt.items())]
        page = self._paged(rows, int(body.get("start", 0)))
        select = body.get("select") or ["ID"]
        page["result"] = [{k: (str(r.get(k)) if r.get(k) is not None else None) for k in select}
                          for r in page["result"]]
        return page

    def m_crm_timeline_comment_add(self, body: dict[str, Any]) -> dict[str, Any]:
        f = body.get("fields") or {}
        if set(f) != {"ENTITY_ID", "ENTITY_TYPE", "COMMENT"} or int(f["ENTITY_ID"]) not in self.leads:
            raise BadRequest(f"bad comment {f}")
        self.comments.append({"ID": str(len(self.comments) + 1), **f})
        return {"result": len(self.comments)}

    def m_crm_timeline_comment_list(self, body: dict[str, Any]) -> dict[str, Any]:
        flt = body.get("filter") or {}
        rows = [c for c in self.comments if int(c["ENTITY_ID"]) == int(flt.get("ENTITY_ID", -1))]
        return self._paged(rows, int(body.get("start", 0)))

    def m_telephony_externalcall_register(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls_registered.append(dict(body))
        return {"result": {"CALL_ID": f"externalCall.{len(self.calls_registered)}", "CRM_CREATED_LEAD": None}}

    def m_telephony_externalcall_finish(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls_registered[-1]["finish"] = dict(body)
        return {"result": {"CALL_ID": body["CALL_ID"], "CALL_STATUS": 0}}

    # --- the call-back loop: a lead by id, universal activities (fakes/bitrix24_activity.py) -----------

    from tests.fakes.bitrix24_activity import m_crm_activity_list, m_crm_activity_todo_add, m_crm_lead_get
