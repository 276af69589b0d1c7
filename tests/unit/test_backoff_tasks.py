"""The shared back-off and task helpers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callguard import backoff, tasks


@given(st.integers(-5, 10_000), st.floats(0.01, 100), st.floats(0.01, 10_000), st.floats(0, 1))
def test_delay_is_capped_jittered_and_finite(attempt: int, base: float, cap: float, r: float) -> None:
    d = backoff.delay(attempt, base, cap, rng=lambda: r)
    plain = min(cap, base * 2 ** min(max(attempt, 0), 30))
    assert plain * 0.5 <= d <= plain + 1e-9


def test_delay_doubles_until_the_cap() -> None:
    one = lambda: 1.0  # noqa: E731  (no jitter: the upper end)
    assert [backoff.delay(a, 1.0, 10.0, rng=one) for a in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_stop_cancels_and_waits() -> None:
    started = asyncio.Event()
    ended: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("cleaned up")

    task = tasks.spawn(forever(), "forever")
    await started.wait()
    await tasks.stop(task, None)
    assert task.cancelled() and ended == ["cleaned up"]


async def test_a_task_that_dies_is_logged(capsys: pytest.CaptureFixture[str]) -> None:
    from structlog.testing import capture_logs

    async def boom() -> None:
        raise RuntimeError("bug")

    with capture_logs() as logs:
        task = tasks.spawn(boom(), "boom")
        with pytest.raises(RuntimeError):
            await task
        await asyncio.sleep(0)  # the done-callback runs on the next loop turn
    assert [e["task"] for e in logs if e["event"] == "task_failed"] == ["boom"]
