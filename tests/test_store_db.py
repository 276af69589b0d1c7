"""The store's transaction rules: single writer, rollback on error, cancel-safe, refuses newer schemas."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from callguard.errors import SchemaTooNewError
from callguard.store import Store
from callguard.store.db import HOT_SNAPSHOT_S, WRITER_NICE, _nice_this_thread
from callguard.store.migrations import LATEST
from callguard.store.numbers import EMPTY, Contact, Lookup


async def test_error_rolls_back(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.db.write() as conn:
            await conn.execute("INSERT INTO overrides VALUES ('+1', 'block', '', 0)")
            raise RuntimeError("boom")
    assert await store.overrides.count() == {}


async def test_cancelled_writer_leaves_no_open_transaction(store: Store) -> None:
    async def slow_write() -> None:
        async with store.db.write() as conn:
            await conn.execute("INSERT INTO overrides VALUES ('+1', 'block', '', 0)")
            await asyncio.sleep(10)

    # Cancel at every point: before BEGIN is sent, while it is queued on the thread, inside the body.
    for yields in [*range(8), 50]:
        task = asyncio.create_task(slow_write())
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.overrides.upsert_many([("+2", "allow", "after cancel")])
        assert await store.overrides.count() == {"allow": 1}
        await store.overrides.delete("+2")


async def test_readers_never_see_half_a_transaction(store: Store) -> None:
    gate = asyncio.Event()

    async def writer() -> None:
        async with store.db.write() as conn:
            await conn.execute("INSERT INTO overrides VALUES ('+79123456789', 'block', '', 0)")
            gate.set()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(writer())
    await gate.wait()
    assert (await store.numbers.lookup("+79123456789")).override is None
    await task
    assert (await store.numbers.lookup("+79123456789")).override == "block"


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cg.sqlite3"
    s = await Store.open(path)
    async with s.db.write() as conn:
        await conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    await s.close()
    with pytest.raises(SchemaTooNewError, match="newer than this callguard supports"):
        await Store.open(path)


async def test_reopen_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "cg.sqlite3"
    s = await Store.open(path)
    await s.overrides.upsert_many([("+79123456789", "block", "x")])
    await s.close()
    s = await Store.open(path)
    try:
        # Read as ``callguard doctor`` reads them (the store's own helpers went: nothing else used them).
        async with s.db.reader.execute("PRAGMA user_version") as cur:
            assert (await cur.fetchone()) == (LATEST,)
        assert (await s.numbers.lookup("+79123456789")).override == "block"
        async with s.db.reader.execute("PRAGMA integrity_check") as cur:
            assert await cur.fetchall() == [("ok",)]
    finally:
        await s.close()


async def test_writer_thread_runs_at_lower_cpu_priority(store: Store) -> None:
    """Bulk writes (a sync's pages, screen records) yield the CPU to the screening processes."""
    writer = store.db._writer

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    await writer.create_function("test_priority", 0, priority)
    async with writer.execute("SELECT test_priority()") as cur:
        row = await cur.fetchone()
    base = priority()  # the event loop's thread keeps the service's priority
    assert row is not None and row[0] == max(base, WRITER_NICE)


def test_writer_priority_not_permitted_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError("setpriority blocked by the sandbox")

    monkeypatch.setattr(os, "setpriority", refuse)
    assert _nice_this_thread() == 0


async def test_lookup_takes_the_override_and_the_most_telling_contact(store: Store) -> None:
    """A phone two CRM contacts share (duplicates): a spam flag on either wins, else the newest row."""
    phone = "+79123456789"
    assert await store.numbers.lookup(phone) == EMPTY
    async with store.db.write() as conn:
        await store.numbers.write_contacts(conn, [("1", "Old", "Anna", False, [phone])], "amocrm", 100.0)
        await store.numbers.write_contacts(conn, [("2", "New", "Boris", False, [phone])], "amocrm", 200.0)
    found = await store.numbers.lookup(phone)
    assert (found.override, found.contact) == (None, Contact("2", "New", "Boris", False, "amocrm"))
    async with store.db.write() as conn:
        await store.numbers.write_contacts(conn, [("1", "Old", "Anna", True, [phone])], "amocrm", 50.0)
    assert (await store.numbers.lookup(phone)).contact == Contact("1", "Old", "Anna", True, "amocrm")
    await store.overrides.upsert_many([(phone, "allow", "our supplier")])
    found = await store.numbers.lookup(phone)
    assert (found.override, found.override_note, found.contact) == (
        "allow", "our supplier", Contact("1", "Old", "Anna", True, "amocrm")
    )
    await store.overrides.upsert_many([("+79990000000", "block", "")])
    assert await store.numbers.lookup("+79990000000") == Lookup(override="block")


async def test_screening_reads_see_another_process_write_within_the_snapshot_time(tmp_path: Path) -> None:
    """An AGI worker's store shares a read transaction across its lookups for HOT_SNAPSHOT_S at most:
    it sees the main process's writes that much later at most, and holds no transaction when idle
    (an open one would hold WAL checkpoints back)."""
    main, worker = await Store.open(tmp_path / "c.sqlite3"), await Store.open(tmp_path / "c.sqlite3")
    try:
        assert await worker.numbers.lookup("+79123456789") == EMPTY
        assert worker.db.hot.in_transaction
        await main.overrides.upsert_many([("+79123456789", "block", "")])
        await asyncio.sleep(HOT_SNAPSHOT_S * 2)
        assert not worker.db.hot.in_transaction
        assert (await worker.numbers.lookup("+79123456789")).override == "block"
        assert (await main.numbers.lookup("+79123456789")).override == "block"
    finally:
        await main.close()
        await worker.close()
