"""The FastAGI server, on panoramisk with its unsafe parts replaced.

panoramisk 1.4's ``Application.handler`` loops on ``reader.read()`` until it sees ``\\n\\n``: a client
that sends part of a header and closes makes it spin forever on EOF and freezes the loop (reproduced
here; see tests/test_agi_server.py). ``add_route`` wraps plain functions with ``asyncio.coroutine``,
gone in 3.11, and ``Request.send_command`` reads replies with no timeout and mistakes an async
``HANGUP`` for the reply. ``FastAgiApplication`` and ``AgiSession`` override exactly those: bounded
header size, read timeout, EOF = end, close in ``finally``; routing and the request object stay
panoramisk's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from panoramisk import fast_agi

from callguard import metrics
from callguard.agiproto import AgiReply, AgiRequest, parse_reply, parse_request
from callguard.config import AgiConfig
from callguard.errors import AgiProtocolError

log = structlog.get_logger("callguard.agi")

Endpoint = Callable[["AgiSession"], Awaitable[None]]


class AgiSession(fast_agi.Request):  # type: ignore[misc]
    """One FastAGI conversation; ``send_command`` is bounded and understands async ``HANGUP``."""

    def __init__(
        self, app: FastAgiApplication, request: AgiRequest, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, reply_timeout: float,
    ) -> None:
        super().__init__(app, dict(request.headers), reader, writer, encoding="utf-8")
        self.request = request
        self.reply_timeout = reply_timeout
        self.hung_up = False
        self.started = time.perf_counter()

    async def send_command(self, command: str) -> AgiReply:  # type: ignore[override]
        self.writer.write(command.encode("utf-8") + b"\n")
        await self.writer.drain()
        async with asyncio.timeout(self.reply_timeout):
            while True:
                line = await self._line()
                if line == "HANGUP":  # the caller left (s10); the real reply still follows
                    self.hung_up = True
                    continue
                reply = parse_reply(line)
                if reply.code == 100:  # "100 result=0 Trying..."
                    continue
                if line.startswith("520-"):  # usage text until "520 End of proper usage."
                    while not (await self._line()).startswith("520 "):
                        pass
                return reply

    async def _line(self) -> str:
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            raise AgiProtocolError("Asterisk closed the AGI connection") from e
        except asyncio.LimitOverrunError as e:
            raise AgiProtocolError("AGI reply line too long") from e
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")


class FastAgiApplication(fast_agi.Application):  # type: ignore[misc]
    def __init__(self, cfg: AgiConfig) -> None:
        super().__init__(default_encoding="utf-8", loop=asyncio.get_running_loop())
        self.cfg = cfg

    def add_route(self, path: str, endpoint: Endpoint) -> None:
        if not asyncio.iscoroutinefunction(endpoint):
            raise TypeError(f"route {path!r}: endpoint must be an async function")
        if path in self._route:
            raise ValueError(f"route {path!r} exists")
        self._route[path] = endpoint

    async def read_request(self, reader: asyncio.StreamReader) -> AgiRequest:
        """The header block up to the empty line, within ``read_timeout_ms`` and ``max_header_bytes``.

        Asterisk ends header lines with a bare ``\\n`` (res_agi.c setup_env), so the block ends at the
        first ``\\n\\n``; one ``readuntil`` with the stream's limit = the header bound reads it.
        """
        async with asyncio.timeout(self.cfg.read_timeout_ms / 1000):
            try:
                block = await reader.readuntil(b"\n\n")
            except asyncio.IncompleteReadError as e:
                raise AgiProtocolError(
                    "connection closed before the end of the request" if e.partial
                    else "connection closed without a request"
                ) from e
            except asyncio.LimitOverrunError as e:
                raise AgiProtocolError(f"request header over {self.cfg.max_header_bytes} bytes") from e
        return parse_request(block)

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            request = await self.read_request(reader)
            endpoint = self._route.get(request.script)
            if endpoint is None:
                metrics.AGI_ERRORS.labels(kind="unknown_script").inc()
                log.warning("agi_unknown_script", script=request.script[:80], uniqueid=request.uniqueid)
                return
            reply_timeout = self.cfg.read_timeout_ms / 1000
            await endpoint(AgiSession(self, request, reader, writer, reply_timeout))
        except TimeoutError:
            metrics.AGI_ERRORS.labels(kind="read_timeout").inc()
            log.warning("agi_read_timeout", peer=str(peer))
        except AgiProtocolError as e:
            metrics.AGI_ERRORS.labels(kind="protocol").inc()
            log.warning("agi_bad_request", peer=str(peer), error=str(e))
        except (ConnectionError, OSError) as e:
            metrics.AGI_ERRORS.labels(kind="connection").inc()
            log.warning("agi_connection_error", peer=str(peer), error=str(e))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


class AgiServer:
    """The listening part: accepts, bounds concurrency, drains on stop."""

    name = "agi"

    def __init__(self, cfg: AgiConfig, routes: dict[str, Endpoint]) -> None:
        self.cfg = cfg
        self.routes = routes
        self.app: FastAgiApplication | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port: int | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self.app = FastAgiApplication(self.cfg)
        for path, endpoint in self.routes.items():
            self.app.add_route(path, endpoint)
        self._server = await asyncio.start_server(
            self._accept, self.cfg.host, self.cfg.port,
            limit=self.cfg.max_header_bytes, reuse_address=True, backlog=512,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("agi_listening", host=self.cfg.host, port=self.port, deadline_ms=self.cfg.deadline_ms)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.app is not None
        if len(self._tasks) >= self.cfg.max_connections:
            # Refusing makes Asterisk set AGISTATUS=FAILURE and the dialplan fails open to the queue.
            metrics.AGI_ERRORS.labels(kind="overload").inc()
            log.warning("agi_overload", open=len(self._tasks), limit=self.cfg.max_connections)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        metrics.AGI_ACTIVE.set(len(self._tasks))
        try:
            await self.app.handler(reader, writer)
        finally:
            self._tasks.discard(task)
            metrics.AGI_ACTIVE.set(len(self._tasks))

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()  # stop accepting; in-flight requests go on
        pending = set(self._tasks)
        if pending:
            done, still = await asyncio.wait(pending, timeout=self.cfg.drain_seconds)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
            log.info("agi_drained", finished=len(done), cancelled=len(still))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
