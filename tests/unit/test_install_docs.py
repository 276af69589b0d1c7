"""docs/admin.md keeps up with the code: every config key, metric, log event and exit code is in it."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from callguard import errors, metrics
from callguard.config import META_FIELDS, Config

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "admin.md").read_text(encoding="utf-8")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


def config_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        if f.name in META_FIELDS:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        default = getattr(cls(), f.name)
        out += config_keys(type(default), key) if dataclasses.is_dataclass(default) else [key]
    return out


def log_events() -> set[str]:
    """Every ``<logger>.<level>("event_name", …)`` in the package."""
    found = set()
    for path in (ROOT / "callguard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str) and EVENT.match(node.args[0].value)):
                found.add(node.args[0].value)
    return found


def test_every_config_key_is_documented() -> None:
    keys = config_keys(Config)
    assert len(keys) > 50
    assert [k for k in keys if f"`{k}`" not in DOC] == []


def test_every_metric_is_documented() -> None:
    names = []
    for collector in list(metrics.REGISTRY._collector_to_names):
        for family in collector.describe():
            names.append(family.name + ("_total" if family.type == "counter" else ""))
    assert len(names) > 15
    assert [n for n in names if f"`{n}`" not in DOC] == []


def test_every_log_event_is_documented() -> None:
    events = log_events()
    assert {"call_screened", "web_exposed", "service_ready"} <= events
    assert sorted(e for e in events if f"`{e}`" not in DOC) == []


def test_every_exit_code_is_documented() -> None:
    section = DOC[DOC.index("## Exit codes"):DOC.index("## HTTP endpoints")]
    for code in (errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, *errors.NO_RESTART, 130):
        assert f"| {code} |" in section
