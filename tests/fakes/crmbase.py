"""What the two CRM fakes share: a loopback aiohttp server, strictness bookkeeping, fault injection.

Strict means loud: a request the real API would not understand (unknown parameter or body field, wrong
method, unknown path) is answered with the CRM's own error shape *and* recorded in ``errors``; tests
assert ``errors == []`` so a client bug cannot hide behind a lenient fake.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from aiohttp import web


class FakeServer:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.violations = 0  # requests over the rate limit (answered 429/503)
        self.calls: collections.Counter[str] = collections.Counter()
        self._inject: collections.deque[tuple[str, Any]] = collections.deque()
        self._after: list[tuple[str, int]] = []
        self._slow: list[tuple[str, float]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application(client_max_size=4 * 1024 * 1024)

    # --- fault injection ----------------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """The next ``times`` requests get ``status`` (the CRM's own error body), not served."""
        for _ in range(times):
            self._inject.append(("status", (status, retry_after)))

    def stall_next(self, seconds: float, times: int = 1) -> None:
        """The next ``times`` requests hang ``seconds`` before being served (client timeouts)."""
        for _ in range(times):
            self._inject.append(("stall", seconds))

    def fail_after_commit(self, status: int = 504, times: int = 1, match: str = "") -> None:
        """The next ``times`` requests (whose key contains ``match``: "POST /api/v4/leads", "crm.lead.add")
        are served (state changes!) but answered ``status``: the lost reply after the CRM accepted, which
        makes a naive retry create a duplicate."""
        for _ in range(times):
            self._after.append((match, status))

    def slow_reply(self, match: str, seconds: float) -> None:
        """From now on, requests whose key contains ``match`` are served (state changed) and answered only
        ``seconds`` later: a wider window between the CRM's change and the client seeing it (kill tests)."""
        self._slow.append((match, seconds))

    async def pause_reply(self, key: str) -> None:
        for match, seconds in self._slow:
            if match in key:
                await asyncio.sleep(seconds)
                return

    def take_after(self, key: str) -> int | None:
        for i, (match, status) in enumerate(self._after):
            if match in key:
                del self._after[i]
                return status
        return None

    def strict_error(self, message: str) -> None:
        self.errors.append(message)

    async def take_injection(self) -> tuple[str, Any] | None:
        if not self._inject:
            return None
        kind, arg = self._inject.popleft()
        if kind == "stall":
            await asyncio.sleep(arg)
            return None
        return kind, arg

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class SlidingWindow:
    """amoCRM style: at most ``limit`` requests in any 1-second window."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self._times: collections.deque[float] = collections.deque()

    def admit(self) -> bool:
        if not self.limit:
            return True
        now = time.monotonic()
        while self._times and self._times[0] <= now - 1.0:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


class LeakyBucket:
    """Bitrix24 style (limits.md): each call adds 1, the counter drains ``rate``/s; over ``burst`` →
    503 QUERY_LIMIT_EXCEEDED."""

    def __init__(self, rate: float | None, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = 0.0
        self._last = time.monotonic()

    def admit(self) -> bool:
        if not self.rate:
            return True
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self._last) * self.rate)
        self._last = now
        if self.level + 1 > self.burst:
            return False
        self.level += 1
        return True
