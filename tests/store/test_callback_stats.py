"""The call-back figures of the report (callguard/store/callback_stats.py) over a store seeded with known
call-backs (tests/support/callback_seed.py); every expected value is worked out by hand from its table."""

from __future__ import annotations

import time
from datetime import UTC

from callguard.store import Store
from callguard.store.callback_stats import nearest_rank, summarise
from callguard.web import dashboard
from tests.support.callback_seed import DAY, DID_A, DID_B, DID_EVIL, seed_callbacks

SLA = 900.0


def _pick(groups: list[dict[str, object]], *fields: str) -> dict[object, tuple[object, ...]]:
    return {g["key"]: tuple(g[f] for f in fields) for g in groups}


async def test_the_weeks_call_backs_by_manager_and_did(store: Store) -> None:
    now = time.time()
    await seed_callbacks(store, now)
    cb = (await store.stats.report(now - 7 * DAY, now, "did", callback_sla=SLA)).as_dict()["callbacks"]
    # cb0 is 8 days old: out. Called back: cb1 60 s, cb2 300 s, cb3 1200 s → median 300, p90 (3rd of 3) 1200;
    # within 15 min: cb1, cb2 = 2 of 6 misses. Open: cb3 attempted, cb5 escalated, cb6 waiting.
    assert cb["sla_s"] == SLA
    assert cb["total"] == {
        "key": "", "misses": 6, "called_back": 3, "never_called_back": 3, "within_sla": 2,
        "within_sla_share": 0.3333, "median_s": 300.0, "p90_s": 1200.0, "reached": 2, "got_through": 1,
        "closed_in_crm": 0, "open": 3, "escalated": 1, "handoffs": 6}
    fields = ("misses", "called_back", "median_s", "p90_s", "within_sla_share", "open", "escalated", "handoffs")
    # Petr: cb3 (1200 s), cb4 (got through), cb5 (escalated); Ivan: cb1, cb2; "-": cb6 nobody assigned yet
    assert [g["key"] for g in cb["by_manager"]] == ["Petr", "Ivan", "-"]
    assert _pick(cb["by_manager"], *fields) == {
        "Petr": (3, 1, 1200.0, 1200.0, 0.0, 2, 1, 5),
        "Ivan": (2, 2, 180.0, 300.0, 1.0, 0, 0, 1),
        "-": (1, 0, None, None, 0.0, 1, 0, 0)}
    assert [g["key"] for g in cb["by_did"]] == [DID_A, DID_B, DID_EVIL]
    assert _pick(cb["by_did"], *fields) == {
        DID_A: (3, 2, 180.0, 300.0, 0.6667, 1, 0, 1),
        DID_B: (2, 1, 1200.0, 1200.0, 0.0, 1, 0, 2),
        DID_EVIL: (1, 0, None, None, 0.0, 1, 1, 3)}
    # open and never dialled, oldest first: cb5 (a day, escalated), cb6 (2 h, waiting)
    assert cb["waiting_total"] == 2
    assert [(w["caller"], w["state"], w["manager"], w["age_s"]) for w in cb["waiting"]] == [
        ("+79030000005", "escalated", "Petr", DAY), ("+79030000006", "waiting", "", 7200.0)]


async def test_an_empty_store_gives_zeros_and_nulls(store: Store) -> None:
    now = time.time()
    report = await store.stats.report(now - 7 * DAY, now, None, callback_sla=SLA)
    cb = report.as_dict()["callbacks"]
    assert cb["total"] == {
        "key": "", "misses": 0, "called_back": 0, "never_called_back": 0, "within_sla": 0,
        "within_sla_share": None, "median_s": None, "p90_s": None, "reached": 0, "got_through": 0,
        "closed_in_crm": 0, "open": 0, "escalated": 0, "handoffs": 0}
    assert (cb["by_manager"], cb["by_did"], cb["waiting"], cb["waiting_total"]) == ([], [], [], 0)
    html = dashboard.render(await dashboard.gather(store, "7d", now, UTC, callback_sla=SLA), user="u", csrf="c")
    assert 'data-figure="callbacks"' in html and "No missed calls to call back" in html
    # without an SLA (the loop switched off) the report carries none
    assert (await store.stats.report(now - DAY, now, None)).callbacks is None


async def test_the_dashboard_panel_shows_the_same_figures_escaped(store: Store) -> None:
    now = time.time()
    await seed_callbacks(store, now)
    html = dashboard.render(await dashboard.gather(store, "7d", now, UTC, callback_sla=SLA), user="u", csrf="c")
    assert '<div class="value">5 min 00 s</div>' in html  # median 300 s
    assert '<div class="value">20 min 00 s</div>' in html  # p90 1200 s
    assert '<div class="value">33.3%</div>' in html  # 2 of 6 within 15 min
    for name, value in (("callback_within_sla_n", 2), ("callback_misses", 6), ("callback_open", 3),
                        ("callback_handoffs", 6), ("callback_escalated", 1), ("callback_waiting", 2)):
        assert f'<span data-figure="{name}">{value}</span>' in html, name
    assert 'data-figure="callback_never"><div class="label">Never called back</div><div class="value">3<' in html
    row = '<tr data-callbacks-{}="{}"><td class="note">{}</td><td class="n">{}</td><td class="n">{}</td>'
    assert row.format("manager", "Ivan", "Ivan", 2, 2) in html  # 2 misses, both called back
    assert row.format("did", DID_B, DID_B, 2, 1) in html
    assert DID_EVIL not in html and "&lt;b&gt;evil&lt;/b&gt;" in html
    assert "+79030000006" in html and "nobody yet" in html and "+79030000001" not in html  # called back


def test_percentiles_are_nearest_rank() -> None:
    assert nearest_rank([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == 9 and nearest_rank([7], 0.9) == 7
    assert summarise([], SLA, 0.0).total.p90_s is None
