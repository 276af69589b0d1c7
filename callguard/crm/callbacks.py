"""The call-back loop's CRM calls (callbacks.actions.CallbackCrm) per adapter, as the vendors document them.

* amoCRM (crm-apis.md §1.5, §1.7): the responsible is ``PATCH /api/v4/leads/{id}``
  ``{"responsible_user_id": N}`` (idempotent, so retried like a read); the call-back task is
  ``POST /api/v4/tasks`` with ``task_type_id`` 1 (Call), ``entity_type`` leads and ``complete_till`` in
  Unix seconds (never retried blind: no idempotency key, §3). The lead is read with
  ``GET /api/v4/leads/{id}`` (``status_id``, ``responsible_user_id``; 204 = no such lead, as every v4 read
  by id). A redo looks for its task with ``GET /api/v4/tasks?filter[entity_type]=leads&filter[entity_id][]=N``
  (the official SDK's ``Filters/TasksFilter.php``: ``entity_id`` is only sent with ``entity_type``; pages
  of ≤ 250 with ``_links.next``, 204 when none) and the marker in its ``text``.
* Bitrix24 (§2.5): ``crm.lead.update`` ``{"id": …, "fields": {"ASSIGNED_BY_ID": N}}`` → ``{"result": true}``;
  the lead is read with ``crm.lead.get`` ``{"id": N}`` (``STATUS_ID``, ``ASSIGNED_BY_ID``; "Not found" is a
  400 with an empty ``error``: b24restdocs ``api-reference/crm/leads/crm-lead-get.md``). The call-back
  task is a universal activity, ``crm.activity.todo.add`` with ``ownerTypeId`` 1 (lead), ``ownerId``,
  ``deadline`` (ISO-8601), ``title``, ``description``, ``responsibleId`` → ``{"result": {"id": N}}``
  (b24restdocs ``api-reference/crm/timeline/activities/todo/crm-activity-todo-add.md``); a redo looks for
  it with ``crm.activity.list`` filtered by ``OWNER_TYPE_ID``/``OWNER_ID`` (the filter in that page's
  example, ``api-reference/crm/timeline/activities/activity-base/crm-activity-list.md``; 50 a page,
  ``next``) and the marker in its ``DESCRIPTION``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from callguard.crm.amocrm_api import AmoApi
from callguard.crm.base import LeadSeen
from callguard.crm.bitrix24 import Bitrix24
from callguard.errors import CrmError, CrmRejectedError

AMO_TASK_CALL = 1  # built-in task type "Call" (§1.7)
AMO_PAGE = 250
B24_LEAD = 1  # ownerTypeId of a lead (b24restdocs api-reference/crm/data-types.md, object types)
B24_TITLE = "Перезвонить клиенту"


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class AmoCallbacks:
    name = "amocrm"

    def __init__(self, api: AmoApi) -> None:
        self.api = api

    async def set_responsible(self, lead_ref: str, user_id: int) -> None:
        await self.api.patch(f"/api/v4/leads/{int(lead_ref)}", "lead_responsible", {"responsible_user_id": user_id})

    async def create_task(self, lead_ref: str, user_id: int, due: float, text: str) -> str:
        body = [{"text": text, "complete_till": int(due), "entity_id": int(lead_ref), "entity_type": "leads",
                 "responsible_user_id": user_id, "task_type_id": AMO_TASK_CALL}]
        reply: Any = await self.api.post("/api/v4/tasks", "task_add", body)
        try:
            return str(reply["_embedded"]["tasks"][0]["id"])
        except (KeyError, IndexError, TypeError) as e:
            raise CrmError("amocrm task_add answered without a task id") from e

    async def find_task(self, lead_ref: str, marker: str) -> str | None:
        page = 1
        while True:
            body = await self.api.get("/api/v4/tasks", "tasks_of_lead", {
                "filter[entity_type]": "leads", "filter[entity_id][]": [str(int(lead_ref))],
                "limit": AMO_PAGE, "page": page})
            if not isinstance(body, dict):
                return None  # 204: the lead has no tasks
            for task in (body.get("_embedded") or {}).get("tasks") or []:
                if isinstance(task, dict) and marker in str(task.get("text", "")):
                    return str(task.get("id", ""))
            if not (body.get("_links") or {}).get("next"):
                return None
            page += 1

    async def read_lead(self, lead_ref: str) -> LeadSeen:
        body = await self.api.get(f"/api/v4/leads/{int(lead_ref)}", "lead_get")
        if not isinstance(body, dict):
            return LeadSeen(found=False)  # 204: deleted
        return LeadSeen(str(body.get("status_id") or ""), _int(body.get("responsible_user_id")))

    async def close(self) -> None:
        await self.api.close()


class Bitrix24Callbacks:
    name = "bitrix24"

    def __init__(self, client: Bitrix24) -> None:
        self.client = client

    async def set_responsible(self, lead_ref: str, user_id: int) -> None:
        reply = await self.client.call("crm.lead.update", {"id": int(lead_ref), "fields": {"ASSIGNED_BY_ID": user_id}})
        if reply.get("result") is not True:
            raise CrmError("bitrix24 crm.lead.update did not answer true")

    async def create_task(self, lead_ref: str, user_id: int, due: float, text: str) -> str:
        params = {"ownerTypeId": B24_LEAD, "ownerId": int(lead_ref),
                  "deadline": datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds"),
                  "title": B24_TITLE, "description": text, "responsibleId": user_id}
        reply = await self.client.call("crm.activity.todo.add", params, idempotent=False)
        result = reply.get("result")
        if not isinstance(result, dict) or not result.get("id"):
            raise CrmError("bitrix24 crm.activity.todo.add answered without an id")
        return str(result["id"])

    async def find_task(self, lead_ref: str, marker: str) -> str | None:
        start = 0
        while True:
            body = await self.client.call("crm.activity.list", {
                "filter": {"OWNER_TYPE_ID": B24_LEAD, "OWNER_ID": int(lead_ref)},
                "select": ["ID", "DESCRIPTION"], "order": {"ID": "ASC"}, "start": start})
            for row in body["result"] or []:
                if isinstance(row, dict) and marker in str(row.get("DESCRIPTION") or ""):
                    return str(row.get("ID", ""))
            if "next" not in body:
                return None
            start = int(body["next"])

    async def read_lead(self, lead_ref: str) -> LeadSeen:
        try:
            body = await self.client.call("crm.lead.get", {"id": int(lead_ref)})
        except CrmRejectedError as e:
            if e.status == 400 and str(e).endswith("Not found"):
                return LeadSeen(found=False)
            raise
        lead = body["result"] if isinstance(body["result"], dict) else {}
        return LeadSeen(str(lead.get("STATUS_ID") or ""), _int(lead.get("ASSIGNED_BY_ID")))

    async def close(self) -> None:
        await self.client.close()
