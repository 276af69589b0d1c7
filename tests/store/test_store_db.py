"""The store's transaction rules: single writer, rollback on error, cancel-safe, refuses newer schemas."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from callguard.errors import SchemaTooNewError
from callguard.store import Store
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


async def test_screening_reads_see_another_connections_write_at_once(tmp_path: Path) -> None:
    """Each screening read is its own transaction: a write committed by another connection (another
    process: ``callguard import`` beside the service) is seen by the next read, and no read transaction
    stays open between reads (an open one would hold WAL checkpoints back)."""
    other, screening = await Store.open(tmp_path / "c.sqlite3"), await Store.open(tmp_path / "c.sqlite3")
    try:
        assert await screening.numbers.lookup("+79123456789") == EMPTY
        assert not screening.db.hot.in_transaction
        await other.overrides.upsert_many([("+79123456789", "block", "")])
        assert (await screening.numbers.lookup("+79123456789")).override == "block"
        assert not screening.db.hot.in_transaction
    finally:
        await other.close()
        await screening.close()
