"""scripts/monitoring/: the alert rules load in Prometheus and fire when they should (promtool, from Debian's
``prometheus`` package; skipped with the reason when it is absent), and every metric the rules and the
Grafana dashboard query is one callguard exports. The one metric allowed before it exists is listed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from callguard import metrics

MONITORING = Path(__file__).parents[2] / "scripts" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMTOOL = shutil.which("promtool")
# Metrics an alert or panel names before callguard exports them (none now: the call-back loop exports
# callguard_callbacks_sla_breaches_total since the call-back loop).
FUTURE: set[str] = set()
# Prometheus's own series, not callguard's.
BUILTIN = {"up"}
NAME = re.compile(r"\b(callguard_[a-z0-9_]+|up)\b")
REQUIRED_ALERTS = {"CallguardAmiDown", "CallguardSyncStale", "CallguardDeadLetters", "CallguardAgiFaults",
                   "CallguardCallbackSlaBreaches"}

needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool not found (apt-get install prometheus; .ci/run does)")


def exposed() -> set[str]:
    """The series names callguard's registry exposes: counters as _total, histograms by their parts."""
    out: set[str] = set()
    for collector in list(metrics.REGISTRY._collector_to_names):
        for family in collector.describe():
            if family.type == "counter":
                out |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                out |= {f"{family.name}{s}" for s in ("_bucket", "_count", "_sum", "_created")}
            else:
                out.add(family.name)
    return out


def names_in(expr: str) -> set[str]:
    # Label names inside {…} and words in strings are not metric names: drop matchers and quoted text first.
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "{}", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    return set(NAME.findall(bare))


def unknown(expr: str) -> set[str]:
    return names_in(expr) - exposed() - FUTURE - BUILTIN


def alert_exprs() -> dict[str, str]:
    text = ALERTS.read_text(encoding="utf-8")
    pairs = re.findall(r"- alert:\s*(\S+)\s*\n\s*expr:\s*(.+)", text)
    assert len(pairs) == text.count("- alert:"), "every alert needs a one-line expr right after its name"
    return dict(pairs)


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def test_the_name_check_can_fail() -> None:
    assert unknown('sum by (kind) (rate(callguard_agi_errors_total{kind!="x"}[5m]))') == set()
    assert unknown("rate(callguard_screens[5m])") == {"callguard_screens"}  # the counter is exposed as _total
    assert unknown("callguard_made_up == 0") == {"callguard_made_up"}
    assert names_in('up{job="callguard"} == 0 or callguard_ami_connected == 0') == {"up", "callguard_ami_connected"}


def test_every_alert_queries_metrics_callguard_exports() -> None:
    exprs = alert_exprs()
    assert set(exprs) >= REQUIRED_ALERTS
    assert {name: unknown(e) for name, e in exprs.items() if unknown(e)} == {}
    assert any("callguard_callbacks_sla_breaches_total" in e for e in exprs.values())


def test_every_dashboard_query_uses_metrics_callguard_exports() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) > 15
    assert [e for e in exprs if unknown(e)] == []
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    used = set().union(*(names_in(e) for e in exprs))
    for name in ("callguard_ami_connected", "callguard_sync_age_seconds", "callguard_outbox_dead",
                 "callguard_agi_errors_total", "callguard_screens_total", "callguard_calls_total"):
        assert name in used


def test_the_future_metric_is_still_future() -> None:
    """When the call-back loop exports it, take it off FUTURE so the check covers it for real."""
    assert FUTURE.isdisjoint(exposed())


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_exprs())} rules found" in result.stdout


@needs_promtool
def test_the_alerts_fire_on_the_series_that_should_fire_them() -> None:
    result = subprocess.run([str(PROMTOOL), "test", "rules", str(MONITORING / "alerts-test.yml")],
                            capture_output=True, text=True, timeout=60, check=False, cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
