"""``callguard stats [--since 7d|today] [--by day|did|reason] [--json]``: blocked spam and missed calls.

"How many spam calls did we block and how many calls did we miss last week, by number?" is
``callguard stats --since 7d --by did``. The dashboard at ``/`` reads the very same report
(``Stats.report`` through ``window_start``): ``--since today|7d|30d --by did`` is what its periods show.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from callguard.cli.storeopen import open_store
from callguard.config import Config
from callguard.errors import ConfigError
from callguard.store.callback_stats import CallbackFigures, Group
from callguard.store.stats import GroupBy, Report, Row, callback_sla, window_start
from callguard.textsafe import dumps, visible


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stats", help="screened calls, spam blocked, missed calls by reason and DID")
    p.add_argument("--since", default="7d", type=since_spec,
                   help="window back from now: today (since local midnight), 24h, 7d, 30d … (default 7d)")
    p.add_argument("--by", choices=("day", "did", "reason"), help="one row per day, DID or reason")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=handle)


async def collect(cfg: Config, since_s: float | str, by: GroupBy | None, now: float | None = None) -> Report:
    """The report over ``[start, now)``, ``start`` from ``window_start`` (``"today"``, ``"7d"``) or
    ``now - since_s``; days are calendar days in ``hours.timezone``. Never creates a store."""
    now = time.time() if now is None else now
    tz = ZoneInfo(cfg.hours.timezone)
    since = window_start(since_s, now, tz) if isinstance(since_s, str) else now - since_s
    store = await open_store(cfg, readonly=True)
    try:
        return await store.stats.report(since, now, by, tz, callback_sla=callback_sla(cfg))
    finally:
        await store.close()


def since_spec(value: str) -> str:
    """``--since``: ``today`` or a duration longer than zero; anything else is a usage error (exit 2)."""
    now = time.time()
    try:
        start = window_start(value, now)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(f"expected today or a duration like 24h or 7d, got {value!r}") from e
    if start >= now and value.strip().lower() != "today":
        raise argparse.ArgumentTypeError(f"must be longer than zero, got {value!r}")
    return value


def handle(args: argparse.Namespace, cfg: Config) -> int:
    report = asyncio.run(collect(cfg, args.since, args.by, time.time()))
    if args.json:
        print(dumps(report.as_dict()))
    else:
        text = render(report, cfg.hours.timezone) + render_callbacks(report.callbacks)
        print("\n".join(visible(line) for line in text.split("\n")))
    return 0


def render_callbacks(cb: CallbackFigures | None) -> str:
    """Time to call-back (median, p90), the share within ``callback.sla``, per manager and per DID."""
    if cb is None or not cb.total.misses:
        return ""
    head = ["call-backs", "misses", "called back", "never", "median", "p90", f"≤ SLA {cb.sla_s:.0f}s",
            "reached", "got through", "CRM closed", "open", "escalated", "hand-ons"]

    def line(g: Group, key: str) -> list[object]:
        return [key, g.misses, g.called_back, g.never_called_back, _secs(g.median_s), _secs(g.p90_s),
                _pct(g.within_sla_share), g.reached, g.got_through, g.closed_in_crm, g.open, g.escalated, g.handoffs]

    rows = [line(g, f"manager {g.key}") for g in cb.by_manager]
    rows += [line(g, f"DID {g.key}") for g in cb.by_did]
    return "\n\n" + table(head, [*rows, line(cb.total, "total")], numbers=False)


# --- the readable form --------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], numbers: bool = True) -> str:
    """Aligned columns: the first left-aligned (a key), the rest right-aligned when they are numbers."""
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        rest = (c.rjust(w) if numbers else c.ljust(w) for c, w in zip(r[1:], widths[1:], strict=True))
        parts = [r[0].ljust(widths[0]), *rest]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _pct(share: float | None) -> str | None:
    return None if share is None else f"{share * 100:.1f}%"


def _secs(value: float | None) -> str | None:
    return None if value is None else f"{value:.0f}s"


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def _line(r: Row, key: str) -> list[object]:
    return [key, r.screened, r.spam_blocked, r.answered, r.missed, _pct(r.answered_share),
            _secs(r.median_abandon_wait_s), _reasons(r.missed_by_reason)]


def render(report: Report, tz_name: str) -> str:
    tz = ZoneInfo(tz_name)

    def when(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")

    t = report.total
    out = [f"{when(report.since)} → {when(report.until)} ({tz_name})", ""]
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(t.verdicts.items())) or "-"
    out.append(table(
        ["", ""],
        [
            ["screened calls", f"{t.screened} ({verdicts})"],
            ["spam blocked", t.spam_blocked],
            *([["would block (monitor mode)", t.would_block]] if t.would_block else []),
            ["answered", t.answered],
            ["missed", f"{t.missed} ({_reasons(t.missed_by_reason)})"],
            ["answered share", _pct(t.answered_share)],
            ["median wait before abandon", _secs(t.median_abandon_wait_s)],
        ],
        numbers=False,
    ).split("\n", 1)[1])
    out += _extras(report)
    if report.by:
        out += ["", table(
            [report.by, "screened", "spam", "answered", "missed", "answered%", "abandon wait", "missed by reason"],
            [*(_line(r, r.key or "(none)") for r in report.rows), _line(t, "total")],
        )]
    elif report.missed_by_did:
        out += ["", table(["missed by DID", "calls"], [[d or "(none)", n] for d, n in report.missed_by_did.items()])]
    return "\n".join(out)


def _extras(report: Report) -> list[str]:
    """Most-blocked callers, the outbox now, and the call-back summary when the report has it."""
    out: list[str] = []
    if report.top_blocked:
        out += ["", table(["most blocked", "calls", "note / contact"],
                          [[b.caller, b.calls, b.note or b.contact or "-"] for b in report.top_blocked])]
    o = report.outbox
    out += ["", f"outbox now: {o.pending} waiting (oldest {_secs(o.oldest_age_s) or '-'}), {o.dead} dead letters"]
    cb = report.callbacks
    if cb is not None:
        t = cb.total
        out.append(f"call-backs: {t.called_back} of {t.misses} misses (median {_secs(t.median_s) or '-'}, "
                   f"p90 {_secs(t.p90_s) or '-'}, within SLA {_pct(t.within_sla_share) or '-'}), "
                   f"{cb.waiting_total} not called back yet")
    return out
