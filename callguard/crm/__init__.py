"""The CRM adapters, ``amocrm`` and ``bitrix24``, behind one ``CRM`` protocol (callguard.crm.base).

The rest of callguard sees only ``CrmContact`` and plain ids: CRM-specific shapes, webhook bodies
included, stay in the adapters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callguard.crm.base import CRM, Changes, CrmContact, LeadRef, Page, WebhookRejected, unique_phones

if TYPE_CHECKING:
    from callguard.config import Config
    from callguard.store import Store

__all__ = ["CRM", "Changes", "CrmContact", "LeadRef", "Page", "WebhookRejected", "build_crm", "unique_phones"]


def build_crm(cfg: Config, store: Store | None = None) -> CRM | None:
    """The configured adapter, or None for ``kind = "none"``. ``store`` keeps rotated OAuth tokens."""
    if cfg.crm.kind == "amocrm":
        from callguard.crm.amocrm import AmoCrm

        return AmoCrm(cfg, store)
    if cfg.crm.kind == "bitrix24":
        from callguard.crm.bitrix24 import Bitrix24

        return Bitrix24(cfg)
    return None
