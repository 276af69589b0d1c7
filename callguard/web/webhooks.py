"""CRM webhooks: a contact changed in the CRM → its cache rows refreshed within seconds.

Mounted by ``web.py`` through ``add_routes``; exempt from the API bearer token because each CRM
authenticates its own way:
- amoCRM ``POST /webhooks/amocrm/<secret>``: form-encoded v2 ``contacts[add|update|delete|restore][N][…]``
  (crm-apis.md §1.8). No signature exists (unverified that none is sent), so a secret in the URL plus
  ``account[id]`` / ``account[subdomain]`` checks.
- Bitrix24 ``POST /webhooks/bitrix24``: form-encoded ``event``, ``data[FIELDS][ID]``,
  ``auth[application_token]`` (§2.7), compared in constant time.
The payload is only a hint: the contact ids are queued to the sync, which re-reads them through the API
(a forged "spam" value in a body changes nothing). We answer at once, as both CRMs want. Anything
unauthenticated, malformed or oversized is refused (401/400/413), logged, counted, and never touches the
cache.
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import structlog
from aiohttp import web

from callguard import metrics

if TYPE_CHECKING:
    from callguard.app import Runtime

log = structlog.get_logger("callguard.web.webhooks")

MAX_BODY = 64 * 1024  # a real delivery is a few KB; mass updates come as many deliveries
MAX_FIELDS = 5000
_AMO_ID = re.compile(r"contacts\[(add|update|delete|restore)\]\[\d+\]\[id\]")
B24_EVENTS = frozenset({"ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE"})


class Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


async def read_form(request: web.Request) -> dict[str, list[str]]:
    """The body as a form, bounded: 413 past ``MAX_BODY``, 400 for anything that is not a form."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Rejected(413, "oversized")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise Rejected(413, "oversized")
    try:
        text = raw.decode("utf-8")
        form = parse_qs(text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS)
    except ValueError as e:  # UnicodeDecodeError too
        raise Rejected(400, "malformed") from e
    return form


def _one(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key) or [""]
    return values[0]


class Webhooks:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def _reject(self, request: web.Request, crm: str, e: Rejected) -> web.Response:
        metrics.WEBHOOKS.labels(crm, e.reason).inc()
        log.warning("webhook_rejected", crm=crm, reason=e.reason, status=e.status, peer=request.remote)
        return web.json_response({"error": e.reason}, status=e.status)

    def _queue(self, crm: str, ids: list[str]) -> web.Response:
        sync = self.rt.parts.get("sync")
        if sync is None or self.rt.cfg.crm.kind != crm:
            raise Rejected(503, "sync_not_running")
        fresh = sync.hint(ids)
        metrics.WEBHOOKS.labels(crm, "ok").inc()
        log.info("webhook_accepted", crm=crm, contacts=len(ids), queued=fresh)
        return web.json_response({"queued": len(ids)})

    async def amocrm(self, request: web.Request) -> web.Response:
        cfg = self.rt.cfg.crm.amocrm
        try:
            if not _same(request.match_info.get("token", ""), cfg.webhook_secret):
                raise Rejected(401, "bad_token")
            form = await read_form(request)
            self._check_account(form)
            ids = [v for k, vals in form.items() if _AMO_ID.fullmatch(k) for v in vals]
            if not ids or not all(v.isdigit() and len(v) < 20 for v in ids):
                raise Rejected(400, "no_contacts")
            return self._queue("amocrm", ids)
        except Rejected as e:
            return self._reject(request, "amocrm", e)

    def _check_account(self, form: dict[str, list[str]]) -> None:
        cfg = self.rt.cfg.crm.amocrm
        if cfg.account_id and _one(form, "account[id]") != str(cfg.account_id):
            raise Rejected(401, "wrong_account")
        host = urlsplit(cfg.base_url).hostname or ""
        subdomain = _one(form, "account[subdomain]")
        # Only for real amoCRM/Kommo hosts: ``<subdomain>.amocrm.ru`` must match what the hook says.
        if host.endswith((".amocrm.ru", ".amocrm.com", ".kommo.com")) and subdomain != host.split(".")[0]:
            raise Rejected(401, "wrong_account")

    async def bitrix24(self, request: web.Request) -> web.Response:
        cfg = self.rt.cfg.crm.bitrix24
        try:
            form = await read_form(request)
            if not _same(_one(form, "auth[application_token]"), cfg.application_token):
                raise Rejected(401, "bad_token")
            event = _one(form, "event").upper()
            cid = _one(form, "data[FIELDS][ID]")
            if event not in B24_EVENTS:
                raise Rejected(400, "unknown_event")
            if not cid.isdigit() or len(cid) > 19:
                raise Rejected(400, "no_contacts")
            return self._queue("bitrix24", [cid])
        except Rejected as e:
            return self._reject(request, "bitrix24", e)


def add_routes(app: web.Application, rt: Runtime) -> None:
    hooks = Webhooks(rt)
    app.router.add_post("/webhooks/amocrm/{token}", hooks.amocrm)
    app.router.add_post("/webhooks/bitrix24", hooks.bitrix24)


