"""The page at ``/`` for a head of sales: the day, the week or the month of calls at a glance.

Every figure comes from ``Stats.report`` through ``window_start``, the function ``callguard stats --json``
uses (``--since today|7d|30d --by did`` is what the three periods show), so page and CLI agree by
construction; the per-day chart is the same report ``--by day``. Health comes from the readiness data
(``PagesDeps.readiness``: the ``/readyz`` parts) and the outbox as the report sees it. Call-back figures
(``callback_sla``) come from the same report: time to call back, the share within ``callback.sla``, per
manager and per number dialled, and who is still waiting; they show once the call-back loop is switched on.
Everything from data is escaped (``layout.esc``); the figures carry ``data-figure`` names so a test can read
them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from callguard.store import Store
from callguard.store.callback_stats import CallbackFigures, Group
from callguard.store.stats import Report, window_start
from callguard.web import charts
from callguard.web.layout import duration, esc, flashes, page, pct

PERIODS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days"}
DEFAULT_PERIOD = "7d"
REASONS = {
    "abandoned": "gave up waiting",
    "timeout": "queue timed out",
    "no_agents": "nobody available",
    "after_hours": "after hours",
    "no_answer": "no answer",
    "busy": "busy",
    "hangup_before_queue": "hung up before the queue",
}
TOP_BLOCKED = 10
Readiness = Callable[[], Awaitable[Mapping[str, Any]]]


def reason_label(code: str) -> str:
    return REASONS.get(code, code.replace("_", " ") or "unknown")


@dataclass(frozen=True)
class Figures:
    period: str
    tz: tzinfo
    report: Report  # by DID
    days: Report  # by day
    health: Mapping[str, Any] | None


async def gather(store: Store, period: str, now: float, tz: tzinfo, *, callback_sla: float | None = None,
                 readiness: Readiness | None = None) -> Figures:
    since = window_start(period, now, tz)
    report = await store.stats.report(since, now, "did", tz, top=TOP_BLOCKED, callback_sla=callback_sla)
    days = await store.stats.report(since, now, "day", tz, top=0)
    health: Mapping[str, Any] | None = None
    if readiness is not None:
        try:
            health = await readiness()
        except Exception as e:  # the page still shows the calls; the health box says what failed
            health = {"error": str(e) or type(e).__name__}
    return Figures(period, tz, report, days, health)


# --- the page ---------------------------------------------------------------------------------------


def render(fig: Figures, *, user: str, csrf: str, flash: Iterable[tuple[str, str]] = ()) -> str:
    r = fig.report
    fmt = "%d %b %H:%M"
    since = datetime.fromtimestamp(r.since, fig.tz).strftime(fmt)
    until = datetime.fromtimestamp(r.until, fig.tz).strftime(fmt)
    tabs = "".join(f'<a href="/?period={key}"{" class=on" if key == fig.period else ""}>{label}</a>'
                   for key, label in PERIODS.items())
    body = [
        flashes(flash),
        f"<h1>{esc(PERIODS[fig.period])}</h1>",
        f'<div class="muted small">{esc(since)} – {esc(until)} ({esc(getattr(fig.tz, "key", fig.tz))})</div>',
        f'<nav class="tabs" aria-label="period">{tabs}</nav>',
        _kpis(r),
        '<div class="grid">',
        _days_chart(fig) if fig.period != "today" else "",
        _reasons(r),
        _blocked(r),
        _sources(r),
        _callbacks(r.callbacks),
        _health(fig.health, r),
        "</div>",
    ]
    return page("Dashboard", "".join(body), user=user, csrf=csrf, active="dashboard")


def _kpi(name: str, label: str, value: str, sub: str = "", cls: str = "") -> str:
    return (f'<div class="card kpi {cls}" data-figure="{name}"><div class="label">{label}</div>'
            f'<div class="value">{esc(value)}</div><div class="sub">{sub}</div></div>')


def _kpis(r: Report) -> str:
    t = r.total
    return '<section class="kpis">' + "".join([
        _kpi("screened", "Calls screened", str(t.screened), "every inbound call checked"),
        _kpi("spam_blocked", "Spam blocked", str(t.spam_blocked),
             f'<span data-figure="spam_share">{esc(pct(t.spam_share))}</span> of screened calls', "spam"),
        *([_kpi("would_block", "Would block", str(t.would_block),
                "monitor mode: spam let through, not blocked yet", "warn")] if t.would_block else []),
        _kpi("answered_share", "Answered", pct(t.answered_share),
             f'<span data-figure="answered">{t.answered}</span> of {t.answered + t.missed} calls to answer', "ok"),
        _kpi("missed", "Missed", str(t.missed), "not picked up, not spam", "warn" if t.missed else ""),
        _kpi("median_abandon_wait_s", "Wait before giving up", duration(t.median_abandon_wait_s),
             f"median, over {len(t.abandon_waits)} callers who gave up"),
    ]) + "</section>"


def _card(title: str, inner: str, cls: str = "", figure: str = "") -> str:
    attr = f' data-figure="{figure}"' if figure else ""
    return f'<section class="card {cls}"{attr}><h2>{title}</h2>{inner}</section>'


def _local_days(since: float, until: float, tz: tzinfo) -> list[date]:
    first = datetime.fromtimestamp(since, tz).date()
    last = datetime.fromtimestamp(max(since, until - 1e-6), tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _days_chart(fig: Figures) -> str:
    rows = {row.key: row for row in fig.days.rows}
    bars = []
    for day in _local_days(fig.days.since, fig.days.until, fig.tz):
        row = rows.get(day.isoformat())
        segs = [
            charts.Segment("answered", row.answered if row else 0, charts.GREEN),
            charts.Segment("missed", row.missed if row else 0, charts.ORANGE),
            charts.Segment("spam blocked", row.spam_blocked if row else 0, charts.RED),
        ]
        bars.append((day.strftime("%d.%m"), segs))
    legend = "".join(f'<span><i style="background:{c}"></i>{label}</span>' for label, c in
                     (("answered", charts.GREEN), ("missed", charts.ORANGE), ("spam blocked", charts.RED)))
    svg = charts.columns(bars, caption="calls per day")
    return _card("Calls per day", f'{svg}<div class="legend">{legend}</div>', "wide")


def _reasons(r: Report) -> str:
    items = sorted(r.total.missed_by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return _card("Why calls were missed", '<p class="muted">No missed calls in this period.</p>')
    svg = charts.hbars([(reason_label(code), n) for code, n in items], caption="missed calls by reason",
                       keys=[code for code, _ in items])
    return _card("Why calls were missed", svg, figure="reasons")


def _sources(r: Report) -> str:
    if not r.rows:
        return _card("By number dialled", '<p class="muted">No calls in this period.</p>')
    head = ('<tr><th>Number dialled</th><th class="n">Screened</th><th class="n">Spam</th><th class="n">Answered</th>'
            '<th class="n">Missed</th><th class="n">Answer rate</th><th class="hide-narrow"></th></tr>')
    lines = []
    for row in r.rows:
        lines.append(
            f'<tr data-did="{esc(row.key)}"><td class="note">{esc(row.key or "(not known)")}</td>'
            f'<td class="n">{row.screened}</td>'
            f'<td class="n">{row.spam_blocked}</td><td class="n">{row.answered}</td><td class="n">{row.missed}</td>'
            f'<td class="n" data-col="answered_share">{esc(pct(row.answered_share))}</td>'
            f'<td class="hide-narrow">{charts.meter(row.answered_share)}</td></tr>'
        )
    note = '<p class="muted small">The number a caller dialled is the advertising source it came from.</p>'
    return _card("By number dialled", f'<div class="scroll"><table>{head}{"".join(lines)}</table></div>{note}',
                 "wide", figure="sources")


def _callbacks(cb: CallbackFigures | None) -> str:
    """Only figures that exist: nothing made up while the call-back loop is switched off."""
    if cb is None:
        return _card("Call-backs", '<p class="muted">Call-back times show here once call-backs are switched on.</p>',
                     figure="callbacks-off")
    t = cb.total
    kpis = "".join([
        _kpi("callback_median_s", "Time to call back", duration(t.median_s), "median"),
        _kpi("callback_p90_s", "9 in 10 within", duration(t.p90_s), "90th percentile"),
        _kpi("callback_within_sla", f"Within {esc(duration(cb.sla_s))}", pct(t.within_sla_share),
             f'<span data-figure="callback_within_sla_n">{t.within_sla}</span> of '
             f'<span data-figure="callback_misses">{t.misses}</span> missed calls', "ok"),
        _kpi("callback_never", "Never called back", str(t.never_called_back),
             f'<span data-figure="callback_open">{t.open}</span> open, '
             f'<span data-figure="callback_handoffs">{t.handoffs}</span> hand-ons, '
             f'<span data-figure="callback_escalated">{t.escalated}</span> with the head of sales',
             "warn" if t.never_called_back else ""),
    ])
    head = ('<tr><th>{}</th><th class="n">Missed</th><th class="n">Called back</th><th class="n">Median</th>'
            '<th class="n">p90</th><th class="n">Within SLA</th><th class="n">Never</th></tr>')

    def rows(groups: tuple[Group, ...], attr: str) -> str:
        return "".join(
            f'<tr data-callbacks-{attr}="{esc(g.key)}"><td class="note">{esc(_label(attr, g.key))}</td>'
            f'<td class="n">{g.misses}</td>'
            f'<td class="n">{g.called_back}</td><td class="n">{esc(duration(g.median_s))}</td>'
            f'<td class="n">{esc(duration(g.p90_s))}</td>'
            f'<td class="n" data-col="within_sla_share">{esc(pct(g.within_sla_share))}</td>'
            f'<td class="n">{g.never_called_back}</td></tr>' for g in groups)

    tables = "".join(
        f'<div class="scroll"><table data-figure="callbacks_by_{attr}">{head.format(label)}{rows(groups, attr)}'
        "</table></div>"
        for label, attr, groups in (("Manager", "manager", cb.by_manager), ("Number dialled", "did", cb.by_did))
        if groups)
    waiting = "".join(
        f'<tr><td class="tel">{esc(m.caller)}</td><td class="note">{esc(m.did)}</td>'
        f'<td class="note">{esc(m.manager or "nobody yet")}</td><td class="n">{esc(duration(m.age_s))}</td></tr>'
        for m in cb.waiting)
    waiting = (f'<h2>Not called back yet: <span data-figure="callback_waiting">{cb.waiting_total}</span></h2>'
               '<div class="scroll"><table><tr><th>Caller</th><th>Number dialled</th><th>Assigned to</th>'
               f'<th class="n">Waiting</th></tr>{waiting}</table></div>') if cb.waiting_total else (
               '<p class="muted">Every missed caller has been called back.</p>' if t.misses else
               '<p class="muted">No missed calls to call back in this period.</p>')
    return _card("Call-backs", f'<div class="kpis">{kpis}</div>{tables}{waiting}', "wide", figure="callbacks")


def _label(attr: str, key: str) -> str:
    """A group's name as a person reads it: "-" is the report's key for "none" (no manager, no DID)."""
    if key != "-":
        return key
    return "nobody yet" if attr == "manager" else "unknown"


def _blocked(r: Report) -> str:
    if not r.top_blocked:
        return _card("Most blocked numbers", '<p class="muted">No spam calls in this period.</p>')
    rows = "".join(
        f'<tr data-caller="{esc(b.caller)}"><td class="tel">{esc(b.caller)}</td><td class="n">{b.calls}</td>'
        f'<td class="note">{esc(b.note or b.contact)}</td></tr>' for b in r.top_blocked
    )
    return _card("Most blocked numbers", '<div class="scroll"><table><tr><th>Caller</th><th class="n">Calls</th>'
                 f'<th>Note</th></tr>{rows}</table></div>', figure="blocked")


def _state_line(name: str, state: str, text: str) -> str:
    return f'<div data-health="{esc(name)}"><span class="dot {state}"></span><span>{text}</span></div>'


def _ami_line(ami: Mapping[str, Any] | None) -> str:
    if ami is None:
        return _state_line("ami", "", "<b>Asterisk link</b><br><span class=muted>not reported</span>")
    state = str(ami.get("state", ""))
    if state == "ok":
        return _state_line("ami", "ok", "<b>Asterisk link</b><br>connected")
    if state == "disabled":
        return _state_line("ami", "", "<b>Asterisk link</b><br><span class=muted>switched off (ami.enabled)</span>")
    err = esc(ami.get("last_error") or "no reason given")
    return _state_line("ami", "bad", f"<b>Asterisk link</b><br>down: {err}")


def _sync_line(sync: Mapping[str, Any] | None) -> str:
    if sync is None:
        return _state_line("sync", "", "<b>CRM sync</b><br><span class=muted>not reported</span>")
    state = str(sync.get("state", ""))
    age = sync.get("age_s")
    when = f"last sync {esc(duration(float(age)))} ago" if isinstance(age, int | float) else "never synced"
    if state == "disabled":
        return _state_line("sync", "", "<b>CRM sync</b><br><span class=muted>no CRM configured</span>")
    if state == "ok":
        return _state_line("sync", "ok", f"<b>CRM sync</b><br>up to date, {when}")
    err = sync.get("last_error")
    return _state_line("sync", "warn", f"<b>CRM sync</b><br>behind: {when}" + (f"<br>{esc(err)}" if err else ""))


def _health(health: Mapping[str, Any] | None, r: Report) -> str:
    parts: Mapping[str, Any] = {}
    lines = []
    if health is not None and "error" in health:
        lines.append(_state_line("readiness", "bad", f"<b>Health</b><br>could not be read: {esc(health['error'])}"))
    elif health is not None:
        with contextlib.suppress(AttributeError):
            parts = health.get("parts", {}) or {}
    lines += [_ami_line(parts.get("ami")), _sync_line(parts.get("sync"))]
    o = r.outbox
    if o.dead:
        lines.append(_state_line("outbox", "bad", f"<b>Missed-call leads</b><br>{o.dead} could not be delivered "
                                 f"(<code>callguard outbox list</code>), {o.pending} waiting"))
    elif o.pending:
        lines.append(_state_line("outbox", "warn", f"<b>Missed-call leads</b><br>{o.pending} waiting to be sent, "
                                 f"oldest {esc(duration(o.oldest_age_s))}"))
    else:
        lines.append(_state_line("outbox", "ok", "<b>Missed-call leads</b><br>all delivered"))
    store = parts.get("store")
    if isinstance(store, Mapping):
        ok = store.get("state") == "ok"
        lines.append(_state_line("store", "ok" if ok else "bad", "<b>Database</b><br>" + (
            "answering" if ok else f"down: {esc(store.get('error', ''))}")))
    return _card("System health", f'<div class="health">{"".join(lines)}</div>', figure="health")
