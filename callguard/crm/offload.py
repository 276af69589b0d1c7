"""CPU work of the CRM sync (decoding and parsing contact pages) in a worker process, off the event loop.

A 250-contact amoCRM page is ~200 KB of JSON: decoding it and normalising every phone takes ~9 ms of
CPU, which on the event loop is 9 ms during which no FastAGI screen is answered, and a full sync of a
million contacts has 4,000 of them. A thread would not help (orjson and the parser hold the GIL), so a
small process pool (``sync.parse_workers``, default 1) does it; 0 parses on the loop, in slices.

One pool per process, made on first use with ``spawn`` (forking a process that runs aiosqlite threads
can copy a held lock) and at a lower CPU priority than the loop, and shut down by ``shutdown()``.
A worker that dies (out of memory, killed) costs one page parsed on the loop and a new pool, not a sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("callguard.crm")

T = TypeVar("T")

WORKER_NICE = 5  # the event loop answering calls, and Asterisk, come first

_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _lower_priority() -> None:
    # A sandbox that forbids setpriority (EPERM) leaves the worker at the service's priority: slower
    # screens under a sync, but a working sync (an initializer that raises would break the pool).
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size != workers:
        shutdown()
        _pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
        )
        _pool_size = workers
    return _pool


async def run(workers: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the worker pool (``workers`` > 0), else here; ``fn`` must be a module-level
    function and its arguments and result picklable."""
    if workers <= 0:
        return fn(*args)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_get_pool(workers), fn, *args)
    except BrokenProcessPool:
        log.warning("crm_parse_worker_lost", workers=workers)
        shutdown()
        return fn(*args)


def shutdown() -> None:
    global _pool, _pool_size
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool, _pool_size = None, 0
