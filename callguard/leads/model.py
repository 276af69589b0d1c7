"""What a missed call hands to a lead sink, and the interface every sink implements.

The outbox (``outbox.py``) owns durability and retries; a sink only turns one ``MissedCall`` into one
lead (or one note on an open lead) in its system. Sinks: ``log`` and ``webhook`` (``sinks.py``) and the
CRM adapters (``crm/sink.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class MissedCall:
    linkedid: str  # idempotency key: one lead per Linkedid, ever
    caller: str  # E.164 when the caller ID was a number, else what Asterisk sent ("anonymous", …)
    did: str  # the number dialled (advertising source)
    reason: str  # abandoned | timeout | no_agents | after_hours | no_answer | busy | hangup_before_queue
    started_at: float  # unix time
    ended_at: float
    wait_s: float
    caller_name: str = ""
    contact_id: str = ""  # CRM contact id when the screen found one
    # Set by the outbox for a repeat miss inside missed.dedupe_window: the open lead to add to.
    open_lead_ref: str = ""
    misses: int = 1  # how many misses this lead now counts, this one included
    reconciled: bool = False  # rebuilt from Asterisk's own record after a gap (callguard/calls/reconcile.py)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MissedCall:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Delivery:
    ref: str  # the lead's id in the sink (CRM lead id, webhook response id, "log:<linkedid>")
    repeat: bool = False  # True when the miss was added to an open lead instead of a new one


class LeadSink(Protocol):
    name: str

    async def deliver(self, call: MissedCall) -> Delivery:
        """Create a lead, or add to ``call.open_lead_ref`` when set. Raise ``SinkError(permanent=…)``
        or a ``CrmError`` subclass on failure; the outbox decides retry vs dead letter."""
        ...

    async def find_delivered(self, call: MissedCall) -> Delivery | None:
        """After a crash mid-delivery: the lead this Linkedid already made, if the sink can tell."""
        ...

    async def close(self) -> None: ...
