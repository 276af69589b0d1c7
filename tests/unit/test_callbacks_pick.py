"""The picking rule (callbacks/pick.py) and the presence it reads (callbacks/presence.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callguard.callbacks.pick import Choice, choose
from callguard.callbacks.presence import Presence
from callguard.callbacks.settings import CallbackConfig, ManagerConfig, next_open, parse_roster
from callguard.errors import ConfigError
from tests.callbacks_support import ALL_DAY, T0, lab_config
from tests.fakes.asterisk_ami import frames

NAMES = [f"m{i}" for i in range(6)]
# What a manager can be, as presence sees them.
CONDITIONS = ("free", "paused", "busy", "logged_out", "off_hours")
Team = tuple[dict[str, str], str | None, str | None, dict[str, float], int]


@st.composite
def teams(draw: st.DrawFn) -> Team:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    cond = {n: draw(st.sampled_from(CONDITIONS)) for n in names}
    previous = draw(st.none() | st.sampled_from(names))
    responsible = draw(st.none() | st.sampled_from(names))
    last = {n: draw(st.floats(0, 1000)) for n in names if draw(st.booleans())}
    return cond, previous, responsible, last, draw(st.integers(0, 2**32))


# One recorded QueueMemberStatus (s02) as the template: only the member and its state fields change.
TEMPLATE = next(f for f in frames("s02_clean_answered") if f.get("Event") == "QueueMemberStatus")
MEMBER_STATE = {"free": ("1", "0", "0"), "paused": ("1", "1", "0"), "busy": ("2", "0", "0"),
                "logged_out": ("5", "0", "0"), "off_hours": ("1", "0", "0")}  # Status, Paused, InCall


def run_choose(cond: dict[str, str], previous: str | None, responsible: str | None, last: dict[str, float],
               seed: int) -> Choice:
    """Through the real presence: member events per condition, then the rule over who it calls free."""
    managers = [ManagerConfig(name=n, devices=[f"Local/2{n[1:]}@agents"], timezone="UTC",
                              days={} if c == "off_hours" else ALL_DAY) for n, c in cond.items()]
    p = Presence(parse_roster(CallbackConfig(managers=managers)))
    for n, c in cond.items():
        status, paused, in_call = MEMBER_STATE[c]
        p.feed({**TEMPLATE, "MemberName": n, "Interface": f"Local/2{n[1:]}@agents",
                "StateInterface": f"Local/2{n[1:]}@agents", "Status": status, "Paused": paused, "InCall": in_call})
    return choose(p.free(T0), on_duty=p.on_duty(T0), previous=previous, responsible=responsible,
                  last_assigned=last, next_on_duty=T0 + 3600, rng=random.Random(seed))


@given(teams())
def test_never_picks_a_manager_who_is_not_free(team: Team) -> None:
    cond, previous, responsible, last, seed = team
    choice = run_choose(cond, previous, responsible, last, seed)
    if choice.manager is not None:
        assert cond[choice.manager] == "free"


@given(teams())
def test_always_someone_when_someone_is_free_and_never_the_same_twice(team: Team) -> None:
    cond, previous, responsible, last, seed = team
    choice = run_choose(cond, previous, responsible, last, seed)
    free = {n for n, c in cond.items() if c == "free"}
    assert (choice.manager is not None) == bool(free)
    if free - {previous}:
        assert choice.manager != previous
    if not free:
        on_duty = any(c != "off_hours" for c in cond.values())
        assert choice.wait == ("nobody_free" if on_duty else "off_hours")
        assert (choice.until is not None) == (not on_duty)


@given(teams())
def test_responsible_first_else_least_recently_assigned(team: Team) -> None:
    cond, previous, responsible, last, seed = team
    choice = run_choose(cond, previous, responsible, last, seed)
    others = [n for n, c in cond.items() if c == "free" and n != previous]
    if responsible in others:
        assert choice.manager == responsible
    elif others:
        oldest = min(last.get(n, float("-inf")) for n in others)
        assert last.get(choice.manager, float("-inf")) == oldest  # type: ignore[arg-type]


def test_random_among_equals_uses_the_injected_source() -> None:
    picks = {choose(NAMES, rng=random.Random(seed)).manager for seed in range(50)}
    assert picks == set(NAMES)  # every one of them can be drawn
    assert choose(NAMES, rng=random.Random(7)) == choose(NAMES, rng=random.Random(7))


# --- presence from the recorded member events -------------------------------------------------------


def presence_after(*names: str) -> Presence:
    p = Presence(parse_roster(lab_config()))
    for name in names:
        for f in frames(name):
            p.feed(f)
    return p


def test_queue_status_list_logs_members_in() -> None:
    p = Presence(parse_roster(lab_config()))
    assert p.free(T0) == []  # never seen in a queue: not logged in
    for f in frames("s00_ami_login_failure"):
        p.feed(f)
    assert p.free(T0) == ["Ivan", "Petr"]


def test_queue_member_pause_and_unpause_s05() -> None:
    p = presence_after("s00_ami_login_failure")
    pauses = [f for f in frames("s05_queue_no_members") if f.get("Event") == "QueueMemberPause"]
    for f in pauses[:2]:
        p.feed(f)
    assert p.free(T0) == [] and p.logged_in("Ivan")
    for f in pauses[2:]:
        p.feed(f)
    assert p.free(T0) == ["Ivan", "Petr"]


def test_ringing_and_talking_members_are_busy_s02() -> None:
    p = presence_after("s00_ami_login_failure")
    seen = []
    for f in frames("s02_clean_answered"):
        p.feed(f)
        if f.get("Event") in ("AgentConnect", "AgentComplete"):
            seen.append(p.free(T0))
    # Both ring at AgentConnect; when the call completes Agent101 still talks (Status 2), Agent102 is back.
    assert seen == [[], ["Petr"]]
    assert p.free(T0) == ["Ivan", "Petr"]


def test_member_added_paused_removed_s22() -> None:
    cfg = CallbackConfig(managers=[ManagerConfig(name="Anna", devices=["Local/103@agents"], days=ALL_DAY)])
    p = Presence(parse_roster(cfg))
    states = []
    for f in frames("s22_queue_member_added_removed"):
        if p.feed(f) == "Anna":
            states.append((f["Event"], p.logged_in("Anna"), p.free(T0) == ["Anna"]))
    assert states == [("QueueMemberAdded", True, True), ("QueueMemberPause", True, False),
                      ("QueueMember", True, False), ("QueueMemberRemoved", False, False)]


def test_an_agent_dialling_out_is_in_a_call_s18() -> None:
    p = presence_after("s00_ami_login_failure")
    during = []
    for f in frames("s18_callback_answered"):
        p.feed(f)
        if f.get("Event") == "BridgeEnter":
            during.append(p.free(T0))
    assert during and all(d == ["Petr"] for d in during)  # Local/101@agents itself stays at Status 1
    assert p.free(T0) == ["Ivan", "Petr"]


def test_off_hours_and_the_next_morning() -> None:
    cfg = lab_config(managers=[ManagerConfig(name="Ivan", devices=["Local/101@agents"], timezone="UTC",
                                             days={"tue": "09:00-18:00", "wed": "09:00-18:00"})])
    roster = parse_roster(cfg)
    ivan = roster.managers[0]
    tuesday = datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp()
    assert ivan.on_duty(tuesday)
    evening = tuesday + 10 * 3600  # 19:30
    assert not ivan.on_duty(evening)
    assert next_open(ivan.schedule, evening) == datetime(2026, 12, 2, 9, 0, tzinfo=UTC).timestamp()
    assert next_open(ivan.schedule, evening + 86400) is not None  # Thursday evening → next Tuesday
    p = presence_after("s00_ami_login_failure")
    p.roster = roster
    assert p.free(evening) == [] and p.on_duty(evening) == []


@pytest.mark.parametrize(
    ("managers", "key"),
    [([ManagerConfig(name="", devices=["PJSIP/1"])], "callback.managers[0].name"),
     ([ManagerConfig(name="a")], "callback.managers[0].devices"),
     ([ManagerConfig(name="a", devices=["PJSIP/1"], days={"mon": "9-18"})], "callback.managers[0].days.mon"),
     ([ManagerConfig(name="a", devices=["PJSIP/1"], timezone="Mars/Base")], "callback.managers[0].timezone"),
     ([ManagerConfig(name="a", devices=["PJSIP/1"]), ManagerConfig(name="b", devices=["PJSIP/1"])],
      "callback.managers[1].devices")],
)
def test_bad_roster_names_the_key(managers: list[ManagerConfig], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_roster(CallbackConfig(managers=managers))
    assert e.value.key == key
