"""Background tasks that are never fire-and-forget (STYLE.md rule 9): started with a name, ended by
``stop()`` which cancels and waits, and a task that dies of an exception is logged, not lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("callguard.tasks")


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """``asyncio.create_task`` with a name and a done-callback that logs an unexpected death."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task_failed", task=task.get_name(), error=repr(exc), exc_info=exc)


async def stop(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel each task and wait for it to end; a task that already ended is only reaped."""
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError):
            await task
