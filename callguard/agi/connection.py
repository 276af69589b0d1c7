"""One FastAGI connection, bounded: the header under a size limit and a timer, EOF = end, reply lines
read with a deadline. The server (``agi/server.py``) decides what to say on it.

Why not panoramisk's ``Application.handler``: it loops on ``reader.read()`` until it sees ``\\n\\n``, so
a client that sends part of a header and closes makes it spin forever on EOF and freeze the loop
(reproduced in tests/test_agi_server.py); its ``Request.send_command`` reads replies with no timeout and
takes an async ``HANGUP`` for the reply. ``AgiConnection`` is a plain ``asyncio.Protocol``: the header
is collected in ``data_received``, and reply lines wake the session's ``send_command``. (A protocol
rather than a StreamReader is also a kept optimisation: the stream machinery and a per-command
``asyncio.timeout`` cost about as much CPU per screen as the screening itself, scripts/bench_agi.py.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, cast

import structlog

from callguard import metrics
from callguard.agi import rxtime
from callguard.agi.wire import AgiReply, AgiRequest, parse_reply, parse_request
from callguard.config import AgiConfig
from callguard.errors import AgiProtocolError

log = structlog.get_logger("callguard.agi.server")


class Server(Protocol):
    """What a connection needs of its server (``AgiServer``)."""

    cfg: AgiConfig
    script: str  # the one AGI script served; any other is closed
    timestamps: bool  # SO_TIMESTAMPNS is on the listening socket (rxtime)

    def opened(self, conn: AgiConnection) -> bool: ...

    def closed(self, conn: AgiConnection) -> None: ...

    async def converse(self, session: AgiSession) -> None: ...


class AgiSession:
    """One FastAGI conversation after the header: ``send_command`` is bounded and understands an
    async ``HANGUP``."""

    def __init__(self, request: AgiRequest, conn: AgiConnection, reply_timeout: float) -> None:
        self.request = request
        self.conn = conn
        self.reply_timeout = reply_timeout
        self.hung_up = False
        self.started = conn.started
        # When the request's first byte reached the host (perf_counter), kernel queueing included: what
        # a screen's latency counts from. The deadline still counts from ``started``: a verdict is trusted
        # when callguard's own part was quick, however long the caller waited before it.
        self.arrived = conn.arrived if conn.arrived is not None else conn.started

    async def send_command(self, command: str) -> AgiReply:
        """Send one command and return its reply; ``TimeoutError`` after ``reply_timeout``."""
        conn = self.conn
        conn.write(command.encode("utf-8") + b"\n")
        deadline = conn.loop.time() + self.reply_timeout
        while True:
            line = await conn.read_line(deadline)
            if line == "HANGUP":  # the caller left (s10); the real reply still follows
                self.hung_up = True
                continue
            reply = parse_reply(line)
            if reply.code == 100:  # "100 result=0 Trying..."
                continue
            if line.startswith("520-"):  # usage text until "520 End of proper usage."
                while not (await conn.read_line(deadline)).startswith("520 "):
                    pass
            return reply


class AgiConnection(asyncio.Protocol):
    """One FastAGI TCP connection: header phase, then the server's conversation task fed reply lines."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.cfg = server.cfg
        self.loop = loop
        self.started = time.perf_counter()
        self.arrived: float | None = None  # the first byte's arrival (rxtime), else first data_received
        self.fd = -1  # for the stall watchdog's thread (callguard/watchdog.py), which shuts it
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self._buf = bytearray()
        self._eof = False
        self._closing = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()
            if self.server.timestamps:
                self.arrived = rxtime.queued_since(self.fd, sock.family)
        if not self.server.opened(self):
            # Refusing makes Asterisk set AGISTATUS=FAILURE and the dialplan fails open to the queue.
            self._close()
            return
        self._timer = self.loop.call_later(self.cfg.read_timeout_ms / 1000, self._header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self.arrived is None:
            self.arrived = time.perf_counter()
        buf = self._buf
        buf += data
        if self.task is None:
            self._header_received()
        elif len(buf) > self.cfg.max_header_bytes:  # Asterisk answers a command with a line or a few
            self._wake(AgiProtocolError(f"over {self.cfg.max_header_bytes} bytes of replies unread"))
            self._close()
        elif self._waiter is not None:
            self._wake(None)

    def eof_received(self) -> bool:
        self._eof = True
        if self.task is None:
            self._fail(
                AgiProtocolError("connection closed before the end of the request" if self._buf
                                 else "connection closed without a request")
            )
        self._wake(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake(None)
        self.server.closed(self)

    # --- header phase ---------------------------------------------------------------------------------

    def _header_received(self) -> None:
        """Collect the request block up to the empty line; Asterisk ends lines with a bare ``\\n``."""
        buf = self._buf
        end = buf.find(b"\n\n")
        if (end if end >= 0 else len(buf)) > self.cfg.max_header_bytes:
            self._fail(AgiProtocolError(f"request header over {self.cfg.max_header_bytes} bytes"))
            return
        if end < 0:
            return  # more to come, within the read timeout
        assert self._timer is not None
        self._timer.cancel()
        self._timer = None
        try:
            request = parse_request(bytes(buf[:end]))
        except AgiProtocolError as e:
            self._fail(e)
            return
        del buf[: end + 2]
        if request.script != self.server.script:
            metrics.AGI_ERRORS.labels(kind="unknown_script").inc()
            log.warning("agi_unknown_script", script=request.script[:80], uniqueid=request.uniqueid)
            self._close()
            return
        session = AgiSession(request, self, self.cfg.read_timeout_ms / 1000)
        self.task = self.loop.create_task(self._serve(session))

    def _header_timeout(self) -> None:
        self._timer = None
        metrics.AGI_ERRORS.labels(kind="read_timeout").inc()
        log.warning("agi_read_timeout", peer=self._peer())
        self._close()

    def _fail(self, e: AgiProtocolError) -> None:
        metrics.AGI_ERRORS.labels(kind="protocol").inc()
        log.warning("agi_bad_request", peer=self._peer(), error=str(e))
        self._close()

    # --- session phase --------------------------------------------------------------------------------

    async def _serve(self, session: AgiSession) -> None:
        try:
            await self.server.converse(session)
        except TimeoutError:
            metrics.AGI_ERRORS.labels(kind="read_timeout").inc()
            log.warning("agi_read_timeout", peer=self._peer(), uniqueid=session.request.uniqueid)
        except AgiProtocolError as e:
            metrics.AGI_ERRORS.labels(kind="protocol").inc()
            log.warning("agi_bad_request", peer=self._peer(), uniqueid=session.request.uniqueid, error=str(e))
        except (ConnectionError, OSError) as e:
            metrics.AGI_ERRORS.labels(kind="connection").inc()
            log.warning("agi_connection_error", peer=self._peer(), error=str(e))
        except Exception:  # a bug ends its own connection, never the server
            metrics.AGI_ERRORS.labels(kind="route").inc()
            log.exception("agi_route_failed", uniqueid=session.request.uniqueid)
        finally:
            self._close()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def read_line(self, deadline: float) -> str:
        """The next line Asterisk sent, without its ``\\n``; ``TimeoutError`` at ``deadline``
        (loop time), ``AgiProtocolError`` when the connection ends first."""
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                raw = bytes(buf[:end])
                del buf[: end + 1]
                return raw.decode("utf-8", errors="replace").rstrip("\r")
            if self._eof:
                raise AgiProtocolError("Asterisk closed the AGI connection")
            waiter = self._waiter = self.loop.create_future()
            timer = self.loop.call_at(deadline, self._expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    def _wake(self, error: BaseException | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    @staticmethod
    def _expire(waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    # --- shared ---------------------------------------------------------------------------------------

    def _close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()  # flushes what was written, then closes

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _peer(self) -> str:
        return str(self.transport.get_extra_info("peername")) if self.transport is not None else ""
