"""The FastAGI server: accepts, bounds concurrency, asks the screener for the variables and writes them.

The walk of one call (DESIGN.md): Asterisk's ``AGI(agi://…/screen)`` → ``AgiConnection`` (bounded header,
agi/connection.py) → ``AgiServer.converse`` → ``handler.screen(ScreenRequest)`` (screening/screener.py:
phone → store.numbers → rules) → one ``SET VARIABLE`` per variable, verdict first (agi/wire.py keeps each
one line within res_agi's buffer) → ``handler.record``. The server owns the deadline: a fault of ours or
a decision past ``agi.deadline_ms`` is answered ``clean`` (``handler.fail_open``), so a legitimate caller
is never blocked by callguard's own fault. The screener knows nothing of this wire.

Commands go one at a time, each waiting for its reply: res_agi.c reads them through a stdio FILE but
waits on the socket with poll(), so pipelined commands can sit unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import structlog

from callguard import metrics
from callguard.agi import rxtime
from callguard.agi.connection import AgiConnection, AgiSession
from callguard.agi.wire import commands_for
from callguard.config import AgiConfig
from callguard.errors import AgiProtocolError, BindError
from callguard.screening.screener import Screen, ScreenRequest

log = structlog.get_logger("callguard.agi.server")

BACKLOG = 512
SCRIPT = "screen"  # the dialplan contract: AGI(agi://127.0.0.1:4573/screen)


class ScreenHandler(Protocol):
    """What the server asks (``ScreenService``); synchronous: the store read is a bounded sqlite3 call."""

    def screen(self, request: ScreenRequest) -> Screen: ...

    def fail_open(self, request: ScreenRequest, fault: str) -> Screen: ...

    def record(self, screen: Screen, delivered: bool, hung_up: bool) -> None: ...


class AgiServer:
    """The listening part: accepts, bounds concurrency, converses, drains on stop."""

    name = "agi"
    script = SCRIPT

    def __init__(self, cfg: AgiConfig, handler: ScreenHandler) -> None:
        self.cfg = cfg
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._conns: set[AgiConnection] = set()
        self._idle = asyncio.Event()
        self._listen_fds: list[int] = []
        self.timestamps = False  # SO_TIMESTAMPNS on the listening socket (rxtime)
        self.port: int | None = None

    @property
    def active(self) -> int:
        return len(self._conns)

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: AgiConnection(self, loop), self.cfg.host, self.cfg.port, reuse_address=True,
                backlog=BACKLOG,
            )
        except OSError as e:  # in use, not permitted, no such address (socket.gaierror too)
            raise BindError("agi", self.cfg.host, self.cfg.port, e) from e
        self.port = self._server.sockets[0].getsockname()[1]
        self.timestamps = all(rxtime.enable(s) for s in self._server.sockets)
        self._listen_fds = [s.fileno() for s in self._server.sockets]
        metrics.AGI_ACTIVE.set_function(lambda: self.active)  # read at scrape time, not per call
        log.info("agi_listening", host=self.cfg.host, port=self.port, deadline_ms=self.cfg.deadline_ms)

    # --- one conversation ----------------------------------------------------------------------------

    async def converse(self, session: AgiSession) -> None:
        """Ask the handler, write its variables, let it record the screen. Nothing before the writes
        awaits, so nothing can be cut short; a decision that took past the deadline (a stalled disk) is
        not trusted: clean, as a cut-short one would have been."""
        req = session.request
        request = ScreenRequest(req.callerid, req.calleridname, req.did, req.uniqueid, session.arrived)
        handler = self.handler
        fault = ""
        try:
            screen = handler.screen(request)
        except Exception as e:  # any fault of ours answers clean: never hold or block a caller
            fault = f"internal_error:{type(e).__name__}"
            log.exception("screen_failed", uniqueid=req.uniqueid, caller=req.callerid[:40])
        else:
            if (time.perf_counter() - session.started) * 1000 > self.cfg.deadline_ms:
                fault = "deadline"
                metrics.AGI_TIMEOUTS.inc()
        if fault:
            screen = handler.fail_open(request, fault)
        delivered = await self._set_variables(session, screen.variables)
        handler.record(screen, delivered=delivered, hung_up=session.hung_up)

    async def _set_variables(self, session: AgiSession, variables: list[tuple[str, str]]) -> bool:
        """The verdict's ``SET VARIABLE``, then the contact's in one ARRAY() (``wire.commands_for``), in
        order; False when Asterisk did not take one (the dialplan then fails open on what it has: the
        verdict goes first)."""
        try:
            for command in commands_for(variables):
                reply = await session.send_command(command)
                if not reply.ok:
                    log.warning("agi_command_rejected", uniqueid=session.request.uniqueid,
                                command=command.split(" ", 3)[2], reply=reply.text)
                    return False
        except (AgiProtocolError, TimeoutError, ConnectionError, OSError) as e:
            metrics.AGI_ERRORS.labels(kind="reply").inc()
            log.warning("agi_reply_failed", uniqueid=session.request.uniqueid, error=str(e) or type(e).__name__)
            return False
        return True

    # --- connections ---------------------------------------------------------------------------------

    def held_fds(self) -> list[int]:
        """The fds of the connections open now; called from the stall watchdog's thread (a set copied
        under the GIL in one step)."""
        return [c.fd for c in list(self._conns) if c.fd >= 0]

    def listen_fds(self) -> list[int]:
        """The listening sockets, for the stall watchdog to shut (calls queued on them then fail open)."""
        return list(self._listen_fds) if self._server is not None else []

    def opened(self, conn: AgiConnection) -> bool:
        if len(self._conns) >= self.cfg.max_connections:
            metrics.AGI_ERRORS.labels(kind="overload").inc()
            log.warning("agi_overload", open=len(self._conns), limit=self.cfg.max_connections)
            return False
        self._conns.add(conn)
        self._idle.clear()
        return True

    def closed(self, conn: AgiConnection) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            if not self._conns:
                self._idle.set()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()  # stop accepting; in-flight requests go on
        open_at_stop = len(self._conns)
        if open_at_stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.cfg.drain_seconds)
            still = list(self._conns)
            for conn in still:
                conn.abort()
            if still:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), 1.0)
            log.info("agi_drained", finished=open_at_stop - len(still), cancelled=len(still))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
