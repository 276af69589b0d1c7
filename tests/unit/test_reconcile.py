"""Asterisk's call records (AstDB, recorded live) parsed and reconciled against the tracker's view."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callguard.ami.wire import FrameFeeder
from callguard.calls.reconcile import Action, Rules, missing_leads, plan
from callguard.calls.records import (
    CallRecord,
    Rejected,
    bucket_of,
    buckets_since,
    parse_database_show,
    parse_entry,
    parse_tree,
)
from callguard.calls.tracker import CallOutcome, CallTracker, Outcome
from callguard.config import Config
from tests.conftest import FIXTURES
from tests.fakes.asterisk_ami import EXPECTED, frames, fresh_logging, relabel  # noqa: F401 (fresh_logging: autouse)

ASTDB = FIXTURES / "astdb"
# Trace scenario → the recorded record of the same call shape (tests/fixtures/astdb was recorded anew on
# the shipped dialplan; s07a/s07b/s09b/s11 are answered queue calls like s02, s16 a queue timeout like s03).
SHAPE = {name: name for name in json.loads((ASTDB / "scenarios.json").read_text())}
SHAPE |= {"s07a_anonymous_empty_cid": "s02_clean_answered", "s07b_anonymous_cid": "s02_clean_answered",
          "s09b_redirect": "s02_clean_answered", "s11_agi_protocol_replies": "s02_clean_answered",
          "s16_queue_timeout_userevent": "s03_queue_timeout"}


def recorded() -> tuple[dict[str, CallRecord], list[Rejected]]:
    frs = FrameFeeder(expect_banner=False).feed((ASTDB / "calls.dbgettree.ami.txt").read_bytes())
    records, rejected = parse_tree(frs)
    lids = json.loads((ASTDB / "scenarios.json").read_text())
    by_lid = {r.linkedid: r for r in records}
    return {name: by_lid[lid] for name, lid in lids.items()}, rejected


RECORDS, REJECTED = recorded()


def tracked(cfg: Config, name: str) -> CallOutcome:
    tracker = CallTracker(cfg)
    (o,) = [o for f in frames(name) for o in tracker.feed(f, 1000.0)]
    return o


def test_every_recorded_entry_parses() -> None:
    assert REJECTED == [] and len(RECORDS) == 12
    s04 = RECORDS["s04_caller_abandon"]
    assert (s04.stage, s04.abandoned, s04.hangup_cause, s04.did_raw, s04.caller_raw) == (
        "queue", True, "19", "5551000", "+15551230003")
    assert 3.9 < s04.ended_at - s04.started_at < 4.1  # the caller gave up after the originate's 4 s


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_record_says_what_the_tracker_says_of_the_trace(cfg: Config, name: str) -> None:
    o = tracked(cfg, name)
    (d,) = plan([RECORDS[SHAPE[name]]], set(), set()).decisions
    assert (d.outcome.outcome, d.outcome.reason) == (o.outcome, o.reason)
    assert d.is_lead == o.is_lead and d.action is Action.CREATE
    if d.is_lead:
        (lead,) = plan([RECORDS[SHAPE[name]]], set(), set()).leads
        assert lead.reconciled and lead.reason == o.reason and lead.linkedid == RECORDS[SHAPE[name]].linkedid


def test_s21_inbound_part_is_an_abandon_like_s04(cfg: Config) -> None:
    # s21's inbound call: queue_log ABANDON after 6 s, CDR NO ANSWER; its record shape is s04's
    assert "ABANDON|1|1|6" in (FIXTURES / "traces" / "s21_missed_then_callback.queue_log").read_text()
    (lead,) = plan([RECORDS["s04_caller_abandon"]], set(), set()).leads
    assert lead.reason == "abandoned" and lead.caller == "+15551230003" and lead.did == "5551000"


@pytest.mark.parametrize(("name", "reason"), [("x_after_hours", "after_hours"), ("x_dial_answered", "dial")])
def test_extra_recorded_endings(name: str, reason: str) -> None:
    (d,) = plan([RECORDS[name]], set(), set()).decisions
    assert d.outcome.reason == reason and d.is_lead == (reason == "after_hours")


def test_settled_and_open_calls_are_never_created_again() -> None:
    recs = list(RECORDS.values())
    lids = [r.linkedid for r in recs]
    p = plan(recs, settled=set(lids[:4]), open_=set(lids[4:8]))
    actions = {d.outcome.linkedid: d.action for d in p.decisions}
    assert all(actions[lid] is Action.RECORDED for lid in lids[:4])
    assert all(actions[lid] is Action.IN_PROGRESS for lid in lids[4:8])
    assert {lead.linkedid for lead in p.leads} <= set(lids[8:])


def test_one_decision_per_linkedid_and_answered_wins() -> None:
    missed = RECORDS["s04_caller_abandon"]
    answered = dataclasses.replace(RECORDS["s02_clean_answered"], linkedid=missed.linkedid, ended_at=0.0)
    p = plan([missed, answered, missed], set(), set())
    assert len(p.decisions) == 1 and p.leads == [] and p.decisions[0].why == "answered by a person"


def test_min_ring_and_since() -> None:
    rec = RECORDS["s10_short_hangup_before_queue"]  # 5 s
    assert plan([rec], set(), set(), rules=Rules(min_ring=6.0)).decisions[0].outcome.outcome is Outcome.SHORT
    assert plan([rec], set(), set(), since=rec.ended_at + 1).decisions == []


def test_a_record_that_does_not_say_why_is_never_a_lead() -> None:
    rec = dataclasses.replace(RECORDS["s04_caller_abandon"], abandoned=False)  # a queue left without a word
    (d,) = plan([rec], set(), set()).decisions
    assert (d.outcome.outcome, d.outcome.reason, d.is_lead) == (Outcome.LOST, "record_unclear", False)


def _entry(name: str) -> tuple[str, str]:
    frs = FrameFeeder(expect_banner=False).feed((ASTDB / "calls.dbgettree.ami.txt").read_bytes())
    lid = RECORDS[name].linkedid
    f = next(f for f in frs if f.get("Key", "").endswith("/" + lid))
    return f["Key"], f["Val"]


@pytest.mark.parametrize(("field", "bad", "why"), [
    (0, "2", "fields"), (2, "soon", "time"), (4, "maybe", "word"), (5, "ivr", "word"), (6, "time out", "word"),
    (11, "%%%", "text"), (9, "x", "time"),
])
def test_garbled_entries_are_rejected_with_why(field: int, bad: str, why: str) -> None:
    key, val = _entry("s04_caller_abandon")
    parts = val.split("|")
    parts[field] = bad
    got = parse_entry(key, "|".join(parts))
    assert isinstance(got, Rejected) and got.why == why
    assert isinstance(parse_entry("/callguard/calls/999/x", val), Rejected)
    assert isinstance(parse_entry(key, val + "|extra"), Rejected)


def test_database_show_lines() -> None:
    key, val = _entry("s03_queue_timeout")
    text = f"{key}                       : {val}\n/callguard/calls/101/1.2 : junk\n2 results found.\n"
    records, rejected = parse_database_show(text)
    assert [r.queue_status for r in records] == ["TIMEOUT"] and [r.why for r in rejected] == ["fields"]


def test_buckets_cover_the_window() -> None:
    now = RECORDS["s02_clean_answered"].ended_at
    assert buckets_since(now - 3 * 3600, now)[-1] == f"callguard/calls/{bucket_of(now)}"
    assert len(buckets_since(now - 3 * 3600, now)) == 4
    assert len(buckets_since(0.0, now)) == 166  # never more than the week AstDB keeps


@given(st.text(max_size=300), st.text(max_size=600))
def test_any_entry_never_raises(key: str, value: str) -> None:
    assert isinstance(parse_entry(key, value), CallRecord | Rejected)


@given(st.binary(max_size=2000))
def test_any_bytes_never_raise(data: bytes) -> None:
    records, rejected = parse_database_show(data.decode("latin-1"))
    assert all(isinstance(r, CallRecord) for r in records) and all(isinstance(r, Rejected) for r in rejected)
    key, _ = _entry("s02_clean_answered")
    parse_entry(key, data.decode("utf-8", errors="replace"))
    parse_tree([{"Event": "DBGetTreeResponse", "Key": key, "Val": data.decode("latin-1")}])


# --- a cut AMI stream + reconciliation: exactly the expected leads ------------------------------------------

SCENARIOS = sorted(EXPECTED)


def _inbound_hangup(frs: list[dict[str, str]], lid: str) -> int:
    return max(i for i, f in enumerate(frs) if f.get("Event") == "Hangup" and f.get("Linkedid") == lid)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.sampled_from(SCENARIOS), min_size=1, max_size=4), seed=st.randoms(use_true_random=False),
       cut=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_any_cut_and_interleaving_gives_exactly_the_missed_leads(
    cfg: Config, picks: list[str], seed: random.Random, cut: tuple[float, float],
) -> None:
    calls = [relabel(frames(n), f"-{i}") for i, n in enumerate(picks)]
    full = [tracked_of(cfg, c) for c in calls]
    records = [dataclasses.replace(RECORDS[SHAPE[n]], linkedid=o.linkedid, uniqueid=o.uniqueid)
               for n, o in zip(picks, full, strict=True)]
    stream = _interleave(calls, seed)
    i, j = sorted(int(x * len(stream)) for x in cut)
    tracker, ended = CallTracker(cfg), {}
    for f in stream[:i]:
        ended |= {o.linkedid: o for o in tracker.feed(f, 1000.0)}
    tracker.link_lost()  # the link dropped at i; events i..j are gone; reconnect and reconcile at j
    ready = [r for r in records if _inbound_hangup(stream, r.linkedid) < j]
    open_ = set(tracker._calls)
    at_reconnect = missing_leads(ended, open_, ready)
    for f in stream[j:]:
        ended |= {o.linkedid: o for o in tracker.feed(f, 1000.0)}
    ended |= {o.linkedid: o for o in tracker.drain(1000.0)}
    created = {lead.linkedid for lead in at_reconnect}
    settled = {lid for lid, o in ended.items() if o.outcome is not Outcome.LOST} | created
    final = plan(records, settled, set()).leads  # the recorder's pass for every call that ended lost
    leads = [o.linkedid for o in ended.values() if o.is_lead] + [x.linkedid for x in at_reconnect + final]
    reasons = {o.linkedid: o.reason for o in full}
    want = {o.linkedid for o in full if o.is_lead}
    assert sorted(leads) == sorted(want)  # each missed call exactly once, nothing else
    assert all(x.reason == reasons[x.linkedid] and x.reconciled for x in at_reconnect + final)


def tracked_of(cfg: Config, frs: list[dict[str, str]]) -> CallOutcome:
    tracker = CallTracker(cfg)
    (o,) = [o for f in frs for o in tracker.feed(f, 1000.0)]
    return o


def _interleave(calls: list[list[dict[str, str]]], rnd: random.Random) -> list[dict[str, str]]:
    pos = [0] * len(calls)
    out = []
    while any(p < len(c) for p, c in zip(pos, calls, strict=True)):
        k = rnd.choice([n for n, c in enumerate(calls) if pos[n] < len(c)])
        out.append(calls[k][pos[k]])
        pos[k] += 1
    return out
