"""A lead sink that records what it took, and the call rows and outbox items the outbox tests feed it."""

from __future__ import annotations

import asyncio

from callguard.leads.model import Delivery, MissedCall
from callguard.store import Store
from callguard.store.calls import CallRow


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class RecordingSink:
    """A sink that remembers what it took; ``failures`` are raised first, in order."""

    name = "rec"

    def __init__(self, *failures: BaseException, known: dict[str, Delivery] | None = None) -> None:
        self.failures = list(failures)
        self.calls: list[MissedCall] = []
        self.known = known or {}
        self.closed = False
        self.got = asyncio.Event()

    async def deliver(self, call: MissedCall) -> Delivery:
        if self.failures:
            raise self.failures.pop(0)
        self.calls.append(call)
        self.got.set()
        ref = call.open_lead_ref or f"lead-{len(self.calls)}"
        return Delivery(ref, repeat=bool(call.open_lead_ref))

    async def find_delivered(self, call: MissedCall) -> Delivery | None:
        return self.known.get(call.linkedid)

    async def close(self) -> None:
        self.closed = True


def row(linkedid: str, caller: str = "+79123456789", outcome: str = "missed") -> CallRow:
    return CallRow(linkedid, linkedid + "1", caller, "5551000", "clean", outcome, "timeout", 100.0, 120.0, 20.0)


def lead(linkedid: str, caller: str = "+79123456789") -> dict[str, object]:
    return MissedCall(linkedid, caller, "5551000", "timeout", 100.0, 120.0, 20.0).to_json()


async def add(store: Store, linkedid: str, clock: Clock, caller: str = "+79123456789") -> bool:
    return await store.calls.record(row(linkedid, caller), lead(linkedid, caller), clock())
