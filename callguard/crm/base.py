"""What every CRM adapter shares: the ``CRM`` protocol, ``CrmContact`` and the listing shapes.

The adapters import this module, never the package (``callguard.crm`` builds the adapters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from callguard.phone import to_e164

if TYPE_CHECKING:
    from callguard.leads.model import MissedCall


@dataclass(frozen=True, slots=True)
class LeadSeen:
    """A read of the lead in the CRM (amoCRM ``status_id``/``responsible_user_id``, Bitrix24
    ``STATUS_ID``/``ASSIGNED_BY_ID``); ``found`` False: the CRM no longer has it. The call-back loop
    (callbacks/events.py) compares it with what it recorded at the assignment."""

    status: str = ""
    responsible: int = 0
    found: bool = True


class CrmContact(NamedTuple):
    """A NamedTuple, not a dataclass: a full sync moves a million of these into
    ``store.numbers.write_contacts`` (whose ``ContactRows`` it is, as is), and with the opt-in page
    parser process (crm.offload) a tuple crosses the process boundary several times cheaper."""

    contact_id: str
    name: str
    owner: str  # responsible user id in the CRM
    spam: bool
    phones: tuple[str, ...]  # E.164, deduplicated, in CRM order


@dataclass(frozen=True, slots=True)
class Page:
    contacts: list[CrmContact]
    next_token: str | None  # opaque resume point of a full listing; None at the end


@dataclass(frozen=True, slots=True)
class Changes:
    contacts: list[CrmContact]
    deleted: list[str]  # contact ids the CRM reports deleted
    cursor: str  # where the next incremental listing starts
    more: bool  # another batch is waiting right away


@dataclass(frozen=True, slots=True)
class LeadRef:
    lead_id: str
    contact_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class CRM(Protocol):
    kind: str  # "amocrm" | "bitrix24"; also the ``source`` of cached numbers
    # True when the full listing pages by key (Bitrix24 ``>ID``), so a deletion mid-run cannot shift
    # pages; False for offset pages (amoCRM ``page=N``), where the sync re-reads purge candidates.
    stable_paging: bool

    def cursor_at(self, ts: float) -> str:
        """An incremental cursor that starts at unix time ``ts``."""
        ...

    async def list_page(self, token: str | None) -> Page:
        """One page of the full contact listing, in a stable order; ``token=None`` starts over."""
        ...

    async def list_changed(self, cursor: str) -> Changes:
        """Contacts changed (and deleted, where the CRM can tell) since ``cursor``; ``""`` = from now."""
        ...

    async def get_contacts(self, contact_ids: Sequence[str]) -> list[CrmContact]:
        """Re-read contacts by id; ids the CRM no longer has are simply absent."""
        ...

    async def find_by_phone(self, e164: str) -> list[CrmContact]:
        """Contacts whose PHONE values, normalised, equal ``e164`` exactly."""
        ...

    async def create_lead(self, call: MissedCall, contact: CrmContact | None) -> LeadRef:
        """A missed-call lead carrying ``call.linkedid`` as its marker, linked to ``contact``."""
        ...

    async def add_call_note(self, lead_id: str, call: MissedCall) -> None:
        """A missed-call note on an open lead, carrying ``call.linkedid`` as its marker."""
        ...

    async def find_lead(self, call: MissedCall) -> LeadRef | None:
        """The lead an earlier attempt for ``call.linkedid`` created, if any."""
        ...

    async def find_call_note(self, lead_id: str, call: MissedCall) -> bool:
        """Whether the note for ``call.linkedid`` is already on ``lead_id``."""
        ...

    async def verify(self) -> str:
        """Check credentials and the spam field; a one-line summary, or CrmAuthError/CrmError."""
        ...

    async def close(self) -> None: ...


def unique_phones(values: Sequence[object], region: str) -> tuple[str, ...]:
    out: list[str] = []
    for raw in values:
        e164 = to_e164(raw, region)
        if e164 and e164 not in out:
            out.append(e164)
    return tuple(out)


class WebhookRejected(Exception):
    """A CRM webhook delivery refused by its adapter's parser: ``status`` is the HTTP answer (401 not
    authenticated, 400 malformed), ``reason`` the short label logged and counted."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)
