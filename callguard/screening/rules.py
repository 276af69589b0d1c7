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

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo

from callguard.config import HoursConfig, ScreeningConfig
from callguard.errors import ConfigError
from callguard.phone import Kind, Phone
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


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Ranges = tuple[tuple[time, time], ...]


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


def _parse_ranges(text: str, key: str) -> Ranges:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _RANGE.match(part)
        if not m:
            raise ConfigError(f"expected 'HH:MM-HH:MM', got {part!r}", key)
        h1, m1, h2, m2 = map(int, m.groups())
        if h2 == 24 and m2 == 0:
            h2, m2 = 23, 59  # "…-24:00" means to the end of the day
        try:
            start, end = time(h1, m1), time(h2, m2, 59 if (h2, m2) == (23, 59) else 0)
        except ValueError as e:
            raise ConfigError(f"bad time in {part!r}", key) from e
        if end <= start:
            raise ConfigError(f"range ends before it starts: {part!r}", key)
        out.append((start, end))
    return tuple(out)


def _parse_week(days: dict[str, str], key: str) -> dict[str, Ranges]:
    week = {}
    for day, text in days.items():
        if day not in DAYS:
            raise ConfigError(f"unknown day {day!r} (use {', '.join(DAYS)})", f"{key}.{day}")
        week[day] = _parse_ranges(text, f"{key}.{day}")
    return week


def parse_schedule(cfg: HoursConfig, region: str = "RU") -> Schedule:
    from callguard.phone import normalise

    holidays = set()
    for i, text in enumerate(cfg.holidays):
        try:
            holidays.add(date.fromisoformat(text))
        except ValueError as e:
            raise ConfigError(f"expected YYYY-MM-DD, got {text!r}", f"hours.holidays[{i}]") from e
    per_did = {}
    for did, days in cfg.per_did.items():
        key = normalise(did, region).key or did
        per_did[key] = _parse_week(days, f"hours.per_did.{did}")
    return Schedule(
        enabled=cfg.enabled,
        tz=ZoneInfo(cfg.timezone),
        days=_parse_week(cfg.days, "hours.days"),
        per_did=per_did,
        holidays=frozenset(holidays),
    )


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
