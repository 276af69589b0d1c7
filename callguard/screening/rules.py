"""The verdict for one incoming call: pure, no sockets, no SQL.

Order of rules (first match wins), so an admin can predict every verdict:
1. no caller ID / withheld → ``anonymous`` (or ``spam`` when ``screening.anonymous = "block"``)
2. a local override: ``block`` → ``spam``, ``allow`` → ``whitelist`` (local lists beat the CRM)
3. the CRM cache flags the number spam → ``spam``
4. outside business hours for the DID → ``closed``
5. otherwise → ``clean``
An unparseable caller ID is ``clean`` unless ``screening.invalid = "block"``: never block a caller
because of our parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from callguard.config import DAYS, HoursConfig, Ranges, ScreeningConfig, parse_holidays, parse_week
from callguard.phone import Kind, Phone, normalise
from callguard.store.numbers import Contact, Lookup


class Verdict(StrEnum):
    SPAM = "spam"
    CLEAN = "clean"
    WHITELIST = "whitelist"
    ANONYMOUS = "anonymous"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str  # which rule decided, for logs and ``callguard check``
    contact: Contact | None = None


@dataclass(frozen=True)
class Schedule:
    """Business hours, parsed once from ``[hours]``; ``is_open`` is what ``decide`` asks."""

    enabled: bool
    tz: ZoneInfo
    days: dict[str, Ranges]
    per_did: dict[str, dict[str, Ranges]]
    holidays: frozenset[date]

    def is_open(self, did: str, now: datetime) -> bool:
        if not self.enabled:
            return True
        local = now.astimezone(self.tz)
        if local.date() in self.holidays:
            return False
        week = self.per_did.get(did, self.days)
        t = local.time()
        return any(start <= t < end for start, end in week.get(DAYS[local.weekday()], ()))


def parse_schedule(cfg: HoursConfig, region: str = "RU") -> Schedule:
    """``[hours]`` → ``Schedule``; a bad value raises ``ConfigError`` naming its key (the syntax is
    config.py's, which checks it at load). DIDs are keyed as the screener normalises them."""
    holidays = parse_holidays(cfg.holidays)
    per_did = {
        normalise(did, region).key or did: parse_week(days, f"hours.per_did.{did}")
        for did, days in cfg.per_did.items()
    }
    return Schedule(cfg.enabled, ZoneInfo(cfg.timezone), parse_week(cfg.days, "hours.days"), per_did, holidays)


def decide(
    caller: Phone,
    did: str,
    now: datetime,
    lookup: Lookup,
    policy: ScreeningConfig,
    schedule: Schedule,
) -> Decision:
    """The verdict for ``caller`` dialling ``did`` at ``now``, given what the store knows."""
    contact = lookup.contact
    if caller.kind in (Kind.ANONYMOUS, Kind.UNKNOWN):
        if policy.anonymous == "block":
            return Decision(Verdict.SPAM, f"{caller.kind.value}_blocked_by_policy")
        return _hours(Decision(Verdict.ANONYMOUS, caller.kind.value), did, now, schedule)
    if caller.kind is Kind.INVALID:
        if policy.invalid == "block":
            return Decision(Verdict.SPAM, "invalid_blocked_by_policy")
        return _hours(Decision(Verdict.CLEAN, "invalid_caller_id"), did, now, schedule)
    if lookup.override == "block":
        return Decision(Verdict.SPAM, "local_block", contact)
    if lookup.override == "allow":
        return Decision(Verdict.WHITELIST, "local_allow", contact)
    if contact is not None and contact.spam:
        return Decision(Verdict.SPAM, f"crm_spam:{contact.source}", contact)
    reason = f"crm_contact:{contact.source}" if contact is not None else "not_listed"
    return _hours(Decision(Verdict.CLEAN, reason, contact), did, now, schedule)


def _hours(decision: Decision, did: str, now: datetime, schedule: Schedule) -> Decision:
    if schedule.is_open(did, now):
        return decision
    return Decision(Verdict.CLOSED, "outside_business_hours", decision.contact)
