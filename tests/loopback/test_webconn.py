"""The HTTP server's connection bounds on a real loopback port: silent and slow clients are cut at the
header timeout, idle keep-alive at the keep-alive timeout, and the cap holds (callguard.web.connections)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from structlog.testing import capture_logs

from callguard import metrics
from callguard.config import Config
from callguard.web.connections import REFUSAL
from tests.loopback.test_web import make_cfg, running

MARGIN = 5.0  # a loaded 2-core box: timers fire late, never early
GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def web_cfg(tmp_path: Path, **web: object) -> Config:
    cfg = make_cfg(tmp_path, token=False)
    return dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, **web))


def dropped(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("callguard_web_connections_dropped_total", {"reason": reason}) or 0.0


async def read_to_eof(reader: asyncio.StreamReader, within: float) -> bytes:
    return await asyncio.wait_for(reader.read(), within)


async def connect(port: int, send: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


async def one_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive connection that has made one request and had its answer."""
    reader, writer = await connect(port, GET)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), MARGIN)
    assert head.startswith(b"HTTP/1.1 200")
    await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
    return reader, writer


async def test_silent_and_half_sent_connections_are_closed_at_the_header_timeout(tmp_path: Path) -> None:
    header = 0.5
    before = dropped("header_timeout")
    async with running(web_cfg(tmp_path, header_timeout=header, keepalive_timeout=60.0)) as r:
        assert r.web.port is not None
        conns = [await connect(r.web.port) for _ in range(20)]
        conns += [await connect(r.web.port, b"GET /heal") for _ in range(10)]
        conns += [await connect(r.web.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n") for _ in range(10)]
        started = time.monotonic()
        for reader, writer in conns:
            assert await read_to_eof(reader, header + MARGIN) == b""  # closed, nothing answered
            writer.close()
        assert time.monotonic() - started >= header * 0.8  # not at once: the timer cut them
        assert dropped("header_timeout") - before == 40
        status, body, _ = await r.get("/healthz", None)
        assert (status, body) == (200, '{"status": "ok"}')


async def test_idle_keepalive_connection_is_closed_at_the_keepalive_timeout(tmp_path: Path) -> None:
    async with running(web_cfg(tmp_path, header_timeout=60.0, keepalive_timeout=0.5)) as r:
        assert r.web.port is not None
        reader, writer = await one_request(r.web.port)
        assert await read_to_eof(reader, 0.5 + MARGIN) == b""
        writer.close()


def opened(r: object, n: int) -> asyncio.Event:
    """Set once the server holds ``n`` connections (aiohttp's Server.connection_made, observed)."""
    server = r.web._factory.server  # type: ignore[attr-defined]
    event, inner = asyncio.Event(), server.connection_made

    def made(handler: object, transport: object) -> None:
        inner(handler, transport)
        if len(server.connections) >= n:
            event.set()

    server.connection_made = made
    return event


async def test_cap_full_of_silent_clients_still_answers_healthz(tmp_path: Path) -> None:
    before = dropped("evicted")
    async with running(web_cfg(tmp_path, header_timeout=60.0, max_connections=10)) as r:
        assert r.web.port is not None
        full = opened(r, 10)
        idlers = [await connect(r.web.port) for _ in range(10)]
        await asyncio.wait_for(full.wait(), MARGIN)
        for _ in range(3):  # each new client makes room by closing the oldest silent one
            status, _, _ = await r.get("/healthz", None)
            assert status == 200
        assert dropped("evicted") - before >= 1
        assert await read_to_eof(idlers[0][0], MARGIN) == b""  # the oldest idler went first
        for _, writer in idlers:
            writer.close()


async def test_connection_past_the_cap_is_refused_at_once_and_counted(tmp_path: Path) -> None:
    before = dropped("refused")
    async with running(web_cfg(tmp_path, keepalive_timeout=60.0, max_connections=5)) as r:
        assert r.web.port is not None
        busy = [await one_request(r.web.port) for _ in range(5)]  # the cap, every one past its first request
        with capture_logs() as logs:
            for _ in range(3):
                reader, writer = await connect(r.web.port)
                assert await read_to_eof(reader, MARGIN) == REFUSAL
                writer.close()
        assert dropped("refused") - before == 3
        lines = [e for e in logs if e["event"] == "web_connections_dropped"]
        assert len(lines) == 1 and lines[0]["refused"] == 1 and lines[0]["limit"] == 5  # one line, not three
        reader, writer = busy[0]
        writer.write(GET)  # the connections inside the cap still work
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), MARGIN)).startswith(b"HTTP/1.1 200")
        for _, writer in busy:
            writer.close()
