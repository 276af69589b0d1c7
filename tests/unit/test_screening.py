"""screening.decide: pure rules, table-tested."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from callguard.config import HoursConfig, ScreeningConfig
from callguard.errors import ConfigError
from callguard.phone import normalise
from callguard.screening.rules import Verdict, decide, parse_schedule
from callguard.store.numbers import Contact, Lookup

CLEAN_CONTACT = Contact("7", "Ivan", "Anna", False, "amocrm")
SPAM_CONTACT = Contact("9", "Robocall", "", True, "bitrix24")
MON_NOON = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 12:00 in Moscow, a Monday
MON_NIGHT = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # 23:00 in Moscow
SAT_NOON = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ALLOW = ScreeningConfig()
BLOCK_ANON = ScreeningConfig(anonymous="block", invalid="block")
OPEN = parse_schedule(HoursConfig())
HOURS = parse_schedule(
    HoursConfig(enabled=True, per_did={"84951112233": {"sat": "10:00-14:00"}}, holidays=["2026-12-31"])
)


@pytest.mark.parametrize(
    ("caller", "lookup", "policy", "schedule", "now", "verdict", "reason"),
    [
        ("+79123456789", Lookup(), ALLOW, OPEN, MON_NOON, Verdict.CLEAN, "not_listed"),
        ("+79123456789", Lookup(contact=CLEAN_CONTACT), ALLOW, OPEN, MON_NOON, Verdict.CLEAN, "crm_contact:amocrm"),
        ("+79123456789", Lookup(contact=SPAM_CONTACT), ALLOW, OPEN, MON_NOON, Verdict.SPAM, "crm_spam:bitrix24"),
        ("+79123456789", Lookup("block"), ALLOW, OPEN, MON_NOON, Verdict.SPAM, "local_block"),
        # local lists beat the CRM, both ways
        ("+79123456789", Lookup("allow", contact=SPAM_CONTACT), ALLOW, OPEN, MON_NOON, Verdict.WHITELIST,
         "local_allow"),
        ("+79123456789", Lookup("block", contact=CLEAN_CONTACT), ALLOW, OPEN, MON_NOON, Verdict.SPAM,
         "local_block"),
        ("anonymous", Lookup(), ALLOW, OPEN, MON_NOON, Verdict.ANONYMOUS, "anonymous"),
        ("", Lookup(), ALLOW, OPEN, MON_NOON, Verdict.ANONYMOUS, "unknown"),
        ("anonymous", Lookup(), BLOCK_ANON, OPEN, MON_NOON, Verdict.SPAM, "anonymous_blocked_by_policy"),
        ("garbage!", Lookup(), ALLOW, OPEN, MON_NOON, Verdict.CLEAN, "invalid_caller_id"),
        ("garbage!", Lookup(), BLOCK_ANON, OPEN, MON_NOON, Verdict.SPAM, "invalid_blocked_by_policy"),
        # business hours
        ("+79123456789", Lookup(), ALLOW, HOURS, MON_NOON, Verdict.CLEAN, "not_listed"),
        ("+79123456789", Lookup(), ALLOW, HOURS, MON_NIGHT, Verdict.CLOSED, "outside_business_hours"),
        ("+79123456789", Lookup(), ALLOW, HOURS, SAT_NOON, Verdict.CLOSED, "outside_business_hours"),
        ("anonymous", Lookup(), ALLOW, HOURS, MON_NIGHT, Verdict.CLOSED, "outside_business_hours"),
        # spam stays spam at night: it must be dropped, not treated as a missed call
        ("+79123456789", Lookup(contact=SPAM_CONTACT), ALLOW, HOURS, MON_NIGHT, Verdict.SPAM, "crm_spam:bitrix24"),
        ("+79123456789", Lookup("allow"), ALLOW, HOURS, MON_NIGHT, Verdict.WHITELIST, "local_allow"),
    ],
)
def test_decide(caller, lookup, policy, schedule, now, verdict, reason) -> None:  # type: ignore[no-untyped-def]
    decision = decide(normalise(caller), "+74950000000", now, lookup, policy, schedule)
    assert (decision.verdict, decision.reason) == (verdict, reason)


def test_per_did_week_and_holidays() -> None:
    did = normalise("84951112233").key
    assert did == "+74951112233"
    sat = decide(normalise("+79123456789"), did, SAT_NOON, Lookup(), ALLOW, HOURS)
    assert sat.verdict is Verdict.CLEAN  # 12:00 Saturday is inside that DID's 10-14
    new_year = datetime(2026, 12, 31, 9, 0, tzinfo=UTC)
    assert decide(normalise("+79123456789"), "x", new_year, Lookup(), ALLOW, HOURS).verdict is Verdict.CLOSED


def test_contact_travels_with_the_decision() -> None:
    d = decide(normalise("+79123456789"), "", MON_NOON, Lookup(contact=CLEAN_CONTACT), ALLOW, OPEN)
    assert d.contact == CLEAN_CONTACT


@pytest.mark.parametrize(
    ("days", "key"),
    [({"mon": "9-18"}, "hours.days.mon"), ({"funday": "09:00-18:00"}, "hours.days.funday"),
     ({"mon": "18:00-09:00"}, "hours.days.mon"), ({"mon": "25:00-26:00"}, "hours.days.mon")],
)
def test_bad_hours_name_the_key(days: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_schedule(dataclasses.replace(HoursConfig(), days=days))
    assert e.value.key == key


def test_whole_day_range() -> None:
    sched = parse_schedule(HoursConfig(enabled=True, days={"mon": "00:00-24:00"}))
    late = datetime(2026, 11, 23, 20, 59, 30, tzinfo=UTC)  # 23:59:30 Moscow
    assert sched.is_open("", late)
