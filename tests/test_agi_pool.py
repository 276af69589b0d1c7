"""AGI worker processes (``agi.workers``): real child processes on a shared loopback socket, fed the
requests a real Asterisk 22 sent; what they answer, what reaches the main process, and how they die."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from callguard import metrics
from callguard.agi import pool as agi_pool
from callguard.agi.pool import AgiPool, WorkerStartError, uses_workers
from callguard.agi.worker import Ready, Stats, decode, encode_ready, encode_record, encode_stats
from callguard.app import Runtime, Service
from callguard.config import Config
from callguard.errors import CallguardError
from callguard.screening.rules import parse_schedule
from callguard.store.screens import ScreenRecord
from callguard.web.server import _agi_state
from tests.fakes.asterisk_agi import header_with, load, session


def pool_cfg(cfg: Config, workers: int = 2) -> Config:
    return dataclasses.replace(
        cfg,
        agi=dataclasses.replace(cfg.agi, port=0, workers=workers, drain_seconds=3.0),
        web=dataclasses.replace(cfg.web, enabled=False),
    )


@pytest.fixture
async def running(cfg: Config) -> AsyncIterator[tuple[Runtime, AgiPool, list[ScreenRecord]]]:
    cfg = pool_cfg(cfg)
    service = Service(cfg)
    seen: list[ScreenRecord] = []
    rt = await service.start()
    try:
        await rt.store.overrides.upsert_many([("+15550000666", "block", "lab")])
        rt.parts["screener"].subscribe(seen.append)
        pool = rt.parts["agi"]
        assert isinstance(pool, AgiPool)
        yield rt, pool, seen
    finally:
        await service.stop()


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def errors(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("callguard_agi_errors_total", {"kind": kind}) or 0.0


async def test_workers_answer_and_records_reach_the_main_process(
    running: tuple[Runtime, AgiPool, list[ScreenRecord]],
) -> None:
    rt, pool, seen = running
    pids = {w.pid for w in pool.workers}
    assert pool.listening and len(pids) == 2 and os.getpid() not in pids
    assert _agi_state(pool) == {"state": "ok", "port": pool.port}  # what /readyz shows
    assert await session(pool.port, load("s01_spam_blocked").header) == ["SET VARIABLE CALLGUARD_VERDICT spam"]
    clean = load("s02_clean_answered")
    for n in range(20):  # enough connections that both workers take some (the kernel picks)
        header = header_with(clean, agi_uniqueid=f"1795435929.{n}")
        assert await session(pool.port, header) == ["SET VARIABLE CALLGUARD_VERDICT clean"]
    await until(lambda: len(seen) == 21)
    assert seen[0].verdict == "spam" and seen[0].caller == "+15550000666"
    assert {r.uniqueid for r in seen[1:]} == {f"1795435929.{n}" for n in range(20)}
    assert all(r.latency_ms > 0 for r in seen)
    await rt.parts["screener"].stop()  # flushes what the main process ingested to the store
    assert await rt.store.screens.verdict_of("1795435929.7") == "clean"


async def test_worker_errors_are_counted_in_the_main_process(
    running: tuple[Runtime, AgiPool, list[ScreenRecord]],
) -> None:
    _, pool, _ = running
    before = errors("protocol")
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", pool.port)
        writer.write(b"\x00\xff garbage\n\n")
        await reader.read()  # the worker closes it
        writer.close()
    await until(lambda: errors("protocol") - before == 3)  # each worker reports about once a second
    assert await session(pool.port, load("s02_clean_answered").header) == ["SET VARIABLE CALLGUARD_VERDICT clean"]


async def test_a_killed_worker_is_replaced_and_the_other_answers_meanwhile(
    running: tuple[Runtime, AgiPool, list[ScreenRecord]],
) -> None:
    _, pool, _ = running
    victim = pool.workers[0]
    old_pid = victim.pid
    assert old_pid is not None
    with capture_logs() as logs:
        os.kill(old_pid, signal.SIGKILL)
        for _ in range(10):  # the survivor takes every call while the victim is down
            assert await session(pool.port, load("s02_clean_answered").header) == [
                "SET VARIABLE CALLGUARD_VERDICT clean"
            ]
        await until(lambda: victim.pid != old_pid and any(e["event"] == "agi_worker_restarted" for e in logs))
    exited = [e for e in logs if e["event"] == "agi_worker_exited"]
    assert len(exited) == 1 and exited[0]["exit_code"] == -signal.SIGKILL and exited[0]["serving"] == 1
    assert errors("worker_exit") >= 1
    assert pool.listening and all(w.proc is not None and w.proc.returncode is None for w in pool.workers)


async def test_a_worker_whose_main_process_is_gone_stops(
    running: tuple[Runtime, AgiPool, list[ScreenRecord]],
) -> None:
    """Seen from a worker, EOF on its link is the main process dying: it stops instead of serving on
    unsupervised. (Here the pool is alive, sees a worker exit, and starts another.)"""
    _, pool, _ = running
    w = pool.workers[1]
    proc, link = w.proc, w.link
    assert proc is not None and link is not None and link.transport is not None
    link.transport.close()
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    await until(lambda: w.proc is not proc and w.proc is not None and w.proc.returncode is None)
    assert await session(pool.port, load("s02_clean_answered").header) == ["SET VARIABLE CALLGUARD_VERDICT clean"]


async def test_in_flight_screen_finishes_during_stop(cfg: Config) -> None:
    cfg = pool_cfg(cfg, workers=1)
    service = Service(cfg)
    rt = await service.start()
    seen: list[ScreenRecord] = []
    rt.parts["screener"].subscribe(seen.append)
    pool = rt.parts["agi"]
    reader, writer = await asyncio.open_connection("127.0.0.1", pool.port)
    writer.write(load("s02_clean_answered").header)
    command = await reader.readline()  # the verdict is out; the worker waits for Asterisk's reply
    assert command == b"SET VARIABLE CALLGUARD_VERDICT clean\n"
    stopping = asyncio.create_task(service.stop())
    await asyncio.sleep(0.3)
    assert not stopping.done()  # draining: the screen is in flight
    writer.write(b"200 result=1\n")
    assert await reader.read() == b""  # the worker ended the session
    writer.close()
    await asyncio.wait_for(stopping, 10)
    assert [r.verdict for r in seen] == ["clean"]
    assert [w.proc.returncode for w in pool.workers if w.proc] == [0]
    assert _agi_state(pool)["state"] == "down" and pool.active == 0


async def test_a_worker_that_cannot_start_fails_the_service_start(
    cfg: Config, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(agi_pool, "WORKER_MODULE", "callguard.no_such_module")
    service = Service(pool_cfg(cfg, workers=1))
    with pytest.raises(WorkerStartError, match="exited with code 1"):
        await service.start()
    assert issubclass(WorkerStartError, CallguardError)
    assert service.started == []  # what did start was stopped again


def test_listen_prefers_ipv4_when_a_name_has_both(monkeypatch: pytest.MonkeyPatch) -> None:
    """"localhost" resolving to ::1 first must still take the dialplan's agi://127.0.0.1."""
    real = socket.getaddrinfo

    def v6_first(host: str | None, port: int, **kw: object) -> list[tuple[object, ...]]:
        v4 = real("127.0.0.1", port, **kw)  # type: ignore[arg-type]
        v6 = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]
        return [*v6, *v4]

    monkeypatch.setattr(socket, "getaddrinfo", v6_first)
    sock = agi_pool._listen("localhost", 0)
    try:
        assert sock.family == socket.AF_INET and sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_memory_store_screens_in_process(cfg: Config) -> None:
    assert uses_workers(pool_cfg(cfg))
    assert not uses_workers(pool_cfg(cfg, workers=0))
    memory = dataclasses.replace(cfg, store=dataclasses.replace(cfg.store, path=":memory:"))  # type: ignore[arg-type]
    assert not uses_workers(pool_cfg(memory))
    assert parse_schedule(cfg.hours) is not None


# --- the link's messages -------------------------------------------------------------------------------


def test_messages_round_trip() -> None:
    record = ScreenRecord("1795435929.7", 1795435929.5, "+79123456789", "5551000", "spam", "override_block", 0.41)
    assert decode(encode_record(record).rstrip(b"\n")) == record
    assert decode(encode_ready(4242).rstrip(b"\n")) == Ready(4242)
    stats = Stats({"protocol": 3.0, "read_timeout": 1.0}, 2.0, 7)
    assert decode(encode_stats(stats).rstrip(b"\n")) == stats


@pytest.mark.parametrize(
    "line",
    [
        b"", b"{", b"[]", b"{}", b'{"ready": true}', b'{"ready": 1, "x": 2}', b'{"nope": 1}',
        b'{"screen": ["u", 1.0, "c", "d", "maybe", "r", 0.1]}',  # not a verdict
        b'{"screen": ["u", 1.0, "c", "d", "spam", "r"]}',
        b'{"screen": ["u", "1", "c", "d", "spam", "r", 0.1]}',
        b'{"stats": {"errors": {"protocol": "3"}, "timeouts": 0, "active": 0}}',
        b'{"stats": {"errors": {}, "timeouts": 0, "active": 1.5}}',
    ],
)
def test_bad_messages_are_value_errors(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode(line)


@given(st.binary(max_size=300))
def test_decode_never_raises_anything_but_value_error(line: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode(line)
