"""The SQLite file: connections, pragmas, migrations, and the single-writer rule.

Two aiosqlite connections in WAL mode: ``reader`` for reads and ``writer`` behind an asyncio lock, so
there is exactly one writer and readers see whole transactions.

The screening path reads through ``hot``, a plain sqlite3 connection used on the event loop thread, one
primary-key read per screen in its own (autocommit) transaction. That is a bound, not a throughput
trick: a read the loop does itself cannot be queued behind a sync's writes on aiosqlite's thread (a hop
there costs up to the interpreter's 5 ms GIL switch interval whenever the loop is busy: p99 > 300 ms
under load, scripts/bench_agi.py), and in WAL mode a reader never waits for the writer;
``HOT_BUSY_TIMEOUT_MS`` bounds the rare wait (WAL recovery), well inside ``agi.deadline_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import structlog

import callguard.store.failures as failures
from callguard.errors import SchemaTooNewError
from callguard.store.migrations import LATEST, MIGRATIONS

log = structlog.get_logger("callguard.store")


async def _connect(path: str, busy_timeout_ms: int) -> aiosqlite.Connection:
    conn = aiosqlite.connect(path, isolation_level=None)
    try:
        await conn
    except BaseException:
        # aiosqlite stops its thread without waiting; were the loop closed first, that thread would print
        # a traceback ("Event loop is closed") under the one line a failed start-up prints.
        thread = getattr(conn, "_thread", None)
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 1.0)
        raise
    conn.daemon = True  # a stuck query must never keep the process alive on exit (aiosqlite>=0.20)
    await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    await conn.execute("PRAGMA foreign_keys = ON")
    return conn


HOT_BUSY_TIMEOUT_MS = 50
HOT_MMAP_BYTES = 1 << 30  # address space only; the kernel's page cache holds the pages


def _connect_hot(target: str) -> sqlite3.Connection:
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=True)
    conn.execute(f"PRAGMA busy_timeout = {HOT_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only = ON")
    # Pages through a memory map, not a pread() each: every commit by the writer (sync, screen records)
    # empties this connection's page cache, and the lookup after it would read the B-tree back in.
    conn.execute(f"PRAGMA mmap_size = {HOT_MMAP_BYTES}")
    return conn


class Database:
    def __init__(
        self, reader: aiosqlite.Connection, writer: aiosqlite.Connection, hot: sqlite3.Connection, path: str
    ) -> None:
        self.reader = reader
        self.hot = hot
        self._writer = writer
        self.path = path
        self._lock = asyncio.Lock()
        self._scratch: str | None = None  # ":memory:": the scratch folder removed at close

    @classmethod
    async def open(cls, path: Path | str, busy_timeout_ms: int = 5000) -> Database:
        """Open (or create) and migrate; any failure is a typed ``StoreError`` naming the file
        (callguard.store.failures)."""
        try:
            return await cls._open(path, busy_timeout_ms)
        except (sqlite3.Error, OSError) as e:
            raise failures.classify(str(path), e) from e

    @classmethod
    async def _open(cls, path: Path | str, busy_timeout_ms: int) -> Database:
        target = str(path)
        scratch: str | None = None
        if target == ":memory:":
            scratch, target = _scratch_store()
        else:
            failures.prepare_folder(Path(target))
            failures.check_header(Path(target))
            failures.probe(target)
        try:
            writer = await _connect(target, busy_timeout_ms)
        except BaseException:
            _remove(scratch)
            raise
        try:
            await writer.execute("PRAGMA journal_mode = WAL")
            await writer.execute("PRAGMA synchronous = NORMAL")
            await migrate(writer)
            reader = await _connect(target, busy_timeout_ms)
            hot = _connect_hot(target)
        except BaseException:
            await writer.close()
            _remove(scratch)
            raise
        db = cls(reader, writer, hot, str(path))
        db._scratch = scratch
        return db

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; commits on success, rolls back on any error.

        Safe to cancel: the statements run on aiosqlite's thread whatever happens to the awaiting task,
        so each is shielded and runs to its end, and a transaction a cancelled ``BEGIN`` left open is
        rolled back before the next one starts.
        """
        async with self._lock:
            if self._writer.in_transaction:
                await asyncio.shield(self._writer.rollback())
            begin = asyncio.ensure_future(self._writer.execute("BEGIN IMMEDIATE"))
            try:
                await asyncio.shield(begin)
                yield self._writer
            except BaseException:
                if not begin.done():  # cancelled while BEGIN was queued: let it land, then undo it
                    await asyncio.wait([begin])
                if self._writer.in_transaction:
                    await asyncio.shield(self._writer.execute("ROLLBACK"))
                raise
            else:
                await asyncio.shield(self._writer.execute("COMMIT"))

    async def close(self) -> None:
        self.hot.close()
        for conn in (self.reader, self._writer):
            with contextlib.suppress(Exception):
                await conn.close()
        _remove(self._scratch)


def _scratch_store() -> tuple[str, str]:
    """``store.path = ":memory:"``: a private scratch file (in RAM where /dev/shm exists), removed at
    close. Its connections then lock as a real store's do (WAL); a shared-cache memory DB would lock whole
    tables between them (SQLITE_LOCKED, which no busy timeout waits out)."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    scratch = tempfile.mkdtemp(prefix="callguard-memory-", dir=shm)
    return scratch, os.path.join(scratch, "store.sqlite3")


def _remove(scratch: str | None) -> None:
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


async def migrate(conn: aiosqlite.Connection) -> int:
    """Bring the schema to ``LATEST``; refuse a database written by a newer callguard."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    if current > LATEST:
        raise SchemaTooNewError(current, LATEST)
    for version in sorted(v for v in MIGRATIONS if v > current):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await _run_script(conn, MIGRATIONS[version])
            await conn.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        log.info("store_migrated", version=version)
    return max(current, LATEST)


async def _run_script(conn: aiosqlite.Connection, script: str) -> None:
    # executescript() would COMMIT first; run statements one by one inside our transaction instead.
    for statement in _statements(script):
        await conn.execute(statement)


def _statements(script: str) -> list[str]:
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
