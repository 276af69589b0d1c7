"""The call-back loop's CRM calls (callbacks.actions.CallbackCrm) per adapter, as crm-apis.md states them.

* amoCRM (§1.5, §1.7): the responsible is ``PATCH /api/v4/leads/{id}`` ``{"responsible_user_id": N}``
  (idempotent, so retried like a read); the call-back task is ``POST /api/v4/tasks`` with
  ``task_type_id`` 1 (Call), ``entity_type`` leads and ``complete_till`` in Unix seconds (never retried
  blind: no idempotency key, §3).
* Bitrix24 (§2.5): ``crm.lead.update`` ``{"id": …, "fields": {"ASSIGNED_BY_ID": N}}`` → ``{"result": true}``.
  crm-apis.md documents no task or activity method, so none is called: the responsible change is the
  manager's notice there (a ``callback_task_skipped`` line says so once).
"""

from __future__ import annotations

from typing import Any

import structlog

from callguard.crm.amocrm_api import AmoApi
from callguard.crm.bitrix24 import Bitrix24
from callguard.errors import CrmError

log = structlog.get_logger("callguard.crm.callbacks")
AMO_TASK_CALL = 1  # built-in task type "Call" (§1.7)


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

    async def close(self) -> None:
        await self.api.close()


class Bitrix24Callbacks:
    name = "bitrix24"

    def __init__(self, client: Bitrix24) -> None:
        self.client = client
        self._told = False

    async def set_responsible(self, lead_ref: str, user_id: int) -> None:
        reply = await self.client.call("crm.lead.update", {"id": int(lead_ref), "fields": {"ASSIGNED_BY_ID": user_id}})
        if reply.get("result") is not True:
            raise CrmError("bitrix24 crm.lead.update did not answer true")

    async def create_task(self, lead_ref: str, user_id: int, due: float, text: str) -> str:
        if not self._told:
            self._told = True
            log.info("callback_task_skipped", crm="bitrix24", why="no task method in crm-apis.md; responsible set")
        return ""

    async def close(self) -> None:
        await self.client.close()
