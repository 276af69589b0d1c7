"""``callguard stats`` over a store filled with known screens and calls gives exactly the known numbers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import structlog

from callguard.cli import main
from callguard.cli.stats import render, table
from callguard.config import Config
from callguard.store import Store

DAY = 86400.0
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()
A, B = "+74950000001", "+74950000002"


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """``main()`` points structlog at the captured stderr, which pytest closes after the test: put the
    defaults back so later tests do not log into a closed file."""
    yield
    structlog.reset_defaults()


async def fill(store: Store, now: float) -> None:
    """Two DIDs with known traffic inside the window, and noise 8 days back that must not count."""
    screens = (
        [(A, "spam")] * 3 + [(A, "clean")] * 5 + [(A, "whitelist")]
        + [(B, "spam")] + [(B, "clean")] * 2 + [(B, "anonymous")]
    )
    calls = (
        [(A, "answered", "queue", 5.0)] * 4
        + [(A, "missed", "abandoned", w) for w in (10.0, 30.0, 50.0)]
        + [(A, "missed", "timeout", 20.0), (A, "spam", "screened", 0.0), (A, "spam", "screened", 0.0)]
        + [(B, "answered", "dial", 3.0), (B, "missed", "abandoned", 20.0), (B, "missed", "abandoned", 60.0)]
        + [(B, "missed", "no_agents", 1.0), (B, "short", "abandoned", 1.0)]
    )
    old = now - 8 * DAY
    async with store.db.write() as conn:
        for i, (did, verdict) in enumerate(screens):
            await conn.execute(
                "INSERT INTO screens VALUES (?, ?, ?, ?, ?, ?, ?)",
                (f"u{i}", now - 3600 - i, "+79120000000", did, verdict, "r", 1.0),
            )
        for i in range(10):
            await conn.execute(
                "INSERT INTO screens VALUES (?, ?, ?, ?, ?, ?, ?)", (f"o{i}", old, "+7912", A, "spam", "r", 1.0)
            )
        for i, (did, outcome, reason, wait) in enumerate(calls):
            await conn.execute(
                "INSERT INTO calls(linkedid, caller, did, outcome, reason, started_at, ended_at, wait_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (f"l{i}", "+79120000000", did, outcome, reason, now - 7200 - i, now - 7000 - i, wait),
            )
        for i in range(5):
            await conn.execute(
                "INSERT INTO calls(linkedid, caller, did, outcome, reason, started_at, ended_at, wait_s) "
                "VALUES (?, ?, ?, 'missed', 'abandoned', ?, ?, 99)",
                (f"old{i}", "+7912", A, old, old),
            )


async def test_totals_and_by_did_are_exact(store: Store) -> None:
    await fill(store, NOW)
    report = await store.stats.report(NOW - 7 * DAY, NOW, "did")
    t = report.total
    assert t.screened == 13
    assert t.verdicts == {"spam": 4, "clean": 7, "whitelist": 1, "anonymous": 1}
    assert t.spam_blocked == 4
    assert (t.answered, t.missed) == (5, 7)
    assert t.missed_by_reason == {"abandoned": 5, "timeout": 1, "no_agents": 1}
    assert t.other_calls == {"spam": 2, "short": 1}
    assert t.answered_share == round(5 / 12, 4)
    assert t.median_abandon_wait_s == 30.0  # of 10, 30, 50, 20, 60
    assert report.missed_by_did == {A: 4, B: 3}
    rows = {r.key: r for r in report.rows}
    assert [r.key for r in report.rows] == [A, B]  # most missed first
    assert (rows[A].screened, rows[A].spam_blocked, rows[A].answered, rows[A].missed) == (9, 3, 4, 4)
    assert rows[A].answered_share == 0.5
    assert rows[A].median_abandon_wait_s == 30.0
    assert (rows[B].screened, rows[B].spam_blocked, rows[B].answered, rows[B].missed) == (4, 1, 1, 3)
    assert rows[B].answered_share == 0.25
    assert rows[B].median_abandon_wait_s == 40.0


async def test_by_reason_and_wider_window(store: Store) -> None:
    await fill(store, NOW)
    report = await store.stats.report(NOW - 30 * DAY, NOW, "reason")
    rows = {r.key: r for r in report.rows}
    assert rows["abandoned"].missed == 10  # 5 in the week + 5 eight days back
    assert rows["abandoned"].other_calls == {"short": 1}
    assert rows["timeout"].missed == 1 and rows["no_agents"].missed == 1
    assert rows["queue"].answered == 4 and rows["dial"].answered == 1
    assert rows["r"].screened == 23 and rows["r"].spam_blocked == 14  # screens' own reason column
    assert report.total.median_abandon_wait_s == 79.5  # 10, 20, 30, 50, 60 and five of 99


async def test_days_are_local_calendar_days(store: Store) -> None:
    # 22:30 UTC on the 20th is already the 21st in Moscow (UTC+3); 20:30 UTC is still the 20th.
    late = datetime(2026, 11, 20, 22, 30, tzinfo=UTC).timestamp()
    early = datetime(2026, 11, 20, 20, 30, tzinfo=UTC).timestamp()
    async with store.db.write() as conn:
        for uid, at in (("x", late), ("y", early), ("z", early)):
            await conn.execute("INSERT INTO screens VALUES (?, ?, '+7', ?, 'clean', 'r', 1)", (uid, at, A))
    report = await store.stats.report(NOW - 7 * DAY, NOW, "day", ZoneInfo("Europe/Moscow"))
    assert [(r.key, r.screened) for r in report.rows] == [("2026-11-20", 2), ("2026-11-21", 1)]
    utc = await store.stats.report(NOW - 7 * DAY, NOW, "day", UTC)
    assert [(r.key, r.screened) for r in utc.rows] == [("2026-11-20", 3)]


async def test_days_in_zones_off_the_hour(store: Store) -> None:
    # India is UTC+5:30, Nepal UTC+5:45: a minute either side of their midnight lands on the right day.
    at = [datetime(2026, 11, 20, 18, m, tzinfo=UTC).timestamp() for m in (14, 16, 29, 31)]
    async with store.db.write() as conn:
        for i, t in enumerate(at):
            await conn.execute("INSERT INTO screens VALUES (?, ?, '+7', ?, 'clean', 'r', 1)", (f"k{i}", t, A))
    india = await store.stats.report(NOW - 7 * DAY, NOW, "day", ZoneInfo("Asia/Kolkata"))
    assert [(r.key, r.screened) for r in india.rows] == [("2026-11-20", 3), ("2026-11-21", 1)]
    nepal = await store.stats.report(NOW - 7 * DAY, NOW, "day", ZoneInfo("Asia/Kathmandu"))
    assert [(r.key, r.screened) for r in nepal.rows] == [("2026-11-20", 1), ("2026-11-21", 3)]


async def test_empty_store_has_no_shares(store: Store) -> None:
    report = await store.stats.report(NOW - DAY, NOW, None)
    assert report.total.answered_share is None and report.total.median_abandon_wait_s is None
    assert report.rows == [] and report.missed_by_did == {}
    assert "answered share" in render(report, "UTC")


def test_table_aligns_columns() -> None:
    text = table(["did", "missed"], [["+7495", 3], ["x", 120], ["y", None]])
    assert text.splitlines() == ["did    missed", "+7495       3", "x         120", "y           -"]


def test_cli_json_and_table(cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    async def prepare() -> None:
        store = await Store.open(cfg.store.path)
        try:
            await fill(store, time.time())
        finally:
            await store.close()

    asyncio.run(prepare())
    capsys.readouterr()  # the migration's log line, printed before main() configures logging
    assert cfg.source is not None
    assert main(["--config", str(cfg.source), "stats", "--since", "7d", "--by", "did", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["spam_blocked"] == 4 and data["total"]["missed"] == 7
    assert data["missed_by_did"] == {A: 4, B: 3}
    assert [r["key"] for r in data["rows"]] == [A, B]
    assert data["rows"][0]["missed_by_reason"] == {"abandoned": 3, "timeout": 1}

    assert main(["--config", str(cfg.source), "stats", "--by", "did"]) == 0
    out = capsys.readouterr().out
    line_a = next(line for line in out.splitlines() if line.startswith(A))
    assert line_a.split()[:6] == [A, "9", "3", "4", "4", "50.0%"]
    assert out.splitlines()[-1].split()[:6] == ["total", "13", "4", "5", "7", "41.7%"]

    assert main(["--config", str(cfg.source), "stats"]) == 0
    out = capsys.readouterr().out
    assert "missed by DID" in out and "median wait before abandon  30s" in out
    for bad in ("0s", "xyz"):  # a usage error, as argparse reports one (the admin guide's exit 2)
        with pytest.raises(SystemExit) as e:
            main(["--config", str(cfg.source), "stats", "--since", bad])
        assert e.value.code == 2
