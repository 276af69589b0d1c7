"""Event time and expiry: a Timestamp is trusted only near its arrival; staleness runs on the
monotonic clock, so no stamp (24 h ahead, garbage) ends a live call early or shifts it absurdly."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from callguard import metrics
from callguard.ami.wire import Frame, FrameFeeder, event_time
from callguard.calls.recorder import CallFlow
from callguard.calls.tracker import CallOutcome, CallTracker, Outcome
from callguard.config import Config
from tests.fakes.asterisk_ami import EXPECTED, frames, fresh_logging, timed_chunks  # noqa: F401 (fresh_logging: autouse)

WALL, MONO = 1_795_435_000.0, 100.0
LEADS = sorted(n for n, (outcome, _) in EXPECTED.items() if outcome == "missed")


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [(None, (50.0, "")), ("49.5", (49.5, "")), ("54.9", (54.9, "")), ("56", (50.0, "ahead")),
     ("86450", (50.0, "ahead")), ("-250", (-250.0, "")), ("-251", (50.0, "behind")), ("abc", (50.0, "garbage")),
     ("nan", (50.0, "garbage")), ("inf", (50.0, "garbage")), ("1e400", (50.0, "garbage")), ("", (50.0, ""))],
)
def test_event_time_bounds(stamp: str | None, expected: tuple[float, str]) -> None:
    frame: Frame = {"Event": "Newchannel"} if stamp is None else {"Event": "Newchannel", "Timestamp": stamp}
    assert event_time(frame, 50.0, ahead=5.0, behind=300.0) == expected


def timed(name: str) -> list[tuple[float, Frame]]:
    feeder, out = FrameFeeder(), []
    for t, chunk in timed_chunks(name):
        out += [(t, f) for f in feeder.feed(chunk)]
    return out


def feed_all(cfg: Config, events: list[tuple[float, Frame]]) -> list[CallOutcome]:
    tracker, out = CallTracker(cfg), []
    for t, f in events:
        out += tracker.feed(f, WALL + t, MONO + t)
    return out


@pytest.mark.parametrize("name", LEADS)
def test_one_timestamp_a_day_ahead_still_gives_the_lead(cfg: Config, name: str) -> None:
    """The QA case: the recordings carry no Timestamp (recorded without timestampevents); each event in
    turn gets one 24 h ahead of its arrival. Before, that event aged the call out (lost, no lead)."""
    events = timed(name)
    (plain,) = feed_all(cfg, events)
    for i, (t, f) in enumerate(events):
        shifted = [*events[:i], (t, {**f, "Timestamp": f"{WALL + t + 86400:.6f}"}), *events[i + 1:]]
        assert feed_all(cfg, shifted) == [plain], (name, i, f.get("Event"))
    assert (plain.outcome.value, plain.reason) == EXPECTED[name]


stamps = st.one_of(
    st.none(),
    st.floats(-1e7, 1e7).map(lambda d: ("offset", d)),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_timestamps_never_end_a_live_call_early_nor_shift_it_absurdly(cfg: Config, data: st.DataObject) -> None:
    events = timed("s04_caller_abandon")
    stamped: list[tuple[float, Frame]] = []
    for t, f in events:
        s = data.draw(stamps)
        if isinstance(s, tuple):
            s = f"{WALL + t + s[1]:.6f}"
        stamped.append((t, f if s is None else {**f, "Timestamp": s}))
    (o,) = feed_all(cfg, stamped)
    assert (o.outcome, o.reason) == (Outcome.MISSED, "abandoned")  # not lost: no early expiry
    first, last = WALL + events[0][0], WALL + events[-1][0]
    ahead, behind = float(cfg.calls.timestamp_ahead), float(cfg.calls.timestamp_behind)
    assert first - behind <= o.started_at <= last + ahead
    assert first - behind <= o.ended_at <= last + ahead
    assert 0.0 <= o.wait_s <= (last - first) + ahead + behind


def test_expiry_runs_on_the_monotonic_clock(cfg: Config) -> None:
    stale = float(cfg.calls.stale_after)
    frs = frames("s04_caller_abandon")
    start = next(i for i, f in enumerate(frs) if f.get("Event") == "Newchannel" and f.get("Context") == "from-trunk")
    tracker = CallTracker(cfg)
    assert tracker.feed(frs[start], WALL, MONO) == []
    assert len(tracker) == 1
    # a day passes on the wall clock (an event stamped far ahead, a clock step): the call lives on
    assert tracker.expire(MONO + stale - 1, WALL + 86400) == []
    assert tracker.feed({"Event": "Noise", "Linkedid": "x", "Timestamp": f"{WALL + 86400}"}, WALL + 2, MONO + 2) == []
    assert len(tracker) == 1
    (o,) = tracker.expire(MONO + stale + 1, WALL + stale + 1)
    assert (o.outcome, o.reason) == (Outcome.LOST, "stale")


def test_callflow_counts_ignored_timestamps_and_logs_once(cfg: Config) -> None:
    mono = [MONO]
    flow = CallFlow(CallTracker(cfg), None, clock=lambda: WALL, mono=lambda: mono[0])

    def count(kind: str) -> float:
        return metrics.REGISTRY.get_sample_value("callguard_ami_timestamps_clamped_total", {"kind": kind}) or 0.0

    before = {k: count(k) for k in ("ahead", "garbage")}
    with capture_logs() as logs:
        for stamp in (f"{WALL + 86400}", "garbage", f"{WALL + 3600}"):
            flow.on_event({"Event": "Newexten", "Linkedid": "1.1", "Timestamp": stamp}, WALL)
        flow.on_event({"Event": "Newexten", "Linkedid": "1.1", "Timestamp": f"{WALL}"}, WALL)  # fine
        mono[0] += 61
        flow.on_event({"Event": "Newexten", "Linkedid": "1.1", "Timestamp": "x"}, WALL)
    assert count("ahead") - before["ahead"] == 2 and count("garbage") - before["garbage"] == 2
    lines = [e for e in logs if e["event"] == "ami_timestamp_ignored"]
    assert [(e.get("ahead"), e.get("garbage")) for e in lines] == [(1, None), (1, 2)]
