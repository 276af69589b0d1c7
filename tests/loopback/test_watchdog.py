"""The PBX boundary in one process: the stall watchdog, sd_notify, and latency from the first byte."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import uvloop

from callguard import sdnotify, watchdog
from callguard.agi import rxtime
from callguard.agi.server import AgiServer
from callguard.config import Config
from callguard.errors import EXIT_STALLED
from callguard.screening.rules import Decision, Verdict
from callguard.screening.screener import Screen, ScreenRequest
from tests.fakes.asterisk_agi import load

HEADER = load("s02_clean_answered").header + b"\n"


# --- the watchdog itself ---------------------------------------------------------------------------------


async def test_a_blocked_loop_fires_once_a_beating_one_never() -> None:
    fired: list[float] = []
    dog = watchdog.StallWatchdog(0.6, fired.append, beat_interval=0.05)
    dog.start()
    try:
        await asyncio.sleep(1.0)  # the loop beats: nothing
        assert fired == []
        t0 = time.monotonic()
        time.sleep(1.5)  # noqa: ASYNC251 - the loop is blocked; the thread sees it
        assert dog.fired.is_set() and len(fired) == 1
        assert 0.6 <= fired[0] < 1.5 and time.monotonic() - t0 >= fired[0] - 0.1
    finally:
        dog.stop()


def test_shutdown_fds_skips_what_is_not_a_connected_socket(tmp_path: Path) -> None:
    a, b = socket.socketpair()
    with a, b, open(tmp_path / "f", "w") as f:
        assert watchdog.shutdown_fds([a.fileno(), f.fileno(), 10_000]) == 1
        assert b.recv(1) == b""  # EOF on the other end
        assert a.fileno() >= 0  # the owner's fd is left open (its transport closes it)


def test_stall_log_counts_across_processes(tmp_path: Path) -> None:
    log = watchdog.StallLog(tmp_path / "cg.sqlite3.stalls")
    assert log.count() == 0
    log.record(2.0)
    if (pid := os.fork()) == 0:  # another process (the restarted service) appends to the same file
        log.record(3.0)
        os._exit(0)
    os.waitpid(pid, 0)
    assert log.count() == 2
    assert watchdog.StallLog(None).count() == 0


# --- the stall action on a real FastAGI server -----------------------------------------------------------


class Handler:
    """A screener stand-in: ``on_screen`` runs inside the synchronous ``screen`` call, as the store read does."""

    def __init__(self, on_screen: Callable[[ScreenRequest], None]) -> None:
        self.on_screen = on_screen

    def screen(self, request: ScreenRequest) -> Screen:
        self.on_screen(request)
        return self.fail_open(request, "test")

    def fail_open(self, request: ScreenRequest, fault: str) -> Screen:
        from callguard.phone import normalise

        return Screen(request, normalise(request.caller), request.did, Decision(Verdict.CLEAN, fault))

    def record(self, screen: Screen, delivered: bool, hung_up: bool) -> None:
        pass


async def _serve(cfg: Config, on_screen: Callable[[ScreenRequest], None]) -> AgiServer:
    server = AgiServer(dataclasses.replace(cfg.agi, port=0), Handler(on_screen))
    await server.start()
    return server


async def test_a_loop_blocked_mid_screen_closes_held_and_queued_calls(cfg: Config, tmp_path: Path) -> None:
    """The route blocks the loop; the client holding the screen and one that connects meanwhile (queued by
    the kernel) both see the socket close within 3 s; the action logs, counts and 'exits'."""
    entered = threading.Event()

    def blocking(request: ScreenRequest) -> None:
        entered.set()
        time.sleep(4.0)  # the event loop is blocked, as by a stuck disk or a bug

    server = await _serve(cfg, blocking)
    exits: list[int] = []
    r, w = os.pipe()
    response = watchdog.StallResponse(
        server.held_fds, server.listen_fds, watchdog.StallLog(tmp_path / "stalls"), w, exits.append,
    )
    dog = watchdog.StallWatchdog(1.5, response)
    dog.start()
    results: dict[str, float] = {}

    def caller(name: str, delay: float) -> None:  # a plain thread: the loop under test is blocked
        time.sleep(delay)
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(HEADER)
            t0 = time.monotonic()
            s.settimeout(3.0)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            results[name] = time.monotonic() - t0

    threads = [threading.Thread(target=caller, args=(name, delay)) for name, delay in (("held", 0.0), ("queued", 1.0))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            await asyncio.to_thread(t.join, 5.0)
    finally:
        dog.stop()
        await server.stop()
    assert results["held"] < 3.0 and results["queued"] < 2.5, results
    assert entered.is_set() and exits == [EXIT_STALLED]
    line = orjson.loads(os.read(r, 4096).splitlines()[0])
    os.close(r)
    os.close(w)
    assert line["event"] == "loop_stalled" and line["pid"] == os.getpid() and line["stalled_s"] >= 1.5
    assert line["held_connections"] == 1 and line["listening_closed"] == 1
    assert watchdog.StallLog(tmp_path / "stalls").count() == 1


# --- latency from the first byte -------------------------------------------------------------------------


async def _arrival_after_a_freeze() -> float:
    """Seconds between the request's first byte and its screen when the loop was frozen as it arrived."""
    seen: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def probe(request: ScreenRequest) -> None:
        seen.set_result(time.perf_counter() - request.arrived)

    from callguard.config import AgiConfig

    server = AgiServer(AgiConfig(port=0), Handler(probe))
    await server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(HEADER)
            time.sleep(0.5)  # noqa: ASYNC251 - the loop is frozen while the call waits in the kernel
            return await asyncio.wait_for(seen, 5)
    finally:
        await server.stop()


async def test_latency_counts_the_kernel_queue_on_asyncio() -> None:
    assert 0.45 <= await _arrival_after_a_freeze() < 2.0


def test_latency_counts_the_kernel_queue_on_uvloop() -> None:
    assert 0.45 <= uvloop.run(_arrival_after_a_freeze()) < 2.0


def test_queued_since_is_none_with_nothing_queued() -> None:
    with socket.create_server(("127.0.0.1", 0)) as ls:
        assert rxtime.enable(ls)
        with socket.create_connection(ls.getsockname()) as c:
            conn, _ = ls.accept()
            with conn:
                assert rxtime.queued_since(conn.fileno()) is None
                c.sendall(b"x")
                time.sleep(0.2)
                since = rxtime.queued_since(conn.fileno())
                assert since is not None and 0.15 <= time.perf_counter() - since < 1.0
                assert conn.recv(1) == b"x"  # peeked, not consumed


# --- sd_notify -------------------------------------------------------------------------------------------


def test_watchdog_interval_follows_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    pid = str(os.getpid())
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": pid}) == pytest.approx(0.25)
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "1500000"}) == pytest.approx(0.25)
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": "1"}) is None  # not ours
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert sdnotify.watchdog_interval({}) is None


async def test_notifier_abstract_socket_ready_pings_stopping() -> None:
    name = f"callguard-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
        sink.bind("\0" + name)
        sink.setblocking(False)
        n = sdnotify.Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "600000"})
        n.ready(status="serving")
        await asyncio.sleep(0.35)
        n.stopping()
        await asyncio.sleep(0.15)  # no ping after STOPPING
        n.close()
        got = []
        while True:
            try:
                got.append(sink.recv(256).decode())
            except BlockingIOError:
                break
    assert got[0] == "READY=1\nSTATUS=serving" and got[-1] == "STOPPING=1"
    assert 3 <= got.count("WATCHDOG=1") <= 5  # every 0.1 s for 0.35 s


def test_notifier_without_systemd_does_nothing() -> None:
    n = sdnotify.Notifier({})
    assert n.send("READY=1") is False and n.interval is None
