"""CRM webhooks: a contact changed in the CRM → its cache rows refreshed within seconds; a lead changed →
the call-back loop re-reads it (a status or responsible changed by a person closes its call-back).

Mounted by ``web.server`` through ``add_routes``; exempt from the API bearer token because each CRM
authenticates its own way, checked by its adapter with the body parsing (``parse_webhook`` in
callguard.crm.amocrm and callguard.crm.bitrix24):
- amoCRM ``POST /webhooks/amocrm/<secret>`` (crm-apis.md §1.8), the secret checked before the body is read;
- Bitrix24 ``POST /webhooks/bitrix24`` (§2.7).
The payload is only a hint: the contact ids go to the sync (``hint``), which re-reads them through the API
(a forged "spam" value in a body changes nothing); the lead ids (amoCRM ``leads[update|status|responsible|
delete][N][id]``, Bitrix24 ``ONCRMLEADUPDATE``/``ONCRMLEADDELETE``) go to the call-back loop's
``lead_hint``, which re-reads the lead on its CRM worker. We answer at once, as both CRMs want. Anything
unauthenticated, malformed or oversized is refused (401/400/413), logged, counted, and never touches the
cache or the loop. Lead ids with no call-back loop running are answered 200 and counted
(``leads_ignored``): one CRM webhook URL often carries contacts and leads, and a CRM that sees errors
retries and may switch the hook off.

``web.server`` passes ``sync.hint`` and the loop's ``lead_hint`` here (app.py hands both to the web part).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import parse_qs

import structlog
from aiohttp import web

from callguard import metrics
from callguard.config import CrmConfig
from callguard.crm import WebhookRejected, amocrm, bitrix24

log = structlog.get_logger("callguard.web.webhooks")

MAX_BODY = 64 * 1024  # a real delivery is a few KB; mass updates come as many deliveries
MAX_FIELDS = 5000

# The sync's ``hint(ids) -> how many were new to its queue``; None when no sync runs. The call-back loop's
# ``lead_hint(lead ids) -> how many reads it queued`` has the same shape.
Hint = Callable[[Sequence[str]], int]


async def read_form(request: web.Request) -> dict[str, list[str]]:
    """The body as a form, bounded: 413 past ``MAX_BODY``, 400 for anything that is not a form."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise WebhookRejected(413, "oversized")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise WebhookRejected(413, "oversized")
    try:
        text = raw.decode("utf-8")
        form = parse_qs(text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS)
    except ValueError as e:  # UnicodeDecodeError too
        raise WebhookRejected(400, "malformed") from e
    return form


class Webhooks:
    def __init__(self, cfg: CrmConfig, hint: Hint | None, leads: Hint | None = None) -> None:
        self.cfg = cfg
        self.hint = hint
        self.leads = leads

    def _reject(self, request: web.Request, crm: str, e: WebhookRejected) -> web.Response:
        metrics.WEBHOOKS.labels(crm, e.reason).inc()
        log.warning("webhook_rejected", crm=crm, reason=e.reason, status=e.status, peer=request.remote)
        return web.json_response({"error": e.reason}, status=e.status)

    def _queue(self, crm: str, ids: list[str], leads: Sequence[str] = ()) -> web.Response:
        if self.cfg.kind != crm or (ids and self.hint is None):
            raise WebhookRejected(503, "sync_not_running")
        fresh = self.hint(ids) if ids and self.hint is not None else 0
        reads = self.leads(leads) if leads and self.leads is not None else 0
        if leads and self.leads is None:
            metrics.WEBHOOKS.labels(crm, "leads_ignored").inc()
        metrics.WEBHOOKS.labels(crm, "ok").inc()
        log.info("webhook_accepted", crm=crm, contacts=len(ids), queued=fresh, leads=len(leads), lead_reads=reads)
        return web.json_response({"queued": len(ids), "leads": len(leads)})

    async def amocrm(self, request: web.Request) -> web.Response:
        try:
            amocrm.check_webhook_token(self.cfg.amocrm, request.match_info.get("token", ""))
            ids, leads = amocrm.parse_hook(self.cfg.amocrm, await read_form(request))
            return self._queue("amocrm", ids, leads)
        except WebhookRejected as e:
            return self._reject(request, "amocrm", e)

    async def bitrix24(self, request: web.Request) -> web.Response:
        try:
            kind, eid = bitrix24.parse_hook(self.cfg.bitrix24, await read_form(request))
            return self._queue("bitrix24", [eid] if kind == "contact" else [], [eid] if kind == "lead" else [])
        except WebhookRejected as e:
            return self._reject(request, "bitrix24", e)


def add_routes(app: web.Application, cfg: CrmConfig, hint: Hint | None, leads: Hint | None = None) -> None:
    """``hint``: the sync's (contact ids); ``leads``: the call-back loop's (lead ids); None when not running."""
    hooks = Webhooks(cfg, hint, leads)
    app.router.add_post("/webhooks/amocrm/{token}", hooks.amocrm)
    app.router.add_post("/webhooks/bitrix24", hooks.bitrix24)
