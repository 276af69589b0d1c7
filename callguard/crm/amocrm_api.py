"""amoCRM / Kommo API v4: the account's HTTP session and its OAuth tokens (crm-apis.md §1.1–1.2).

``AmoApi`` is what the contact side (callguard.crm.amocrm) and the lead side (callguard.crm.amocrm_leads)
are both given: public ``get`` / ``get_response`` / ``post`` over the one ``request()`` (callguard.crm.http),
with the bearer token, and one OAuth refresh after a 401.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from callguard.crm.http import Decoder, HttpClient, Response, RetryPolicy, shared_bucket
from callguard.errors import CrmError

if TYPE_CHECKING:
    from callguard.config import Config
    from callguard.store import Store

log = structlog.get_logger("callguard.crm.amocrm")

KIND = "amocrm"
# Pace a little under the configured ceiling: requests sent exactly 1/7 s apart can arrive closer.
PACING = 0.95


class AmoApi:
    def __init__(self, cfg: Config, store: Store | None = None) -> None:
        a = cfg.crm.amocrm
        if not a.base_url:
            raise CrmError("crm.amocrm.base_url is not set (https://<subdomain>.amocrm.ru)")
        self.cfg = a
        self.base = a.base_url.rstrip("/")
        self.store = store
        self._token = a.token
        self._refresh_token = a.refresh_token
        self._tokens_loaded = store is None
        policy = RetryPolicy(cfg.crm.max_retries, cfg.crm.retry_base)
        bucket = shared_bucket((KIND, self.base), a.rate_rps * PACING, 1.0)
        oauth = all((a.client_id, a.client_secret, a.redirect_uri)) and bool(a.refresh_token or store)
        self.http = HttpClient(KIND, bucket, cfg.crm.timeout, policy, self._auth_headers,
                               self._refresh if oauth else None)

    async def get(self, path: str, label: str, params: Any = None) -> Any:
        """GET ``path`` (``/api/v4/…``); the parsed body, None for a 204."""
        return (await self.get_response(path, label, params)).body

    async def get_response(self, path: str, label: str, params: Any = None,
                           decode: Decoder | None = None) -> Response:
        await self._load_tokens()
        return await self.http.request("GET", self.base + path, label, params=params, decode=decode)

    async def post(self, path: str, label: str, body: Any) -> Any:
        """POST a create: never retried blind (no idempotency key, §3); the caller looks for its marker."""
        await self._load_tokens()
        return (await self.http.request("POST", self.base + path, label, json_body=body, idempotent=False)).body

    async def patch(self, path: str, label: str, body: Any) -> Any:
        """PATCH an update (setting a field to a value is idempotent, so it is retried like a read)."""
        await self._load_tokens()
        return (await self.http.request("PATCH", self.base + path, label, json_body=body)).body

    async def close(self) -> None:
        await self.http.close()

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def _load_tokens(self) -> None:
        """A rotated OAuth pair in the store is newer than the one in the config file."""
        if self._tokens_loaded or self.store is None:
            return
        self._tokens_loaded = True
        saved = await self.store.sync_state.get_tokens(KIND)
        if saved is not None:
            self._token, self._refresh_token = saved

    async def _refresh(self) -> bool:
        """One OAuth refresh after a 401 (the official SDK does the same, §1.1); the new refresh token
        replaces the old one for good, so it is stored before use."""
        if not self._refresh_token:
            return False
        body = {"client_id": self.cfg.client_id, "client_secret": self.cfg.client_secret,
                "grant_type": "refresh_token", "refresh_token": self._refresh_token,
                "redirect_uri": self.cfg.redirect_uri}
        try:
            # The token endpoint takes no bearer (authed=False) and is not refreshed on 401 itself.
            reply = (await self.http.request("POST", self.base + "/oauth2/access_token", "oauth_refresh",
                                             json_body=body, authed=False)).body
        except CrmError as e:
            log.error("crm_oauth_refresh_failed", crm=KIND, error=str(e)[:200], alert=True)
            return False
        if not isinstance(reply, dict) or not reply.get("access_token") or not reply.get("refresh_token"):
            log.error("crm_oauth_refresh_failed", crm=KIND, error="reply without tokens", alert=True)
            return False
        self._token, self._refresh_token = str(reply["access_token"]), str(reply["refresh_token"])
        if self.store is not None:
            await self.store.sync_state.save_tokens(KIND, self._token, self._refresh_token)
        log.info("crm_oauth_refreshed", crm=KIND)
        return True
