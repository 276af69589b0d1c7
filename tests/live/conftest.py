"""The live layer: a real Asterisk 22 (``CALLGUARD_TEST_ASTERISK``) with the shipped dialplan; skipped
without one. Nothing of Asterisk is committed: tests/live/lab.py writes the configs at run time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from callguard.store import Store
from tests.live.lab import Ami, Lab, asterisk_binary, callguard_argv


def _binary() -> Path:
    binary = asterisk_binary()
    if binary is None:
        pytest.skip("no Asterisk: set CALLGUARD_TEST_ASTERISK to an installed Asterisk 22 binary")
    return binary


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def make(**kwargs: object) -> Lab:
        lab = Lab(_binary(), tmp_path / f"asterisk{len(labs)}", **kwargs)  # type: ignore[arg-type]
        labs.append(lab)
        lab.start()
        return lab

    yield make
    for lab in labs:
        lab.stop()


@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Lab:
    return lab_factory()


@pytest.fixture
async def ami(lab: Lab) -> AsyncIterator[Ami]:
    client = Ami()
    await client.connect(lab.ami_port)
    yield client
    await client.close()


async def seed_contacts(db: Path, contacts: list[tuple[str, str, str]]) -> None:
    """(contact id, name, E.164 phone) rows into the CRM cache, as a sync would write them."""
    store = await Store.open(db)
    try:
        async with store.db.write() as conn:
            rows = [(cid, name, "7", False, [phone]) for cid, name, phone in contacts]
            await store.numbers.write_contacts(conn, rows, "amocrm", time.time())
    finally:
        await store.close()


class Service:
    """``callguard run`` as a subprocess; ``stop()`` sends SIGTERM (SIGKILL after 10 s)."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            callguard_argv(config, "run"), stdin=subprocess.DEVNULL, stdout=self._out,
            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True,
        )

    def wait_listening(self, port: int, timeout: float = 30.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"callguard exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("callguard did not listen in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    services: list[Service] = []

    def make(config: Path, env: dict[str, str] | None = None) -> Service:
        svc = Service(config, tmp_path / f"callguard{len(services)}.log", env)
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.stop()
