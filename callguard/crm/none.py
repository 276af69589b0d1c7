"""``crm.kind = "none"``: local allow/block lists only. A null adapter so callers need no special case:
nothing to list, nothing found, and leads refused with a clear, permanent error."""

from __future__ import annotations

from collections.abc import Sequence

from callguard.crm import Changes, CrmContact, LeadRef, Page
from callguard.errors import CrmRejectedError
from callguard.leads.model import MissedCall


class NoneCrm:
    kind = "none"
    stable_paging = True

    def cursor_at(self, ts: float) -> str:
        return ""

    async def list_page(self, token: str | None) -> Page:
        return Page([], None)

    async def list_changed(self, cursor: str) -> Changes:
        return Changes([], [], cursor, False)

    async def get_contacts(self, contact_ids: Sequence[str]) -> list[CrmContact]:
        return []

    async def find_by_phone(self, e164: str) -> list[CrmContact]:
        return []

    async def create_lead(self, call: MissedCall, contact: CrmContact | None) -> LeadRef:
        raise CrmRejectedError("no CRM configured (crm.kind = 'none'): use outbox.sink = 'log' or 'webhook'", 400)

    async def add_call_note(self, lead_id: str, call: MissedCall) -> None:
        raise CrmRejectedError("no CRM configured (crm.kind = 'none')", 400)

    async def find_lead(self, call: MissedCall) -> LeadRef | None:
        return None

    async def find_call_note(self, lead_id: str, call: MissedCall) -> bool:
        return False

    async def verify(self) -> str:
        return "no CRM configured: local allow/block lists only"

    async def close(self) -> None:
        return None
