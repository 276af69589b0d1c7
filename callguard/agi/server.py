"""The FastAGI server, on panoramisk's Application and Request with their unsafe parts replaced.

panoramisk 1.4's ``Application.handler`` loops on ``reader.read()`` until it sees ``\\n\\n``: a client
that sends part of a header and closes makes it spin forever on EOF and freezes the loop (reproduced
here; see tests/test_agi_server.py). ``add_route`` wraps plain functions with ``asyncio.coroutine``,
gone in 3.11, and ``Request.send_command`` reads replies with no timeout and mistakes an async
``HANGUP`` for the reply.

So routing stays panoramisk's (``FastAgiApplication``, its ``_route`` table) and the route gets a
panoramisk ``Request`` (``AgiSession``), but the bytes go through ``AgiConnection``, an
``asyncio.Protocol``: the header is collected in ``data_received`` under a size bound and a timer,
EOF ends the connection, and reply lines wake the route's ``send_command``. No StreamReader, no
per-command ``asyncio.timeout``: the screen is the hot path of every incoming call, and the stream
machinery cost about as much CPU as the screening itself (scripts/bench_agi.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import cast

import structlog
from panoramisk import fast_agi

from callguard import metrics
from callguard.agi import rxtime
from callguard.agi.wire import AgiReply, AgiRequest, parse_reply, parse_request
from callguard.config import AgiConfig
from callguard.errors import AgiProtocolError, BindError

log = structlog.get_logger("callguard.agi.server")

Endpoint = Callable[["AgiSession"], Awaitable[None]]
BACKLOG = 512


class AgiSession(fast_agi.Request):  # type: ignore[misc]
    """One FastAGI conversation; ``send_command`` is bounded and understands async ``HANGUP``.

    panoramisk's ``reader``/``writer`` are None: replies come through ``conn``.
    """

    def __init__(
        self, app: FastAgiApplication, request: AgiRequest, conn: AgiConnection, reply_timeout: float,
    ) -> None:
        super().__init__(app, request.headers, None, None, encoding="utf-8")
        self.request = request
        self.conn = conn
        self.reply_timeout = reply_timeout
        self.hung_up = False
        self.started = conn.started
        # When the request's first byte reached the host (perf_counter), kernel queueing included: what
        # a screen's latency counts from. The deadline still counts from ``started``: a verdict is trusted
        # when callguard's own part was quick, however long the caller waited before it.
        self.arrived = conn.arrived if conn.arrived is not None else conn.started

    async def send_command(self, command: str) -> AgiReply:  # type: ignore[override]
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


class FastAgiApplication(fast_agi.Application):  # type: ignore[misc]
    """panoramisk's route table; connections are served by ``AgiConnection``, not ``handler``."""

    def __init__(self, cfg: AgiConfig) -> None:
        super().__init__(default_encoding="utf-8", loop=asyncio.get_running_loop())
        self.cfg = cfg

    def add_route(self, path: str, endpoint: Endpoint) -> None:
        if not asyncio.iscoroutinefunction(endpoint):
            raise TypeError(f"route {path!r}: endpoint must be an async function")
        if path in self._route:
            raise ValueError(f"route {path!r} exists")
        self._route[path] = endpoint

    def route(self, script: str) -> Endpoint | None:
        endpoint: Endpoint | None = self._route.get(script)
        return endpoint

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError("panoramisk's stream handler is unsafe (see module doc); use AgiServer")


class AgiConnection(asyncio.Protocol):
    """One FastAGI TCP connection: header phase, then a route task fed reply lines."""

    def __init__(self, server: AgiServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.cfg = server.cfg
        self.loop = loop  # given: asyncio.get_running_loop() costs a getpid() call on Python 3.11
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
        if not self.server._opened(self):
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
        self.server._closed(self)

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
        app = self.server.app
        assert app is not None  # set before the server listens
        endpoint = app.route(request.script)
        if endpoint is None:
            metrics.AGI_ERRORS.labels(kind="unknown_script").inc()
            log.warning("agi_unknown_script", script=request.script[:80], uniqueid=request.uniqueid)
            self._close()
            return
        session = AgiSession(app, request, self, self.cfg.read_timeout_ms / 1000)
        self.task = self.loop.create_task(self._serve(endpoint, session))

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

    async def _serve(self, endpoint: Endpoint, session: AgiSession) -> None:
        try:
            await endpoint(session)
        except TimeoutError:
            metrics.AGI_ERRORS.labels(kind="read_timeout").inc()
            log.warning("agi_read_timeout", peer=self._peer(), uniqueid=session.request.uniqueid)
        except AgiProtocolError as e:
            metrics.AGI_ERRORS.labels(kind="protocol").inc()
            log.warning("agi_bad_request", peer=self._peer(), uniqueid=session.request.uniqueid, error=str(e))
        except (ConnectionError, OSError) as e:
            metrics.AGI_ERRORS.labels(kind="connection").inc()
            log.warning("agi_connection_error", peer=self._peer(), error=str(e))
        except Exception:  # a route's bug ends its own connection, never the server
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


class AgiServer:
    """The listening part: accepts, bounds concurrency, drains on stop."""

    name = "agi"

    def __init__(self, cfg: AgiConfig, routes: dict[str, Endpoint], sock: socket.socket | None = None) -> None:
        """``sock``: a listening socket to serve (an AGI worker's, shared with its siblings); without it
        the server binds ``cfg.host``:``cfg.port`` itself."""
        self.cfg = cfg
        self.routes = routes
        self.sock = sock
        self.app: FastAgiApplication | None = None
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
        self.app = FastAgiApplication(self.cfg)
        for path, endpoint in self.routes.items():
            self.app.add_route(path, endpoint)
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(lambda: AgiConnection(self, loop), sock=self.sock, backlog=BACKLOG)
        else:
            try:
                self._server = await loop.create_server(
                    lambda: AgiConnection(self, loop), self.cfg.host, self.cfg.port, reuse_address=True,
                    backlog=BACKLOG,
                )
            except OSError as e:  # in use, not permitted, no such address (socket.gaierror too)
                raise BindError("agi", self.cfg.host, self.cfg.port, e) from e
        self.port = self._server.sockets[0].getsockname()[1]
        self.timestamps = all(rxtime.enable(s) for s in self._server.sockets)
        if self.sock is None:  # ours alone: the stall watchdog may shut it (never a worker's shared one)
            self._listen_fds = [s.fileno() for s in self._server.sockets]
        metrics.AGI_ACTIVE.set_function(lambda: self.active)  # read at scrape time, not per call
        if self.sock is None:
            log.info("agi_listening", host=self.cfg.host, port=self.port, deadline_ms=self.cfg.deadline_ms)
        else:  # an AGI worker process; the pool logs agi_listening
            log.info("agi_worker_serving", port=self.port, pid=os.getpid())

    def held_fds(self) -> list[int]:
        """The fds of the connections open now; called from the stall watchdog's thread (a set copied
        under the GIL in one step)."""
        return [c.fd for c in list(self._conns) if c.fd >= 0]

    def listen_fds(self) -> list[int]:
        """The listening sockets this server bound itself (none when it serves a shared one)."""
        return list(self._listen_fds) if self._server is not None else []

    def _opened(self, conn: AgiConnection) -> bool:
        if len(self._conns) >= self.cfg.max_connections:
            metrics.AGI_ERRORS.labels(kind="overload").inc()
            log.warning("agi_overload", open=len(self._conns), limit=self.cfg.max_connections)
            return False
        self._conns.add(conn)
        self._idle.clear()
        return True

    def _closed(self, conn: AgiConnection) -> None:
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
