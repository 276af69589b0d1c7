"""Call-back methods of the Bitrix24 fake (methods of ``FakeBitrix``), as b24restdocs documents them.

* ``crm.lead.get`` ``{"id": N}`` (api-reference/crm/leads/crm-lead-get.md): the lead, IDs and user ids as
  strings; an unknown id is HTTP 400 ``{"error": "", "error_description": "Not found"}``.
* ``crm.activity.todo.add`` (api-reference/crm/timeline/activities/todo/crm-activity-todo-add.md):
  ``ownerTypeId``, ``ownerId`` and ``deadline`` required (else error ``100``), a deadline that is not a
  date is ``WRONG_DATETIME_FORMAT``, an owner that does not exist ``NOT_FOUND``; answers
  ``{"result": {"id": N}}``. Only leads (ownerTypeId 1) exist in this fake.
* ``crm.activity.list`` (api-reference/crm/timeline/activities/activity-base/crm-activity-list.md): filter
  by ``OWNER_TYPE_ID`` / ``OWNER_ID``, 50 a page with ``total``/``next``, every value a string.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.fakes.bitrix24 import MSK, BadRequest

LEAD_TYPE = 1
ACTIVITY_FIELDS = {"ID", "OWNER_TYPE_ID", "OWNER_ID", "PROVIDER_ID", "SUBJECT", "DESCRIPTION", "DEADLINE",
                   "RESPONSIBLE_ID", "COMPLETED", "*"}


def m_crm_lead_get(self: Any, body: dict[str, Any]) -> dict[str, Any]:
    try:
        lid = int(body.get("id") or 0)
    except (TypeError, ValueError):
        lid = 0
    if lid <= 0:
        raise BadRequest("ID is not defined or invalid")
    lead = self.leads.get(lid)
    if lead is None:
        raise BadRequest("Not found", strict=False)  # the answer a deleted lead gets: not a client bug
    out = {k: (str(v) if v is not None and not isinstance(v, list) else v) for k, v in lead.items()}
    out.setdefault("STATUS_ID", "NEW")
    return {"result": out}


def m_crm_activity_todo_add(self: Any, body: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("ownerTypeId", "ownerId", "deadline") if body.get(k) in (None, "")]
    if missing:
        raise BadRequest(f"Required fields are missing: {missing}", "100")
    try:
        deadline = datetime.fromisoformat(str(body["deadline"]))
    except ValueError:
        raise BadRequest("Incorrect date format", "WRONG_DATETIME_FORMAT") from None
    if int(body["ownerTypeId"]) != LEAD_TYPE or int(body["ownerId"]) not in self.leads:
        raise BadRequest("Not found.", "NOT_FOUND")
    aid = len(self.activities) + 1
    self.activities.append({
        "ID": str(aid), "OWNER_TYPE_ID": str(LEAD_TYPE), "OWNER_ID": str(int(body["ownerId"])),
        "PROVIDER_ID": "CRM_TODO", "SUBJECT": str(body.get("title") or ""),
        "DESCRIPTION": str(body.get("description") or ""),
        "DEADLINE": (deadline if deadline.tzinfo else deadline.replace(tzinfo=MSK)).astimezone(MSK).isoformat(),
        "RESPONSIBLE_ID": str(body.get("responsibleId") or self.user), "COMPLETED": "N"})
    return {"result": {"id": aid}}


def m_crm_activity_list(self: Any, body: dict[str, Any]) -> dict[str, Any]:
    flt = body.get("filter") or {}
    if set(flt) - {"OWNER_TYPE_ID", "OWNER_ID"}:
        raise BadRequest(f"unsupported activity filter {sorted(flt)}")
    select = body.get("select") or ["*"]
    if unknown := set(select) - ACTIVITY_FIELDS:
        raise BadRequest(f"unknown select fields {sorted(unknown)}")
    order = body.get("order") or {"ID": "ASC"}
    if set(order) - {"ID"}:
        raise BadRequest(f"unsupported order {order}")
    rows = [a for a in self.activities if all(a[k] == str(v) for k, v in flt.items())]
    rows.sort(key=lambda a: int(a["ID"]), reverse=str(order.get("ID", "ASC")).upper() == "DESC")
    page = self._paged(rows, int(body.get("start", 0)))
    keep = ACTIVITY_FIELDS - {"*"} if "*" in select else set(select)
    page["result"] = [{k: v for k, v in a.items() if k in keep} for a in page["result"]]
    return page
