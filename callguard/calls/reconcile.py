"""Reconciliation, pure: Asterisk's call records (records.py) against what callguard recorded.

Given the records of the calls that ended since T, the Linkedids callguard already settled (a calls row,
or an outcome the tracker produced from complete events) and the Linkedids still in progress, ``plan``
says for every call what to do: create it (a lead when it was missed, ``reconciled=True``), or nothing
because callguard has it already or it is not over. Keyed by Linkedid, so:

- a call a person answered never becomes a lead (``answered_at`` or ``DIALSTATUS=ANSWER`` wins over all);
- one Linkedid gives at most one decision, however many entries carry it;
- a Linkedid callguard settled, or still tracks, is never created again.

A record that does not say why the call ended (a route of the admin's own after ``Return(pass)``, a queue
left without status) is ``lost`` with the reason ``record_unclear``: reported by ``--dry-run``, never a lead.
Reasons and their words are the tracker's (calls.py ``QUEUE_REASONS``/``DIAL_REASONS``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from callguard.calls.records import CallRecord, Rejected
from callguard.calls.tracker import DIAL_REASONS, QUEUE_REASONS, CallOutcome, Outcome
from callguard.leads.model import MissedCall
from callguard.phone import normalise
from callguard.store.screens import ScreenRecord


class Action(StrEnum):
    CREATE = "create"  # callguard has no settled outcome for it: write the call (and the lead if missed)
    RECORDED = "recorded"  # callguard already has it: nothing to do
    IN_PROGRESS = "in_progress"  # the tracker still follows it: its end will come over AMI


WHY = {
    Outcome.ANSWERED: "answered by a person",
    Outcome.SPAM: "spam: screened and rejected",
    Outcome.SHORT: "shorter than missed.min_ring_seconds",
    Outcome.LOST: "the record does not say why it ended",
    Outcome.MISSED: "missed",
}


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: CallOutcome
    action: Action

    @property
    def is_lead(self) -> bool:
        return self.action is Action.CREATE and self.outcome.is_lead

    @property
    def why(self) -> str:
        if self.action is not Action.CREATE:
            return "already recorded by callguard" if self.action is Action.RECORDED else "still in progress"
        return WHY[self.outcome.outcome]

    def to_missed(self) -> MissedCall:
        return dataclasses.replace(self.outcome.to_missed(), reconciled=True)


@dataclass(frozen=True, slots=True)
class Plan:
    decisions: list[Decision]
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def leads(self) -> list[MissedCall]:
        return [d.to_missed() for d in self.decisions if d.is_lead]

    @property
    def to_create(self) -> list[CallOutcome]:
        """Every call row to write (missed ones with their lead; answered/spam/short ones for the record)."""
        return [d.outcome for d in self.decisions if d.action is Action.CREATE]


@dataclass(frozen=True, slots=True)
class Rules:
    min_ring: float = 0.0  # missed.min_ring_seconds
    region: str = "RU"  # phone.default_region
    ext_digits: int = 5  # phone.max_extension_digits


def classify(rec: CallRecord) -> tuple[Outcome, str]:
    """(outcome, reason) of one record, in the tracker's words; SHORT is left to ``outcome_of``."""
    if rec.answered_at is not None or rec.dial_status == "ANSWER":
        return Outcome.ANSWERED, "queue" if rec.stage == "queue" else "dial"
    if rec.verdict == "spam":
        return Outcome.SPAM, "screened"
    if rec.verdict == "closed" or rec.stage == "closed":
        return Outcome.MISSED, "after_hours"
    if rec.stage == "screen":
        return Outcome.MISSED, "hangup_before_queue"
    if rec.stage == "queue":
        # app_queue sets ABANDONED=TRUE on a timeout too (seen live): the status Queue() returned comes first;
        # a caller who hung up in the queue never lets the dialplan read one.
        if rec.queue_status in QUEUE_REASONS:
            return Outcome.MISSED, QUEUE_REASONS[rec.queue_status]
        if rec.abandoned:
            return Outcome.MISSED, "abandoned"
    if rec.stage == "dial" and rec.dial_status in DIAL_REASONS:
        return Outcome.MISSED, DIAL_REASONS[rec.dial_status]
    return Outcome.LOST, "record_unclear"


def outcome_of(rec: CallRecord, rules: Rules, screen: ScreenRecord | None = None) -> CallOutcome:
    outcome, reason = classify(rec)
    if outcome is Outcome.MISSED and rec.ended_at - rec.started_at < rules.min_ring:
        outcome = Outcome.SHORT
    waited_until = rec.answered_at if rec.answered_at is not None else rec.ended_at
    caller = screen.caller if screen else normalise(rec.caller_raw, rules.region, rules.ext_digits).display
    did = screen.did if screen else (normalise(rec.did_raw, rules.region, rules.ext_digits).key or rec.did_raw)
    return CallOutcome(
        linkedid=rec.linkedid, uniqueid=rec.uniqueid, caller=caller, did=did,
        verdict=screen.verdict if screen else rec.verdict, outcome=outcome, reason=reason,
        started_at=rec.started_at, ended_at=rec.ended_at,
        wait_s=round(min(max(0.0, waited_until - rec.started_at), rec.ended_at - rec.started_at), 3),
    )


def merge(records: Iterable[CallRecord]) -> dict[str, CallRecord]:
    """One record per Linkedid: an answered one if any (never a lead then), else the last to end."""
    out: dict[str, CallRecord] = {}
    for rec in records:
        have = out.get(rec.linkedid)
        if have is None or _rank(rec) > _rank(have):
            out[rec.linkedid] = rec
    return out


def plan(
    records: Iterable[CallRecord], settled: Container[str], open_: Container[str], *, rules: Rules | None = None,
    screens: Mapping[str, ScreenRecord] | None = None, since: float = 0.0, rejected: Iterable[Rejected] = (),
    lost: Container[str] = (),
) -> Plan:
    """What to do with every call in ``records`` that ended at or after ``since``, oldest first.
    ``settled``/``open_``: Linkedids callguard recorded / still tracks; ``lost``: recorded as lost (its
    events had a hole): created again only when the record says more than "lost"; ``screens``: by caller
    Uniqueid."""
    rules = rules or Rules()
    screens = screens or {}
    decisions = []
    for lid, rec in sorted(merge(records).items(), key=lambda kv: (kv[1].ended_at, kv[0])):
        if rec.ended_at < since:
            continue
        outcome = outcome_of(rec, rules, screens.get(rec.uniqueid))
        if lid in settled or (lid in lost and outcome.outcome is Outcome.LOST):
            action = Action.RECORDED
        else:
            action = Action.IN_PROGRESS if lid in open_ else Action.CREATE
        decisions.append(Decision(outcome, action))
    return Plan(decisions, list(rejected))


def missing_leads(
    ended: Mapping[str, CallOutcome], open_: Container[str], records: Iterable[CallRecord],
    rules: Rules | None = None,
) -> list[MissedCall]:
    """After a gap: the leads the tracker could not make. ``ended``: every outcome the tracker gave, by
    Linkedid (a ``lost`` one is not settled: its events had a hole, the record decides); ``open_``: the
    calls it still tracks. The tracker's own missed calls are not repeated."""
    settled = {lid for lid, o in ended.items() if o.outcome is not Outcome.LOST}
    return plan(records, settled, open_, rules=rules).leads


def _rank(rec: CallRecord) -> tuple[bool, float]:
    return classify(rec)[0] is Outcome.ANSWERED, rec.ended_at
