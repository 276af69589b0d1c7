"""The call tracker fed the recorded Asterisk 22 streams: outcomes, reasons, ties, bounds."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callguard.ami.wire import Frame, FrameFeeder
from callguard.calls.tracker import CallOutcome, CallTracker, Outcome
from callguard.config import Config
from callguard.store.screens import ScreenRecord
from tests.fakes.asterisk_ami import CALLERS, EXPECTED, frames, fresh_logging, relabel, timed_chunks  # noqa: F401 (fresh_logging: autouse)

DID = {"s13_ringgroup_noanswer": "5552000", "s14_direct_busy": "5553000"}


def run(cfg: Config, frs: list[Frame], now: float = 1000.0) -> tuple[CallTracker, list[CallOutcome]]:
    tracker = CallTracker(cfg)
    out: list[CallOutcome] = []
    for f in frs:
        out.extend(tracker.feed(f, now))
    return tracker, out


def run_timed(cfg: Config, name: str) -> list[CallOutcome]:
    tracker, feeder, out = CallTracker(cfg), FrameFeeder(), []
    for t, chunk in timed_chunks(name):
        for f in feeder.feed(chunk):
            out.extend(tracker.feed(f, 5000.0 + t))
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_scenario_outcome(cfg: Config, name: str) -> None:
    tracker, out = run(cfg, frames(name))
    assert [(o.outcome.value, o.reason) for o in out] == [EXPECTED[name]]
    o = out[0]
    assert o.did == DID.get(name, "5551000")
    if name in CALLERS:
        assert o.caller == CALLERS[name]
    assert o.is_lead == (o.outcome is Outcome.MISSED)
    assert len(tracker) == 0 and not tracker._chan  # nothing left behind


@pytest.mark.parametrize(
    ("name", "wait"),
    [("s03_queue_timeout", 20.0), ("s04_caller_abandon", 7.0), ("s10_short_hangup_before_queue", 2.0),
     ("s13_ringgroup_noanswer", 15.0), ("s02_clean_answered", 2.0)],
)
def test_wait_seconds_from_recorded_timing(cfg: Config, name: str, wait: float) -> None:
    (o,) = run_timed(cfg, name)
    assert o.wait_s == pytest.approx(wait, abs=0.2)
    assert o.ended_at >= o.started_at


def test_min_ring_seconds_makes_short_calls(cfg: Config) -> None:
    cfg = dataclasses.replace(cfg, missed=dataclasses.replace(cfg.missed, min_ring_seconds=5.0))
    (s10,) = run_timed(cfg, "s10_short_hangup_before_queue")
    (s04,) = run_timed(cfg, "s04_caller_abandon")
    assert (s10.outcome, s10.reason) == (Outcome.SHORT, "hangup_before_queue")
    assert not s10.is_lead
    assert (s04.outcome, s04.reason) == (Outcome.MISSED, "abandoned")


def test_uniqueid_is_the_screened_channel(cfg: Config) -> None:
    # agi_uniqueid in s01_spam_blocked.agi.txt is the ;2 channel
    (o,) = run(cfg, frames("s01_spam_blocked"))[1]
    assert o.uniqueid == "1795435926.87"
    assert o.linkedid == "1795435926.86"


def _strip_dialplan(frs: list[Frame]) -> list[Frame]:
    return [f for f in frs if not f.get("Privilege", "").startswith("dialplan")]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_without_dialplan_class_screens_come_from_agi(cfg: Config, name: str) -> None:
    """A manager user without ``read=dialplan``: no VarSet. The verdict comes from the screen service."""
    frs = _strip_dialplan(frames(name))
    verdict = next((f["Value"] for f in frames(name) if f.get("Variable") == "CALLGUARD_VERDICT"), "")
    uid = next((f["Uniqueid"] for f in frames(name) if f.get("Variable") == "CALLGUARD_VERDICT"), "")
    tracker = CallTracker(cfg)
    if verdict:  # the AGI answer came before the AMI events were read: held until the channel shows up
        tracker.screen(ScreenRecord(uid, 1.0, "+15550000000", "5551000", verdict, "test", 1.0))
    out = [o for f in frs for o in tracker.feed(f, 1000.0)]
    expected = EXPECTED[name]
    if name == "s05_queue_no_members":
        # JOINEMPTY only showed as VarSet in this (older) recording; the shipped dialplan adds a UserEvent
        expected = ("missed", "hangup_before_queue")
    assert [(o.outcome.value, o.reason) for o in out] == [expected]
    if verdict:
        assert out[0].caller == "+15550000000" and out[0].verdict == verdict


def test_spam_by_hangup_cause_when_no_verdict_is_known(cfg: Config) -> None:
    frs = [f for f in frames("s01_spam_blocked") if f.get("Variable") != "CALLGUARD_VERDICT"]
    (o,) = run(cfg, frs)[1]
    assert o.outcome is Outcome.SPAM


def test_screen_after_channel_seen_sets_verdict(cfg: Config) -> None:
    frs = [f for f in frames("s05_queue_no_members") if f.get("Variable") != "CALLGUARD_VERDICT"]
    tracker = CallTracker(cfg)
    out: list[CallOutcome] = []
    for f in frs:
        out.extend(tracker.feed(f, 1.0))
        if f.get("Event") == "AGIExecStart":
            tracker.screen(ScreenRecord(f["Uniqueid"], 1.0, "+15551230004", "5551000", "closed", "hours", 1.0))
    assert [(o.outcome, o.reason, o.verdict) for o in out] == [(Outcome.MISSED, "after_hours", "closed")]


def test_closed_userevent_is_after_hours(cfg: Config) -> None:
    frs = frames("s10_short_hangup_before_queue")
    i = next(i for i, f in enumerate(frs) if f.get("Event") == "AGIExecEnd")
    closed = dict(frs[i], Event="UserEvent", UserEvent="CallguardClosed", DID="5551000")
    (o,) = run(cfg, [*frs[:i], closed, *frs[i:]])[1]
    assert (o.outcome, o.reason) == (Outcome.MISSED, "after_hours")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_call_first_seen_mid_way_is_never_a_lead(cfg: Config, name: str) -> None:
    """The AMI link came back, or callguard (re)started, after the call began: whatever was missed (its
    AgentConnect, say) the call must not become a lead. Tried at every cut after its first channel."""
    frs = frames(name)
    first = next(i for i, f in enumerate(frs) if f.get("Event") == "Newchannel")
    for cut in range(first + 1, len(frs)):
        tracker = CallTracker(cfg)
        out = [o for f in frs[cut:] for o in tracker.feed(f, 1000.0)]
        out += tracker.expire(1000.0 + cfg.calls.stale_after + 1)
        assert [o for o in out if o.is_lead] == [], (name, cut, frs[cut].get("Event"))
        assert all(o.outcome in (Outcome.LOST, Outcome.SPAM, Outcome.ANSWERED) for o in out)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_call_that_reaches_the_inbound_context_by_goto(cfg: Config, name: str) -> None:
    """A PBX whose trunk context (here: the channel's Newchannel context) does Goto(callguard-inbound):
    the call is followed from the Goto on, and started when its first channel appeared."""
    cfg = dataclasses.replace(cfg, ami=dataclasses.replace(cfg.ami, inbound_contexts=["callguard-inbound"]))
    frs = [f if f.get("Event") == "Newchannel" or f.get("Context") != "from-trunk"
           else {**f, "Context": "callguard-inbound"} for f in frames(name)]
    tracker = CallTracker(cfg)
    out = []
    for i, f in enumerate(frs):
        out.extend(tracker.feed(f, 1000.0 + i))
    assert [(o.outcome.value, o.reason) for o in out] == [EXPECTED[name]]
    first = next(i for i, f in enumerate(frs) if f.get("Event") == "Newchannel")
    assert out[0].started_at == 1000.0 + first


def test_link_lost_mid_call_never_makes_a_lead(cfg: Config) -> None:
    frs = frames("s03_queue_timeout")
    half = len(frs) // 2
    tracker, out = run(cfg, frs[:half])
    assert out == [] and len(tracker) == 1
    tracker.link_lost()
    out = [o for f in frs[half:] for o in tracker.feed(f, 1001.0)]
    assert [(o.outcome, o.reason) for o in out] == [(Outcome.LOST, "events_lost")]


def test_stale_calls_expire_and_late_events_start_nothing(cfg: Config) -> None:
    frs = frames("s04_caller_abandon")
    cut = next(i for i, f in enumerate(frs) if f.get("Event") == "QueueCallerAbandon")
    tracker, out = run(cfg, frs[:cut], now=0.0)
    assert out == []
    expired = tracker.expire(cfg.calls.stale_after + 1)
    assert [(o.outcome, o.reason) for o in expired] == [(Outcome.LOST, "stale")]
    late = [o for f in frs[cut:] for o in tracker.feed(f, cfg.calls.stale_after + 2)]
    assert late == [] and len(tracker) == 0


def test_max_calls_bounds_memory(cfg: Config) -> None:
    cfg = dataclasses.replace(cfg, calls=dataclasses.replace(cfg.calls, max_calls=5))
    frs = frames("s03_queue_timeout")
    cut = next(i for i, f in enumerate(frs) if f.get("Event") == "QueueCallerJoin")
    tracker = CallTracker(cfg)
    lost = []
    for k in range(20):
        for f in relabel(frs[:cut], f"-{k}"):
            lost.extend(tracker.feed(f, 1.0))
    lost.extend(tracker.expire(1.0))
    assert len(tracker) == 5
    assert len(lost) == 15 and {o.reason for o in lost} == {"overflow"}


def test_events_for_other_contexts_are_ignored(cfg: Config) -> None:
    cfg = dataclasses.replace(cfg, ami=dataclasses.replace(cfg.ami, inbound_contexts=["callguard-inbound"]))
    tracker, out = run(cfg, frames("s03_queue_timeout"))
    assert out == [] and len(tracker) == 0 and tracker.ignored > 0


# --- hypothesis: overlapping calls, garbage frames --------------------------------------------------

SCENARIOS = sorted(EXPECTED)
GARBAGE = st.dictionaries(
    st.sampled_from(["Event", "Linkedid", "Uniqueid", "Context", "Variable", "Value", "Cause", "Timestamp",
                     "UserEvent", "Status", "DialStatus", "Exten", "CallerIDNum", "x"]),
    st.text(max_size=12) | st.sampled_from(["from-trunk", "Hangup", "VarSet", "AgentConnect", "21", "nan"]),
    max_size=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.sampled_from(SCENARIOS), min_size=1, max_size=5), seed=st.randoms(use_true_random=False))
def test_interleaved_calls_keep_their_outcomes(cfg: Config, picks: list[str], seed: object) -> None:
    streams = [relabel(frames(n), f"-{i}") for i, n in enumerate(picks)]
    order = [i for i, s in enumerate(streams) for _ in s]
    seed.shuffle(order)  # type: ignore[attr-defined]
    tracker = CallTracker(cfg)
    cursors = [0] * len(streams)
    out: list[CallOutcome] = []
    for i in order:
        out.extend(tracker.feed(streams[i][cursors[i]], 1000.0))
        cursors[i] += 1
    got = sorted((o.linkedid.rsplit("-", 1)[1], o.outcome.value, o.reason) for o in out)
    want = sorted((str(i), *EXPECTED[n]) for i, n in enumerate(picks))
    assert got == want
    assert len(tracker) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(SCENARIOS),
    garbage=st.lists(st.tuples(st.integers(0, 300), GARBAGE | st.binary(max_size=40)), max_size=30),
)
def test_garbage_never_crashes_the_tracker(cfg: Config, name: str, garbage: list[tuple[int, object]]) -> None:
    frs: list[object] = list(frames(name))
    for pos, junk in garbage:
        frs.insert(min(pos, len(frs)), junk)
    tracker, feeder = CallTracker(cfg), FrameFeeder(expect_banner=False)
    finished: list[str] = []
    for item in frs:
        batch = feeder.feed(item) if isinstance(item, bytes) else [item]  # type: ignore[list-item]
        for f in batch:
            finished.extend(o.linkedid for o in tracker.feed(f, 1000.0))  # type: ignore[arg-type]
    finished.extend(o.linkedid for o in tracker.expire(1000.0 + cfg.calls.stale_after + 1))
    assert len(finished) == len(set(finished))  # a call ends once
    assert len(tracker) == 0


def test_expiry_keeps_what_is_known_for_sure(cfg: Config) -> None:
    """A long talk with no events outlives stale_after: it was answered, and stays so; no lead."""
    frs = frames("s02_clean_answered")
    cut = next(i for i, f in enumerate(frs) if f.get("Event") == "AgentComplete")
    tracker, out = run(cfg, frs[:cut], now=0.0)
    assert out == []
    (o,) = tracker.expire(cfg.calls.stale_after + 1)
    assert (o.outcome, o.reason) == (Outcome.ANSWERED, "queue") and not o.is_lead


def test_direct_dial_answered_needs_a_bridge_an_ivr_answer_is_not_a_person(cfg: Config) -> None:
    frs = frames("s13_ringgroup_noanswer")
    i = next(i for i, f in enumerate(frs) if f.get("Event") == "DialEnd" and f.get("Channel", "").endswith(";2"))
    caller = frs[i]
    answered = dict(caller, DialStatus="ANSWER")
    bridged = {k: caller[k] for k in ("Channel", "Context", "Exten", "Uniqueid", "Linkedid")}
    bridged.update(Event="BridgeEnter", BridgeUniqueid="b-1")
    (o,) = run(cfg, [*frs[:i], answered, bridged, *frs[i + 1:]])[1]
    assert (o.outcome, o.reason) == (Outcome.ANSWERED, "dial")
    # the caller's own channel going Up (an IVR Answer()) decides nothing
    up = dict(bridged, Event="Newstate", ChannelState="6", ChannelStateDesc="Up")
    (o,) = run(cfg, [*frs[:i], up, *frs[i:]])[1]
    assert (o.outcome, o.reason) == (Outcome.MISSED, "no_answer")
    # a dial answered but never bridged (the callee hung up at once) is not a person either
    (o,) = run(cfg, [*frs[:i], answered, *frs[i + 1:]])[1]
    assert o.outcome is Outcome.MISSED
