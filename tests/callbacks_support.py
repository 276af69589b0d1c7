"""Shared builders for the call-back tests: a roster on the lab's queue members, a fake clock."""

from __future__ import annotations

from callguard.callbacks.events import LeadSeen
from callguard.callbacks.settings import CallbackConfig, HeadConfig, ManagerConfig
from callguard.errors import CrmUnavailableError
from callguard.store import Store
from callguard.store.calls import CallRow
from tests.fakes.asterisk_ami import frames

ALL_DAY = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
T0 = 1796114370.0  # 2026-12-01 09:19:30 UTC, the day s18–s21 were recorded (a Tuesday)


def lab_config(**kw: object) -> CallbackConfig:
    """Agent101/Agent102 of the recorded lab (``Local/10X@agents``), on duty around the clock."""
    managers = [ManagerConfig(name="Ivan", crm_user_id=101, devices=["Local/101@agents"], days=ALL_DAY),
                ManagerConfig(name="Petr", crm_user_id=102, devices=["Local/102@agents"], days=ALL_DAY)]
    base: dict[str, object] = {"enabled": True, "managers": managers, "head": HeadConfig("Olga", 7)}
    base.update(kw)
    return CallbackConfig(**base)  # type: ignore[arg-type]


CUSTOMER = "+79035550142"  # the number s18–s21 call back
LINKEDID = "1796114370.100"


class RecordingCrm:
    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, float | None]] = []
        self.failing = 0
        self.reads_failing = 0  # the next reads of the lead fail (a CRM outage seen by the read alone)
        self.status = "NEW"  # the lead as the CRM shows it
        self.responsible = 0
        self.found = True
        self.reads = 0
        self.texts: list[str] = []

    def _maybe_fail(self) -> None:
        if self.failing:
            self.failing -= 1
            raise CrmUnavailableError("fake outage")

    async def set_responsible(self, lead_ref: str, user_id: int) -> None:
        self._maybe_fail()
        self.calls.append(("responsible", lead_ref, user_id, None))
        self.responsible = user_id

    async def create_task(self, lead_ref: str, user_id: int, due: float, text: str) -> str:
        self._maybe_fail()
        self.calls.append(("task", lead_ref, user_id, due))
        self.texts.append(text)
        return str(len(self.calls))

    async def find_task(self, lead_ref: str, marker: str) -> str | None:
        return next((str(i) for i, t in enumerate(self.texts) if marker in t), None)

    async def read_lead(self, lead_ref: str) -> LeadSeen:
        if self.reads_failing:
            self.reads_failing -= 1
            raise CrmUnavailableError("fake outage (read)")
        self.reads += 1
        return LeadSeen(self.status, self.responsible, self.found)

    def responsibles(self) -> list[int]:
        return [u for kind, _, u, _ in self.calls if kind == "responsible"]


def member(name: str, device: str, status: str = "1", paused: str = "0") -> dict[str, str]:
    """The recorded QueueStatus list item (s22) for another member of the lab queue."""
    item = next(f for f in frames("s22_queue_member_added_removed") if f.get("Event") == "QueueMember")
    return {**item, "Name": name, "Location": device, "StateInterface": device, "Status": status,
            "Paused": paused}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def deliver_lead(store: Store, linkedid: str, at: float, ref: str = "lead-77", misses: int = 1,
                       caller: str = CUSTOMER) -> None:
    row = CallRow(linkedid, linkedid, caller, "5551000", "clean", "missed", "abandoned", at - 6, at, 6.0)
    lead = {"linkedid": linkedid, "caller": caller, "did": "5551000", "reason": "abandoned",
            "started_at": at - 6, "ended_at": at, "wait_s": 6.0, "misses": misses}
    assert await store.calls.record(row, lead, at)
    await store.outbox.mark_sent(linkedid, ref, at + 0.5, None)
