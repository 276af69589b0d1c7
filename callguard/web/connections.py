"""Bounds on the HTTP server's connections: a first-request (header) timeout and a connection cap.

aiohttp (3.14 here) closes a connection that stays idle for ``keepalive_timeout``, counted from the
connect and from the end of each response, and bounds line and header sizes itself; it has neither a
separate deadline for the first request nor a cap on open connections, so 600 silent clients pinned 600
descriptors. ``BoundedFactory`` is the protocol factory given to ``loop.create_server`` in
place of aiohttp's ``Server`` (which it calls for each accepted connection). It only uses aiohttp's
public surface: ``Server.connections``, ``Server.request_handler``, ``BaseRequest.protocol`` and
``RequestHandler.force_close()``.

- Every new connection gets a timer; its first request (seen when aiohttp dispatches it) cancels the
  timer, else the connection is closed at ``header_timeout`` (``reason=header_timeout``).
- At the cap, the oldest connection that has not yet sent a whole request is closed to make room
  (``evicted``): a flood of silent clients cannot keep ``/healthz`` from a monitor. When every open
  connection has made a request, the new one gets a bare 503 and is closed at once (``refused``).
Each drop is counted (``callguard_web_connections_dropped_total{reason}``) and logged at most once a
minute (``web_connections_dropped`` with the counts since the last line).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import structlog
from aiohttp import web

from callguard import metrics
from callguard.throttle import LogThrottle

log = structlog.get_logger("callguard.web.server")

REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Refused(asyncio.Protocol):
    """Answers a connection past the cap with a 503 and closes it; holds nothing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()


class BoundedFactory:
    def __init__(self, server: web.Server, max_connections: int, header_timeout: float) -> None:
        self.server = server
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._waiting: OrderedDict[Any, asyncio.TimerHandle] = OrderedDict()  # no request yet, oldest first
        self._inner = server.request_handler
        server.request_handler = self._handle  # RequestHandlers read it when they are created
        self._throttle = LogThrottle(60.0)

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) >= self.max_connections and not self._evict_oldest_waiting():
            self._dropped("refused")
            return _Refused()
        handler = self.server()
        loop = asyncio.get_running_loop()
        self._waiting[handler] = loop.call_later(self.header_timeout, self._expired, handler)
        return handler

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        timer = self._waiting.pop(request.protocol, None)
        if timer is not None:
            timer.cancel()
        return await self._inner(request)

    def _expired(self, handler: Any) -> None:
        self._waiting.pop(handler, None)
        if handler.transport is not None:  # else the client has gone already
            handler.force_close()
            self._dropped("header_timeout")

    def _evict_oldest_waiting(self) -> bool:
        while self._waiting:
            handler, timer = self._waiting.popitem(last=False)
            timer.cancel()
            if handler.transport is not None:
                handler.force_close()
                self._dropped("evicted")
                return True
        return False

    def _dropped(self, reason: str) -> None:
        metrics.WEB_DROPPED.labels(reason=reason).inc()
        counts = self._throttle.note(reason)
        if counts is not None:
            log.warning("web_connections_dropped", **counts, open=len(self.server.connections),
                        limit=self.max_connections)

    def close(self) -> None:
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
