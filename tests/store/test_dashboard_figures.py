"""The figures the dashboard adds to the stats report (top blocked, outbox, spam share, call-backs, the
``today`` window), exact over a known store; and the page's pure rendering of them."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from callguard.cli import main
from callguard.config import Config
from callguard.store import Store
from callguard.store.stats import window_start
from callguard.web import dashboard
from tests.support.seed import CRM_NAME, DAY, SPAMMER, SPAMMER_CRM, SPAMMER_NOTE, seed


async def test_top_blocked_outbox_and_shares(store: Store) -> None:
    now = time.time()
    await seed(store, now)
    report = await store.stats.report(now - 7 * DAY, now, "did", top=2)
    assert [(b.caller, b.calls, b.note, b.contact) for b in report.top_blocked] == [
        (SPAMMER, 4, SPAMMER_NOTE, ""), (SPAMMER_CRM, 2, "", CRM_NAME)]
    t = report.total
    assert (t.screened, t.spam_blocked, t.spam_share) == (28, 7, 0.25)
    assert (t.answered, t.missed, t.answered_share) == (8, 10, 0.4444)
    assert (report.outbox.pending, report.outbox.dead) == (4, 1)  # five leads, one dead
    assert report.outbox.oldest_age_s is not None and report.outbox.oldest_age_s >= 0
    assert report.callbacks is None
    d = report.as_dict()
    assert d["top_blocked"][0] == {"caller": SPAMMER, "calls": 4, "note": SPAMMER_NOTE, "contact": ""}
    assert d["outbox"]["dead"] == 1 and d["callbacks"] is None and d["total"]["spam_share"] == 0.25
    assert (await store.stats.report(now - 7 * DAY, now, None, top=0)).top_blocked == []


def test_today_starts_at_local_midnight() -> None:
    now = datetime(2026, 11, 23, 1, 30, tzinfo=UTC).timestamp()  # 04:30 in Moscow
    midnight = datetime(2026, 11, 22, 21, 0, tzinfo=UTC).timestamp()
    assert window_start("today", now, ZoneInfo("Europe/Moscow")) == midnight
    assert window_start("7d", now) == now - 7 * DAY


def test_cli_since_today_and_the_extras_in_the_table(cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    async def prepare() -> None:
        s = await Store.open(cfg.store.path)
        try:
            await seed(s, time.time())
        finally:
            await s.close()

    asyncio.run(prepare())
    capsys.readouterr()
    assert main(["--config", str(cfg.source), "stats", "--since", "today", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "top_blocked" in data and data["outbox"]["dead"] == 1
    assert main(["--config", str(cfg.source), "stats", "--since", "7d"]) == 0
    out = capsys.readouterr().out
    assert "most blocked" in out and SPAMMER in out and "1 dead letters" in out


async def test_rendering_escapes_and_names_reasons(store: Store) -> None:
    now = time.time()
    await seed(store, now)
    fig = await dashboard.gather(store, "30d", now, UTC)
    html = dashboard.render(fig, user="<b>u</b>", csrf="c")
    assert "&lt;b&gt;u&lt;/b&gt;" in html and "<b>u</b>" not in html
    for label in ("gave up waiting", "queue timed out", "nobody available", "after hours", "no answer", "busy",
                  "hung up before the queue"):
        assert label in html
    assert 'data-health="ami"' in html and "not reported" in html  # no readiness wired here

    async def broken() -> dict[str, object]:
        raise RuntimeError("<readiness down>")

    fig = await dashboard.gather(store, "today", now, UTC, readiness=broken)
    html = dashboard.render(fig, user="u", csrf="c")
    assert "could not be read: &lt;readiness down&gt;" in html and "Calls per day" not in html
