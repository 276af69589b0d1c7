"""Call-back detection replayed on the recorded outbound calls (s18–s21), and the simulator."""

from __future__ import annotations

import pytest

from callguard.callbacks.detect import AttemptDetector, CallbackAttempt
from callguard.callbacks.settings import CallbackConfig, ManagerConfig, parse_roster
from callguard.callbacks.simulate import simulate, timed_frames
from callguard.config import Config
from tests.callbacks_support import ALL_DAY, T0, lab_config
from tests.fakes.asterisk_ami import frames, timed_chunks


def detect(name: str, roster_cfg: CallbackConfig | None = None) -> list[CallbackAttempt]:
    det = AttemptDetector(parse_roster(roster_cfg or lab_config()))
    out = [a for t, f in timed_frames(timed_chunks(name), T0) for a in det.feed(f, t)]
    assert len(det) == 0  # nothing left open
    return out


@pytest.mark.parametrize(
    ("name", "answered", "status"),
    [("s18_callback_answered", True, "ANSWER"), ("s19_callback_noanswer", False, "NOANSWER"),
     ("s20_callback_busy", False, "BUSY"), ("s21_missed_then_callback", True, "ANSWER")],
)
def test_recorded_outbound_call_is_an_attempt(name: str, answered: bool, status: str) -> None:
    begun, ended = detect(name)
    assert (begun.manager, begun.customer_e164, begun.final, begun.status) == ("Ivan", "+79035550142", False, "")
    assert (ended.manager, ended.customer_e164, ended.final) == ("Ivan", "+79035550142", True)
    assert (ended.answered, ended.status) == (answered, status)
    assert ended.started == begun.started <= ended.ended  # type: ignore[operator] (s20: one read chunk)


def test_s19_rings_twenty_seconds() -> None:
    _, ended = detect("s19_callback_noanswer")
    assert ended.ended - ended.started == pytest.approx(20, abs=0.5)  # type: ignore[operator]


def test_the_queue_ringing_an_agent_is_not_a_call_back_s21() -> None:
    # the inbound miss dials Local/101@agents too: only the agent's own outbound dial counts
    attempts = detect("s21_missed_then_callback")
    assert len(attempts) == 2 and all(a.uniqueid == "1796114385.21" for a in attempts)


def test_a_phone_not_on_the_roster_is_not_a_call_back() -> None:
    other = CallbackConfig(managers=[ManagerConfig(name="Anna", devices=["PJSIP/103"], days=ALL_DAY)])
    assert detect("s18_callback_answered", other) == []


def test_by_device_when_the_caller_id_is_not_an_extension() -> None:
    cfg = CallbackConfig(managers=[ManagerConfig(name="Lab", devices=["Local/89035550142@lab-internal"],
                                                 extensions=["999"], days=ALL_DAY)])
    assert [a.manager for a in detect("s18_callback_answered", cfg)] == ["Lab", "Lab"]


def test_simulate_s21_miss_then_call_back(cfg: Config) -> None:
    steps = simulate(timed_frames(timed_chunks("s21_missed_then_callback"), T0), cfg, lab_config())
    assert [(s.cause, s.state) for s in steps] == [
        ("lead", "waiting"),  # both agents still ringing for the missed call itself
        ("freed", "assigned"),
        ("attempt:DIALLING", "attempted"),
        ("attempt:ANSWER", "reached"),
    ]
    timings = {a.detail: a.seconds for s in steps for a in s.actions if a.kind == "record"}
    assert timings["miss_to_first_attempt"] == pytest.approx(5.5, abs=0.5)
    assert timings["miss_to_first_talk"] == pytest.approx(7.5, abs=0.5)
    assert {s.key for s in steps} == {"1796114373.14"}


def test_simulate_untouched_miss_is_handed_on_then_escalated(cfg: Config) -> None:
    steps = simulate(timed_frames(timed_chunks("s04_caller_abandon"), T0), cfg, lab_config(max_handoffs=2),
                     time_scale=60.0, seed=3)
    assert [(s.cause, s.state) for s in steps] == [
        ("lead", "assigned"), ("timer", "handed_on"), ("timer", "handed_on"), ("timer", "escalated")]
    managers = [s.manager for s in steps[:3]]
    assert managers[0] != managers[1] != managers[2]
    assert steps[1].at - steps[0].at == pytest.approx(600 / 60)  # the compressed pause


def test_simulate_answered_or_spam_calls_open_nothing(cfg: Config) -> None:
    for name in ("s02_clean_answered", "s01_spam_blocked", "s18_callback_answered"):
        assert simulate(timed_frames(timed_chunks(name), T0), cfg, lab_config()) == []


def test_frames_helper_matches_the_plain_parse() -> None:
    assert [f for _, f in timed_frames(timed_chunks("s20_callback_busy"))] == frames("s20_callback_busy")
