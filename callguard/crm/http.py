"""The one ``request()`` every CRM call goes through (STYLE.md rule 5).

Rate limit (a token bucket shared by every caller in the process for one CRM account), retries of what
can succeed later (429, 503, other 5xx, network errors, timeouts) with exponential backoff + jitter that
honours ``Retry-After``, a hard stop with an alert log on 401/403, request id and latency in logs. URLs
are never logged whole: a Bitrix24 inbound-webhook URL carries its secret in the path, so callers pass a
``label`` (the method name) that is logged instead. Wire codes map to error classes in ``classify``.

``retry_after`` and ``error_for_status`` are public: any HTTP client in callguard (the webhook lead
sink) reads Retry-After and maps a status to an error class the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from callguard import backoff, metrics
from callguard.errors import (
    CrmAuthError,
    CrmError,
    CrmRejectedError,
    CrmUnavailableError,
    RateLimitedError,
)

log = structlog.get_logger("callguard.crm")


class TokenBucket:
    """Reservation token bucket: each caller takes a slot and sleeps until it is due, so concurrent
    callers never exceed ``rate`` on average nor ``burst`` at once. ``rate <= 0`` disables it."""

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._last = time.monotonic()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1.0
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)

    def penalise(self, seconds: float) -> None:
        """The server said slow down: nobody in the process sends for ``seconds``."""
        if self.rate > 0:
            self._tokens = min(self._tokens, -seconds * self.rate)


_BUCKETS: dict[tuple[str, str], TokenBucket] = {}


def shared_bucket(key: tuple[str, str], rate: float, burst: float) -> TokenBucket:
    """One bucket per CRM account per process: the CRM counts all our requests together."""
    bucket = _BUCKETS.get(key)
    if bucket is None or bucket.rate != rate or bucket.burst != max(1.0, burst):
        bucket = _BUCKETS[key] = TokenBucket(rate, burst)
    return bucket


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any  # parsed JSON, or None (amoCRM 204 has no body)
    request_id: str
    decoded: Any = None  # what ``request(decode=…)`` made of a 200 body, in the worker process


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``Retry-After`` header in delta-seconds form; None when absent or not a number."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare from these CRMs; fall back to our backoff


def _error_code(body: Any) -> tuple[str, str]:
    """(code, description) from amoCRM problem+json or a Bitrix24 ``{"error": …}`` body."""
    if isinstance(body, dict):
        code = str(body.get("error") or body.get("title") or "")
        detail = str(body.get("error_description") or body.get("detail") or "")
        if "validation-errors" in body:
            detail = f"{detail}: {json.dumps(body['validation-errors'], ensure_ascii=False)[:300]}"
        return code, detail
    return "", str(body)[:200] if body else ""


_AUTH_CODES = ("expired_token", "INVALID_CREDENTIALS", "NO_AUTH_FOUND", "ACCESS_DENIED", "PORTAL_DELETED",
               "insufficient_scope", "OVERLOAD_LIMIT")


def error_for_status(status: int, text: str, headers: Mapping[str, str] | None = None,
                     code: str = "") -> CrmError | None:
    """An HTTP answer's error class; None for 2xx. 429 (or a rate-limit ``code``) is ``RateLimitedError``
    carrying Retry-After, 401/403 (or an auth ``code``) ``CrmAuthError``, 408/5xx ``CrmUnavailableError``
    (may succeed later), any other status ``CrmRejectedError`` (will not). ``text`` is the message."""
    if 200 <= status < 300:
        return None
    if status == 429 or code == "QUERY_LIMIT_EXCEEDED":
        # amoCRM 429 = over 7 rps; Bitrix24 503 QUERY_LIMIT_EXCEEDED = leaky bucket full,
        # 429 OPERATION_TIME_LIMIT = method blocked for up to 10 min (crm-apis.md 2.2).
        return RateLimitedError(text, retry_after(headers))
    if status in (401, 403) or code in _AUTH_CODES:
        return CrmAuthError(text, status, code or None)
    if status >= 500 or status == 408:
        return CrmUnavailableError(text)
    return CrmRejectedError(text, status, code or None)


def classify(crm: str, status: int, body: Any, headers: Mapping[str, str] | None = None) -> CrmError | None:
    """The one map from a CRM's wire answers to callguard errors; None means success."""
    if 200 <= status < 300:
        return None
    code, detail = _error_code(body)
    return error_for_status(status, f"{crm} answered {status} {code} {detail}".strip(), headers, code)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, hint: float | None) -> float:
        """Before retry ``attempt`` (0 = the first): the shared back-off, or the server's Retry-After
        when longer (bounded to 4 × cap)."""
        wait = backoff.delay(attempt, self.base, self.cap)
        return max(wait, min(hint, self.cap * 4)) if hint is not None else wait


AuthHook = Callable[[], Awaitable[bool]]
Decoder = Callable[[bytes], Awaitable[tuple[Any, Any]]]


class HttpClient:
    """A CRM's HTTP session: ``request()`` is the only way out."""

    def __init__(
        self,
        crm: str,
        bucket: TokenBucket,
        timeout: float,
        policy: RetryPolicy,
        headers: Callable[[], dict[str, str]] | None = None,
        on_unauthorized: AuthHook | None = None,
    ) -> None:
        self.crm = crm
        self.bucket = bucket
        self.timeout = timeout
        self.policy = policy
        self._headers = headers or (lambda: {})
        self._on_unauthorized = on_unauthorized
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=8),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, url: str, label: str, *, params: Any = None, json_body: Any = None,
        idempotent: bool = True, authed: bool = True, decode: Decoder | None = None,
    ) -> Response:
        """Send with rate limit and retries; raise a ``CrmError`` subclass when it cannot succeed.

        ``idempotent=False`` (creating a lead or note): a 5xx or network error may come *after* the CRM
        made the change, and neither CRM has an idempotency key, so it is not retried here; the caller
        looks for its marker before trying again. Rate-limit answers are always retried: the CRM
        refused those before doing anything.

        ``decode``: for a 200 answer, ``await decode(raw) -> (decoded, body)`` replaces the JSON decode
        here (contact pages in a sync, decoded in the ``crm.offload`` worker)."""
        refreshed = False
        attempt = 0
        while True:
            try:
                return await self._once(method, url, label, params, json_body, authed, decode)
            except CrmAuthError as e:
                if e.status == 401 and authed and not refreshed and self._on_unauthorized is not None:
                    refreshed = True
                    if await self._on_unauthorized():
                        continue
                log.error("crm_auth_failed", crm=self.crm, call=label, status=e.status, code=e.code,
                          alert=True, hint="check the CRM token / webhook URL and the integration's rights")
                raise
            except (RateLimitedError, CrmUnavailableError) as e:
                unsafe = not idempotent and isinstance(e, CrmUnavailableError)
                if attempt >= self.policy.max_retries or unsafe:
                    log.warning("crm_gave_up", crm=self.crm, call=label, attempts=attempt + 1, error=str(e)[:200])
                    raise
                hint = e.retry_after if isinstance(e, RateLimitedError) else None
                delay = self.policy.delay(attempt, hint)
                if isinstance(e, RateLimitedError):
                    self.bucket.penalise(delay)
                log.warning("crm_retry", crm=self.crm, call=label, attempt=attempt + 1,
                            delay_s=round(delay, 3), error=str(e)[:200])
                attempt += 1
                await asyncio.sleep(delay)

    async def _once(
        self, method: str, url: str, label: str, params: Any, json_body: Any, authed: bool,
        decode: Decoder | None = None,
    ) -> Response:
        await self.bucket.acquire()
        request_id = uuid.uuid4().hex[:12]
        headers = {"X-Request-Id": request_id, **(self._headers() if authed else {})}
        started = time.perf_counter()
        try:
            async with self._get_session().request(
                method, url, params=params, json=json_body, headers=headers
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
                request_id = resp.headers.get("X-Request-Id", request_id)
        except (aiohttp.ClientError, TimeoutError) as e:
            metrics.CRM_REQUESTS.labels(self.crm, "network").inc()
            log.warning("crm_network_error", crm=self.crm, call=label, request_id=request_id,
                        error=type(e).__name__, ms=round((time.perf_counter() - started) * 1000, 1))
            raise CrmUnavailableError(f"{self.crm} {label}: {type(e).__name__} {e}".strip()) from e
        ms = round((time.perf_counter() - started) * 1000, 1)
        metrics.CRM_REQUESTS.labels(self.crm, f"{status // 100}xx").inc()
        decoded = None
        if decode is not None and status == 200 and raw:
            decoded, body = await decode(raw)
        else:
            body = parse_body(raw)
        error = classify(self.crm, status, body, resp_headers)
        if error is not None:
            log.info("crm_request", crm=self.crm, call=label, status=status, ms=ms, request_id=request_id)
            raise error
        log.debug("crm_request", crm=self.crm, call=label, status=status, ms=ms, request_id=request_id)
        return Response(status, body, request_id, decoded)


def parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        # orjson: a 250-contact amoCRM page is ~200 KB; json.loads takes ~5 ms of loop time on it.
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # A 429 body from amoCRM may not be JSON (crm-apis.md 1.2): keep the text for the message.
        return raw[:200].decode("utf-8", "replace")
